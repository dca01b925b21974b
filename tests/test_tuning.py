"""Hyper-parameter search: the search space and its mapping onto configs (fast), and real
sweeps on a local Ray (slow): ASHA stops trials, MLflow records them, an interrupted sweep
resumes without running its finished trials again."""

from __future__ import annotations

import glob
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from i2m2_ray.config import ConfigError, load_config, parse_override
from i2m2_ray.spec import TaskSpec
from i2m2_ray.tuning import (
    EXPERTS_KEY,
    SearchSpace,
    TrialRecipe,
    TrialRow,
    check_space,
    importance_artifacts,
    load_search_file,
    optuna_study,
    parse_params,
    parse_search_file,
    rank_rows,
    ranking_table,
    to_yaml,
    trial_concurrency,
)

from .conftest import REPO, RayHead, submit_job

SPEC = TaskSpec(("magnitude", "phase"), {h: 2 for h in ("abnormal", "acl", "cartilage", "mtear")})
SPECS = {
    "fastmri": SPEC,
    "avmnist": TaskSpec(("image", "audio"), {"digit": 10}),
    "mimic": TaskSpec(("static", "timeseries"), {"mortality": 6}),
}
SEARCH_DIR = REPO / "configs" / "search"


def facts_for(cfg: Any) -> dict[str, Any]:
    """The input facts each dataset's data hand the encoder registry, for a (sampled) config."""
    if cfg.experiment == "fastmri":
        c = cfg.data.crop_size
        return {"inputs": {"magnitude": [1, c, c], "phase": [1, c, c]}}
    if cfg.experiment == "avmnist":
        side = 112 // int(cfg.data.options.get("audio_pool", 1))
        return {"inputs": {"image": [1, 28, 28], "audio": [1, side, side]}, "encoders": ["lenet"]}
    return {"inputs": {"static": [5], "timeseries": [24, 12]}, "encoders": ["mlp_gru"]}


def recipe_for(path: Path) -> TrialRecipe:
    sf = load_search_file(path)
    base = load_config(sf.base_config or REPO / "configs" / "fastmri_demo.yaml", sf.overrides)
    return TrialRecipe(sf.space.bind(base, SPECS[base.experiment]), base.to_dict())


def space_of(params: dict[str, Any], base_overrides: tuple[str, ...] = ()) -> TrialRecipe:
    base = load_config(REPO / "configs" / "fastmri_demo.yaml", list(base_overrides))
    return TrialRecipe(SearchSpace(parse_params(params)).bind(base, SPEC), base.to_dict())


def samples(recipe: TrialRecipe, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` define-by-run samples drawn with Optuna's random sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        recipe.space(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


# ---------------------------------------------------------------------------------------
# Search space -> overrides -> config
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e-05, 3.0e-4, 0.5, 7, True, None, "lrtf", [1, 1], {"inter": 2e-06}])
def test_override_values_read_back_as_written(value: Any) -> None:
    parsed = parse_override(f"a.b={to_yaml(value)}")["a"]["b"]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("name", sorted(p.stem for p in SEARCH_DIR.glob("*.yaml")))
def test_every_shipped_space_samples_valid_configs(name: str) -> None:
    from i2m2_ray.models.registry import check_model

    recipe = recipe_for(SEARCH_DIR / f"{name}.yaml")
    check_space(recipe)
    spec = SPECS[recipe.base["experiment"]]
    for raw in samples(recipe, 40):
        plan = recipe.plan(raw)
        assert plan.paradigm in ("intra", "i2m2")
        assert plan.config.product.freeze != list(spec.components(plan.paradigm))  # something trains
        check_model(plan.config, spec, facts_for(plan.config))  # the sampled backbone can be built
        for name_, value in plan.values.items():
            if "." in name_ and name_.split(".")[0] in ("model", "data") and name_ != EXPERTS_KEY:
                section, key = name_.split(".", 1)
                assert getattr(getattr(plan.config, section), key) == value


def test_conditional_parameters_appear_only_when_their_condition_holds() -> None:
    recipe = recipe_for(SEARCH_DIR / "fastmri_demo.yaml")
    seen_rank = seen_freeze = 0
    for raw in samples(recipe, 80):
        scratch = raw["product.init"] == "scratch"
        # the backbone is searched only for products trained from scratch
        assert ("model.width" in raw) == scratch
        assert ("data.crop_size" in raw) == scratch
        # the fusion rank exists only for low-rank tensor fusion
        assert ("model.fusion_rank" in raw) == (raw.get("model.inter_fusion") == "lrtf")
        seen_rank += "model.fusion_rank" in raw
        # freezing is sampled only for products initialised from fitted components
        assert any(k.startswith("product.freeze.") for k in raw) == (not scratch)
        seen_freeze += not scratch
        # an exponent for every expert in the product, and only for those
        experts = recipe.plan(raw).values.get(EXPERTS_KEY)
        weights = {k.rsplit(".", 1)[1] for k in raw if k.startswith("product.weights.")}
        assert weights == set(experts)
    assert seen_rank and seen_freeze


def test_experts_left_out_get_exponent_zero_and_are_frozen() -> None:
    recipe = space_of(
        {
            "product.experts": {"choices": ["all", "modalities", ["magnitude", "inter"]]},
            "product.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        }
    )
    plan = recipe.plan({"product.experts": "magnitude+inter", "product.lr": 2e-3})
    assert plan.paradigm == "i2m2"
    assert plan.config.product.weights == {"phase": 0.0}
    assert plan.config.product.freeze == ["phase"]
    assert plan.config.product.lr == pytest.approx(2e-3)
    assert "product.lr=0.002" in plan.overrides

    plan = recipe.plan({"product.experts": "modalities", "product.lr": 1e-3})
    assert plan.paradigm == "intra"
    assert plan.config.product.weights == {} and plan.config.product.freeze == []

    plan = recipe.plan({"product.experts": "all", "product.lr": 1e-3})
    assert plan.paradigm == "i2m2" and plan.config.product.freeze == []


def test_freeze_and_weights_map_onto_the_product_keys() -> None:
    recipe = space_of(
        {
            "product.init": {"choices": ["components", "scratch"]},
            "product.freeze": {"when": {"product.init": "components"}},
            "product.weights": {"low": 0.5, "high": 2.0},
        }
    )
    raw = {
        "product.init": "components",
        "product.freeze.magnitude": True,
        "product.freeze.phase": False,
        "product.freeze.inter": True,
        "product.weights.magnitude": 0.5,
        "product.weights.phase": 1.5,
        "product.weights.inter": 2.0,
    }
    cfg = recipe.plan(raw).config
    assert cfg.product.init == "components"
    assert cfg.product.freeze == ["magnitude", "inter"]
    assert cfg.product.weights == {"magnitude": 0.5, "phase": 1.5, "inter": 2.0}
    # with every other expert frozen, the last one is not asked about: it must train
    for raw in samples(recipe, 60, seed=3):
        cfg = recipe.plan(raw).config
        assert len(cfg.product.freeze) < 3
        if raw["product.init"] == "scratch":
            assert cfg.product.freeze == [] and not any(k.startswith("product.freeze") for k in raw)


def test_decode_rejects_missing_and_inactive_parameters() -> None:
    recipe = space_of(
        {
            "model.inter_fusion": {"choices": ["early", "lrtf"]},
            "model.fusion_rank": {"low": 2, "high": 8, "int": True, "when": {"model.inter_fusion": "lrtf"}},
        }
    )
    assert recipe.plan({"model.inter_fusion": "lrtf", "model.fusion_rank": 4}).config.model.fusion_rank == 4
    with pytest.raises(ConfigError, match="not active"):
        recipe.plan({"model.inter_fusion": "early", "model.fusion_rank": 4})
    with pytest.raises(ConfigError, match="missing"):
        recipe.plan({"model.inter_fusion": "lrtf"})
    with pytest.raises(ConfigError, match="not one of"):
        recipe.plan({"model.inter_fusion": "attention"})


def test_conditions_may_name_config_keys_that_are_not_searched() -> None:
    params = {"model.fusion_rank": {"low": 2, "high": 8, "int": True, "when": {"model.inter_fusion": "lrtf"}}}
    assert samples(space_of(params), 3) == [{}, {}, {}]  # demo config: early fusion
    lrtf = samples(space_of(params, ("model.inter_fusion=lrtf",)), 3)
    assert all(2 <= s["model.fusion_rank"] <= 8 for s in lrtf)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model.width": {"choice": [4]}}, "unknown key"),
        ({"model.width": {"low": 8, "high": 4}}, "must be below"),
        ({"model.width": {"choices": [4], "low": 1, "high": 2}}, "either choices"),
        (
            {
                "model.fusion_rank": {"low": 2, "high": 8, "int": True, "when": {"model.inter_fusion": "lrtf"}},
                "model.inter_fusion": {"choices": ["early", "lrtf"]},
            },
            "listed after it",
        ),
        ({"product.freeze": {"choices": [True]}}, "takes no choices"),
        ({"product.experts": {"choices": [["magnitude"], "everything"]}}, "list of expert names"),
    ],
)
def test_bad_search_spaces_are_rejected_with_the_parameter_named(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(params)


def test_a_choice_the_config_refuses_fails_before_the_sweep() -> None:
    with pytest.raises(ConfigError, match="model.dropout"):
        check_space(space_of({"model.dropout": {"choices": [0.1, 1.5]}}))
    with pytest.raises(ConfigError, match="not a config key"):
        space_of({"model.widht": {"choices": [4, 8]}})
    # keys inside a free-form mapping field (dataset options) are allowed
    assert space_of({"data.options.audio_pool": {"choices": [1, 4]}}).plan(
        {"data.options.audio_pool": 4}
    ).config.data.options == {"audio_pool": 4}
    with pytest.raises(ConfigError, match="unknown expert"):
        space_of({"product.experts": {"choices": [["magnitude", "audio"]]}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_search_file({"params": {"product.lr": {"low": 1e-4, "high": 1e-2}}, "trials": 3}, Path("x.yaml"))


def test_asha_brackets_are_hyperband_grace_periods_drawn_with_the_run_seed(tmp_path: Path) -> None:
    """``asha.brackets: 3`` over 6-epoch trials (rungs strictly before epoch 6): brackets
    with grace periods 1, 2 and 4 epochs; the draw of each trial's bracket repeats with the
    seed."""
    from ray.tune.experiment import Trial

    from i2m2_ray.tuning import SweepOptions
    from i2m2_ray.tuning.sweep import _scheduler

    body = {
        "asha": {"grace_period": 1, "reduction_factor": 2, "brackets": 3},
        "params": {"product.lr": {"low": 1e-4, "high": 1e-2}},
    }
    search = parse_search_file(body, tmp_path / "s.yaml")
    assert (search.asha.grace_period, search.asha.brackets) == (1, 3)
    base = load_config(REPO / "configs" / "fastmri_demo.yaml", ["product.epochs=6"])

    def draws() -> list[list[float]]:
        scheduler = _scheduler(SweepOptions("fastmri", search, base, tmp_path, trials=8, max_concurrent=2))
        scheduler.set_search_properties("val_auroc_mean", "max")
        picked = []
        for i in range(8):
            trial = Trial("__fake", trial_id=f"t{i}", stub=True)
            scheduler.on_trial_add(None, trial)
            picked.append(sorted(milestone for milestone, _ in scheduler._trial_info[trial.trial_id]._rungs))
        return picked

    first = draws()
    assert {tuple(r) for r in first} <= {(1, 2, 4), (2, 4), (4,)} and len({tuple(r) for r in first}) > 1
    assert draws() == first
    with pytest.raises(ConfigError, match="asha.grace_period and asha.brackets must be >= 1"):
        parse_search_file({**body, "asha": {"brackets": 0}}, tmp_path / "s.yaml")


PRUNED_SPACE = {
    "optuna_pruner": {"name": "median", "n_startup_trials": 1},
    "params": {"product.lr": {"low": 1e-4, "high": 1e-2}},
}


def test_optuna_pruner_stops_what_it_prunes_never_at_the_last_epoch(tmp_path: Path) -> None:
    """``optuna_pruner: {name: median}``: the scheduler stops a trial whose validation value
    at an epoch is below the median of the completed trials' at that epoch, and Optuna is
    told it was pruned (with its values so far); a trial at its last epoch always goes on;
    the searcher keeps pruner and verdicts through a save and restore."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from i2m2_ray.tuning import SweepOptions
    from i2m2_ray.tuning.sweep import _search_alg, check_schedule
    from i2m2_ray.tuning.tune_pruning import OptunaPruning

    search = parse_search_file(PRUNED_SPACE, tmp_path / "s.yaml")
    assert search.pruner is not None and search.pruner.name == "median"
    base = load_config(REPO / "configs" / "fastmri_demo.yaml", ["product.epochs=3"])
    opts = SweepOptions("fastmri", search, base, tmp_path, trials=4, max_concurrent=1)
    check_schedule(opts)  # ASHA's grace-period check does not apply

    def searcher() -> Any:
        return _search_alg(opts, search.space, "val_auroc_mean", "max")

    first = searcher()
    scheduler = OptunaPruning(first, "val_auroc_mean", last_epoch=3)

    def run(trial_id: str, values: list[float]) -> list[str]:
        """Epoch reports until the scheduler stops the trial; its decisions."""
        first.suggest(trial_id)
        trial, decisions = Trial("__fake", trial_id=trial_id, stub=True), []
        for epoch, value in enumerate(values, start=1):
            result = {"val_auroc_mean": value, "epoch": epoch}
            decisions.append(scheduler.on_trial_result(None, trial, result))
            if decisions[-1] == TrialScheduler.STOP:
                first.on_trial_complete(trial_id, result)
                return decisions
            first.on_trial_result(trial_id, result)
        final = {"val_auroc_mean": max(values), "epoch": len(values), "completed": 1}
        assert scheduler.on_trial_result(None, trial, final) == TrialScheduler.CONTINUE
        first.on_trial_complete(trial_id, final)
        return decisions

    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert run("t0", [0.80, 0.85, 0.90]) == [go, go, go]  # the startup trial
    assert run("t1", [0.60]) == [stop]  # below t0's 0.80 at epoch 1
    assert run("t2", [0.82, 0.83]) == [go, stop]  # its best so far, 0.83, below t0's 0.85 at epoch 2
    assert run("t3", [0.90, 0.95, 0.10]) == [go, go, go]  # the last epoch: never stopped
    study = first._ot_study
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.COMPLETE]
    assert study.trials[2].intermediate_values == {1: 0.82, 2: 0.83}
    assert study.trials[3].value == pytest.approx(0.95)

    first.save(str(tmp_path / "searcher.pkl"))  # what a sweep checkpoint holds
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert isinstance(restored._ot_study.pruner, optuna.pruners.MedianPruner)
    assert restored._pruned == {"t1", "t2"}
    assert "1 trial(s)" not in scheduler.debug_string() and "2 trial(s) pruned" in scheduler.debug_string()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "patience"}, "optuna_pruner.name 'patience' is not one of"),
        ({"n_startup_trials": 2}, "must be a mapping with a 'name'"),
        ({"name": "median", "min_resource": 1}, "takes \\['n_startup_trials'"),
        ({"name": "median", "n_startup_trials": "two"}, "optuna_pruner.n_startup_trials must be a number"),
        ({"name": "percentile", "percentile": 150}, "optuna_pruner 'percentile'"),
    ],
)
def test_bad_pruner_entries_are_rejected_naming_the_key(entry: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search_file({**PRUNED_SPACE, "optuna_pruner": entry}, tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match="either 'asha' or 'optuna_pruner'"):
        parse_search_file({**PRUNED_SPACE, "asha": {"grace_period": 1}}, tmp_path / "s.yaml")


@pytest.mark.timeout(300)
def test_optuna_pruner_stops_tune_trials_on_a_real_ray(ray_local: None, tmp_path: Path) -> None:
    """A Tune run with the pruning searcher and scheduler, trials one at a time, each
    reporting its sampled value at every epoch: exactly the trials below the median of the
    trials completed before them stop after their first epoch; the others run all 4 epochs
    and report once more, as a sweep's trials do."""
    import optuna
    from ray import tune

    from i2m2_ray.tuning.tune_pruning import OptunaPruning, PruningOptunaSearch

    def trainable(config: dict[str, Any]) -> None:
        for epoch in range(1, 5):
            tune.report({"score": config["x"], "epoch": epoch})
        tune.report({"score": config["x"], "epoch": 4, "completed": 1})

    searcher = PruningOptunaSearch(
        optuna.pruners.MedianPruner(n_startup_trials=2),
        space={"x": tune.uniform(0.0, 1.0)},
        metric="score",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=3),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=OptunaPruning(searcher, "score", last_epoch=4),
            num_samples=8,
            max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="pruned", verbose=0),
    )
    results = sorted(tuner.fit(), key=lambda r: r.metrics["trial_id"])
    completed: list[float] = []
    stopped = 0
    for result in sorted(results, key=lambda r: r.metrics["timestamp"]):
        x, reports = result.config["x"], len(result.metrics_dataframe)
        if len(completed) >= 2 and x < float(np.median(completed)):
            assert reports == 1, (x, completed)
            stopped += 1
        else:
            assert reports == 5, (x, completed)
            completed.append(x)
    assert stopped >= 1 and len(results) == 8


def test_optuna_search_uses_the_space_and_survives_a_save_and_restore(tmp_path: Path) -> None:
    from ray.tune.search.optuna import OptunaSearch

    recipe = recipe_for(SEARCH_DIR / "fastmri_demo.yaml")

    def searcher() -> OptunaSearch:
        return OptunaSearch(space=recipe.space, metric="val_auroc_mean", mode="max", seed=7)

    first = searcher()
    configs = [first.suggest(f"t{i}") for i in range(3)]
    for i, c in enumerate(configs):
        recipe.plan(c)
        first.on_trial_complete(f"t{i}", {"val_auroc_mean": 0.5 + i / 10})
    again = [searcher().suggest(f"t{i}") for i in range(1)]
    assert again[0] == configs[0]  # seeded: the same first proposal
    first.save(str(tmp_path / "searcher.pkl"))  # what a sweep checkpoint holds
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    recipe.plan(restored.suggest("t3"))
    pickle.loads(pickle.dumps(recipe))


def test_trial_concurrency_follows_the_cluster() -> None:
    cfg = load_config(REPO / "configs" / "fastmri_demo.yaml")
    assert trial_concurrency(4, {"CPU": 6}, cfg, trials=40) == 4
    assert trial_concurrency(4, {"CPU": 3}, cfg, trials=40) == 2  # one CPU kept for the data
    assert trial_concurrency(4, {"CPU": 2}, cfg, trials=40) == 1
    # one CPU: a trial would take the CPU its data pipeline needs, and wait forever
    with pytest.raises(ConfigError, match="nothing is left for training"):
        trial_concurrency(4, {"CPU": 1}, cfg, trials=40)
    assert trial_concurrency(8, {"CPU": 64}, cfg, trials=3) == 3
    two = load_config(REPO / "configs" / "fastmri_demo.yaml", ["run.num_workers=2", "run.cpus_per_worker=2"])
    assert trial_concurrency(8, {"CPU": 17}, two, trials=40) == 4
    gpu = load_config(REPO / "configs" / "fastmri_demo.yaml", ["run.use_gpu=true", "run.num_workers=2"])
    assert trial_concurrency(8, {"CPU": 64, "GPU": 4}, gpu, trials=40) == 2
    with pytest.raises(ConfigError, match="GPU"):
        trial_concurrency(8, {"CPU": 64}, gpu, trials=40)


@pytest.mark.timeout(300)  # without the wait this can deadlock: fail, never hang the suite
def test_final_report_waits_until_the_last_train_report_is_relayed(ray_local: None, tmp_path: Path) -> None:
    """A trial whose fit's last epoch report is still on Ray's relay queue when the trial
    reports its final result (the race that left a sweep RUNNING for ever): the final report
    waits until the epoch report has reached Tune, and both arrive, in order."""
    from ray import tune

    from i2m2_ray.tuning.trial import TRIAL_DRIVER_RESOURCES, wait_for_relayed_reports

    def trainable(config: dict[str, Any]) -> None:
        from ray.train._internal.session import get_session

        # what TuneReportCallback does with a Train worker's report at the end of an epoch
        get_session()._get_or_create_inter_actor_queue().put({"score": 1.0, "epoch": 1})
        wait_for_relayed_reports(timeout_s=60, quiet_s=0.5)
        tune.report({"score": 2.0, "epoch": 2})

    tuner = tune.Tuner(
        tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES),  # as a sweep's trials
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="relay", verbose=0),
    )
    (result,) = tuner.fit()
    assert result.error is None
    assert list(result.metrics_dataframe["score"]) == [1.0, 2.0]
    assert result.metrics["epoch"] == 2


def test_ranking_stored_study_importance_and_plots(tmp_path: Path) -> None:
    recipe = space_of(
        {
            "product.lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "product.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        }
    )
    rows = []
    for i, raw in enumerate(samples(recipe, 8, seed=1)):
        score = 1.0 - abs(math.log10(raw["product.lr"]) + 3)  # best at lr = 1e-3
        status = "completed" if i % 3 else "stopped"
        rows.append(TrialRow(f"t{i:02d}", status, score, 3 if status == "completed" else 1, raw, {}, [score]))
    ranked = rank_rows(rows, "max")
    assert [r.score for r in ranked] == sorted((r.score for r in rows), reverse=True)
    table = ranking_table(ranked, "val_auroc_mean", [])
    assert table.splitlines()[0].split()[:5] == ["rank", "trial", "status", "val_auroc_mean", "epochs"]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna_study(rows[:5], recipe.space, "max", storage, "search-fastmri")  # before an interruption
    study = optuna_study(rows, recipe.space, "max", storage, "search-fastmri")  # the resumed sweep's report
    assert len(study.trials) == 8
    assert sum(t.state.name == "PRUNED" for t in study.trials) == 3
    # kept in the sqlite file, each trial once: what optuna-dashboard and optuna.load_study open
    import optuna

    stored = optuna.load_study(study_name="search-fastmri", storage=storage)
    assert [t.user_attrs["trial_id"] for t in stored.trials] == [f"t{i:02d}" for i in range(8)]
    assert stored.best_value == max(r.score for r in rows if r.status == "completed")
    importance, files = importance_artifacts(study, tmp_path, seed=0)
    assert set(importance) == {"product.lr", "product.weight_decay"}
    assert importance["product.lr"] > importance["product.weight_decay"]
    for plot in ("optimization_history", "param_importances", "parallel_coordinate", "slice", "intermediate_values"):
        assert files[plot].stat().st_size > 1000, plot
    assert "product.lr" in files["param_importance"].read_text()


def test_the_tuning_package_is_small_modules_that_import_light() -> None:
    """Every module of the package stays readable in one sitting, and importing the package
    (or its search space) loads neither Ray Tune, nor MLflow, nor torch."""
    package = REPO / "i2m2_ray" / "tuning"
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert {"space.py", "trial.py", "callback.py", "report.py", "sweep.py", "__init__.py"} <= set(sizes)
    assert all(n < 600 for n in sizes.values()), sizes
    for path in package.glob("*.py"):
        source = path.read_text()
        assert "import mlflow" not in source and "from mlflow" not in source and "MlflowClient" not in source, path
        assert "from i2m2_ray.cli" not in source and "import i2m2_ray.cli" not in source, path
    code = (
        "import sys, i2m2_ray.tuning, i2m2_ray.tuning.space; "
        "print(sorted(m for m in ('ray.tune', 'mlflow', 'torch') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------
# Real sweeps (experiments/search.py as a subprocess, each with its own local Ray)
# ---------------------------------------------------------------------------------------

TINY_SPACE = """
experiment: fastmri
base_config: {base}
overrides:
  - data.crop_size=32
  - data.pad_width=40
  - "data.sample={{volumes: 14, slices: 4, height: 64, width: 36, seed: 0}}"
  - model.width=4
  - model.blocks=[1]
  - model.groups=2
  - train.batch_size=16
  - product.epochs=5
asha: {{grace_period: 1, reduction_factor: 3}}
params:
  product.init: {{choices: [scratch]}}
  product.experts: {{choices: [all, modalities]}}
  product.lr: {{low: 1.0e-3, high: 3.0e-3, log: true}}
  model.inter_fusion: {{choices: [early, lrtf]}}
  model.fusion_rank: {{low: 2, high: 8, int: true, when: {{model.inter_fusion: lrtf}}}}
"""


def sweep_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def search_cmd(out: Path, space: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "experiments/search.py",
        "--experiment",
        "fastmri",
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--max-concurrent",
        "2",
        "--output-dir",
        str(out),
        *extra,
    ]


def mlflow_runs(out: Path) -> tuple[Any, Any, list[Any]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fastmri-search")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "search"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return client, parents[0], children


def tune_trials(out: Path) -> dict[str, str]:
    """Trial id -> status in the newest saved experiment state (empty before the first)."""
    files = sorted(glob.glob(str(out / "ray_results" / "search-fastmri" / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except (json.JSONDecodeError, OSError):
        return {}  # caught mid-write
    out_: dict[str, str] = {}
    for item in data["trial_data"]:
        state = json.loads(item[0]) if isinstance(item[0], str) else item[0]
        out_[state["trial_id"]] = state["status"]
    return out_


@dataclass
class Sweep:
    out: Path
    finished_before_kill: dict[str, str]  # trial id -> status saved before the kill
    results_before: dict[str, str]  # trial id -> its result.json before the resume
    resumed_at_ms: float
    resumed: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """One real sweep, shared by the two tests below (a sweep costs minutes on 2 cores): 6
    trials with ASHA on tiny data, two at a time; the driver and its local Ray are killed
    once two trials have finished, then ``--resume`` completes it.

    Whether ASHA stops a trial depends on the values it sees. With one rung and a wide
    learning-rate range, TPE's later trials were often better than the first ones and none
    was stopped (CI failed so once in several runs). Now there are two rungs (epochs 1 and
    3 of 5) at which a trial must be in the top third of those before it, and the sampled
    learning rate hardly matters, so that the values at a rung are close to a random order."""
    tmp = tmp_path_factory.mktemp("sweep")
    space = tmp / "space.yaml"
    space.write_text(TINY_SPACE.format(base=REPO / "configs" / "fastmri_demo.yaml"))
    out = tmp / "out"
    log = (tmp / "first.log").open("w")
    first = subprocess.Popen(
        search_cmd(out, space, 6),
        cwd=REPO,
        env=sweep_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the local Ray dies with it
    )
    finished: dict[str, str] = {}
    try:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            finished = {t: s for t, s in tune_trials(out).items() if s == "TERMINATED"}
            if len(finished) >= 2:
                break
            time.sleep(1)
        assert len(finished) >= 2, (tmp / "first.log").read_text()[-4000:]
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # the driver and its local Ray, mid-sweep
        except ProcessLookupError:
            pass
        first.wait(60)
        log.close()
    assert first.returncode == -signal.SIGKILL, "the sweep ended before it could be interrupted"
    trial_dirs = out / "ray_results" / "search-fastmri"
    before = {t: (trial_dirs / f"trial_{t}" / "result.json").read_text() for t in finished}
    resumed_at = time.time() * 1000
    resumed = subprocess.run(
        search_cmd(out, space, 6, "--resume"), cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=900
    )
    (tmp / "resumed.log").write_text(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, resumed.stdout[-5000:] + resumed.stderr[-5000:]
    return Sweep(out, finished, before, resumed_at, resumed)


@pytest.mark.slow
def test_sweep_with_asha_stops_trials_and_records_every_run(sweep: Sweep) -> None:
    assert "Best trial" in sweep.resumed.stdout and "Trials, best first" in sweep.resumed.stdout
    final = tune_trials(sweep.out)
    assert len(final) == 6 and set(final.values()) == {"TERMINATED"}

    client, parent, children = mlflow_runs(sweep.out)
    assert parent.info.status == "FINISHED"
    assert len({c.data.tags["trial_id"] for c in children}) == 6
    assert all(c.info.status in ("FINISHED", "FAILED", "KILLED") for c in children)
    outcomes = [c.data.tags.get("outcome") for c in children]
    assert "stopped_early" in outcomes, outcomes  # ASHA stopped at least one trial...
    assert "completed" in outcomes  # ...and at least one ran to the end
    for c in children:
        history = client.get_metric_history(c.info.run_id, "val_auroc_mean")
        assert len(history) >= 1 and "objective" in c.data.metrics
        assert c.data.params["product.lr"] and c.data.tags["paradigm"] in ("intra", "i2m2")
        if c.data.tags["outcome"] == "completed":
            assert "test_auroc_mean" in c.data.metrics and {m.step for m in history} == {1, 2, 3, 4, 5}
        else:
            assert "test_auroc_mean" not in c.data.metrics and max(m.step for m in history) < 5
    search_arts = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert {"search/param_importance.csv", "search/optimization_history.png", "search/ranking.txt"} <= search_arts
    assert {"search/parallel_coordinate.png", "search/slice.png", "search/intermediate_values.png"} <= search_arts
    # the Optuna study is stored beside the MLflow store, each trial once after the resume
    import optuna

    stored = optuna.load_study(study_name="search-fastmri", storage=f"sqlite:///{sweep.out / 'optuna.db'}")
    assert sorted(t.user_attrs["trial_id"] for t in stored.trials) == sorted(final)
    assert f"optuna-dashboard sqlite:///{sweep.out / 'optuna.db'}" in sweep.resumed.stdout
    assert client.list_artifacts(parent.info.run_id, "best_checkpoint")
    # the best checkpoint predicts as a pipeline's models do: it carries the prediction state
    from i2m2_ray.predict import prediction_state_of
    from i2m2_ray.training.checkpoint import load_checkpoint

    best = sweep.out / "search" / "search-fastmri" / "report" / "best_checkpoint" / "model.pt"
    assert prediction_state_of(load_checkpoint(best), best)["dataset"] == "fastmri"
    assert "best_objective" in parent.data.metrics
    assert parent.data.metrics["trials_stopped_early"] >= 1


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(sweep: Sweep) -> None:
    final = tune_trials(sweep.out)
    assert set(sweep.finished_before_kill) <= set(final) and len(final) == 6
    trial_dirs = sweep.out / "ray_results" / "search-fastmri"
    for t, before in sweep.results_before.items():  # no new result from a finished trial
        assert (trial_dirs / f"trial_{t}" / "result.json").read_text() == before
    for t in sweep.finished_before_kill:  # and no training started for it again
        assert f"[trial_{t}] epoch" not in sweep.resumed.stdout
    assert "resuming sweep 'search-fastmri'" in sweep.resumed.stdout
    # ASHA's rungs come back with it (Tune restores the searcher, not the scheduler): the
    # trials finished before the kill passed epoch 1, so that rung has a cutoff already
    (asha,) = [line for line in sweep.resumed.stdout.splitlines() if "scheduler carries on" in line]
    assert "Iter 1.000: " in asha and "Iter 1.000: None" not in asha, asha

    client, parent, children = mlflow_runs(sweep.out)
    assert parent.data.tags.get("resumed") == "1"
    by_trial: dict[str, list[Any]] = {}
    for c in children:
        by_trial.setdefault(c.data.tags["trial_id"], []).append(c)
    assert set(by_trial) == set(final)
    for t in sweep.finished_before_kill:
        (run,) = by_trial[t]  # one run, written before the interruption
        assert run.info.start_time < sweep.resumed_at_ms
        assert run.info.status in ("FINISHED", "FAILED")


OTHER_SPACE = """
experiment: {experiment}
base_config: {base}
overrides: {overrides}
{stopper}
params:
  product.init: {{choices: [components, scratch]}}
  product.experts: {{choices: [all, modalities]}}
  product.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}
  model.inter_fusion: {{choices: [concat, lrtf], when: {{product.init: scratch}}}}
  model.fusion_rank: {{low: 2, high: 8, int: true, when: {{model.inter_fusion: lrtf}}}}
"""


STOPPERS = {
    "avmnist": "asha: {grace_period: 1, reduction_factor: 2}",
    "mimic": "optuna_pruner: {name: median, n_startup_trials: 1}",
}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["avmnist", "mimic"])
def test_sweep_runs_on_the_other_benchmarks(experiment: str, tmp_path: Path) -> None:
    """A 2-trial sweep on each of the other datasets' smoke-sized samples finishes and is
    recorded: a parent run with one child per trial, each holding the dataset's objective (and
    one per component the trials start from). AV-MNIST's is submitted with ``ray job submit``
    to a running cluster (a head started here, token authentication on): the sweep joins it
    and leaves its report and MLflow runs in the output folder. MIMIC's runs on a local Ray,
    its trials stopped by Optuna's median pruner instead of ASHA."""
    from i2m2_ray.cli.common import smoke_overrides

    smoke = [*smoke_overrides(experiment), "product.epochs=2"]  # ASHA's grace period (1) must be below it
    space = tmp_path / "space.yaml"
    space.write_text(
        OTHER_SPACE.format(
            experiment=experiment,
            base=REPO / "configs" / f"{experiment}_demo.yaml",
            overrides=json.dumps(smoke),
            stopper=STOPPERS[experiment],
        )
    )
    out = tmp_path / "out"
    cmd = search_cmd(out, space, 2)
    cmd[cmd.index("--experiment") + 1] = experiment
    if experiment == "mimic":
        # the sweep that hung on 2 cores (issue 16): the three component fits took every CPU
        # of the local Ray and Ray Data's tasks waited forever; now a CPU stays free
        cmd[cmd.index("--max-concurrent") + 1] = "1"
        proc = subprocess.run(cmd, cwd=REPO, env=sweep_env(), capture_output=True, text=True, timeout=1200)
    else:
        head = RayHead(num_cpus=4)
        try:
            head.wait_ready()
            proc = submit_job(head, "python", *cmd[1:], timeout=1200)
        finally:
            head.stop()
        assert "succeeded" in proc.stdout, proc.stdout[-5000:] + proc.stderr[-5000:]
        assert (out / "search" / f"search-{experiment}" / "report" / "ranking.txt").is_file()
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "Best trial" in proc.stdout and "Trials, best first" in proc.stdout
    saved = json.loads((out / "search" / f"search-{experiment}" / "sweep.json").read_text())
    assert ("optuna_pruner" in saved["search"]) == (experiment == "mimic"), saved["search"]

    from mlflow.tracking import MlflowClient

    monitor = load_config(REPO / "configs" / f"{experiment}_demo.yaml").train.monitor
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"{experiment}-search")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    under = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    children = [r for r in under if r.data.tags.get("stage") == "trial"]
    assert len({c.data.tags["trial_id"] for c in children}) == 2
    # the components, fitted once by the pipeline's stage 1, each a child run of the sweep
    modalities = {"avmnist": ["image", "audio"], "mimic": ["static", "timeseries"]}[experiment]
    components = [r for r in under if r.data.tags.get("stage") == "components"]
    assert sorted(r.data.tags["paradigm"] for r in components) == sorted(
        ["inter", *(f"unimodal_{m}" for m in modalities)]
    )
    assert all(r.info.status == "FINISHED" and "test_" + monitor in r.data.metrics for r in components)
    assert (out / "search" / f"search-{experiment}" / "components" / "checkpoints" / "inter.pt").is_file()
    assert any(k.startswith("components.inter.test_") for k in parent.data.metrics)  # also on the parent
    assert parent.info.status == "FINISHED" and "best_objective" in parent.data.metrics
    for c in children:
        assert "objective" in c.data.metrics and 0.0 <= c.data.metrics["objective"] <= 1.0
        assert len(client.get_metric_history(c.info.run_id, f"val_{monitor}")) >= 1
