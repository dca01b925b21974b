"""Runs that can be repeated from what MLflow holds: params that read back as written, the
provenance a parent run records, its config.yaml, and ``--from-run`` resolving it (a real
sqlite MLflow store; the end-to-end repeat is in tests/test_experiments_avmnist_mimic.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from i2m2_ray import tracking
from i2m2_ray.cli.common import CONFIG_DIR, build_parser, resolve_config
from i2m2_ray.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
def test_every_shipped_config_reads_back_from_its_params(name: str) -> None:
    config = load_config(CONFIG_DIR / name).to_dict()
    flat = tracking.flatten(config)
    assert tracking.unflatten(flat) == config


def test_params_keep_none_empty_maps_and_strings_that_look_like_numbers() -> None:
    placement = "run.use_gpu: true -> false (the cluster has no GPU); 1 model(s) at once"
    params = {"a": None, "b": {}, "c": [1, 1], "d": "1e-3", "e": False, "f": {"g": 2e-06}, "h": "None", "i": "x: y"}
    params.update({"j": "null", "k": "3", "l": "two\nlines", "placement": placement})
    flat = tracking.flatten(params)
    assert flat["a"] == "null" and flat["b"] == "{}" and flat["c"] == "[1, 1]" and flat["e"] == "false"
    assert flat["h"] == "None" and flat["f.g"] == "2.0e-06"
    assert flat["placement"] == placement and flat["i"] == "x: y"  # prose stays readable in the UI
    assert flat["j"] == "'null'" and flat["k"] == "'3'"  # strings YAML would misread are quoted
    assert tracking.unflatten(flat) == params


def test_provenance_names_the_command_the_commit_and_the_versions(tmp_path: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    tags = tracking.provenance(["experiments/mimic.py", "--set", "train.lr=1e-3 x"], cwd=REPO)
    assert tags["command"] == "python experiments/mimic.py --set 'train.lr=1e-3 x'"
    assert tags["git_commit"] == tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert tags["git_dirty"] in ("true", "false")
    import mlflow
    import ray
    import torch

    assert (tags["version.ray"], tags["version.mlflow"]) == (ray.__version__, mlflow.__version__)
    assert tags["version.torch"] == torch.__version__ and tags["version.i2m2-ray"]
    # the driver's machine: its CPU kernels' instruction set decides their rounding
    assert tags["host.cpu_kernels"] == torch.backends.cpu.get_cpu_capability() and tags["host.cpu"]
    assert ("host.gpu" in tags) == torch.cuda.is_available()
    outside = tracking.provenance(["x.py"], cwd=tmp_path)  # not a checkout (a job's copy)
    assert "git_commit" not in outside and outside["version.ray"] == ray.__version__
    secret = tracking.provenance(["x.py", "--tracking-uri", "http://me:s3cret@host:5000"], cwd=tmp_path)
    assert secret["command"] == "python x.py --tracking-uri http://me:***@host:5000"


def store_with_runs(tmp_path: Path, config: dict[str, Any] | None) -> tuple[str, str, str]:
    """An sqlite store with a pipeline run (holding ``config`` as config.yaml, unless None)
    and one model run under it: (uri, parent, child)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.get_experiment_id(uri, "mimic", tmp_path / "art")
    parent = tracking.start_run(uri, exp, "mimic-seed1", tags={"stage": "pipeline"}, params=config or {})
    if config is not None:
        path = tmp_path / tracking.CONFIG_ARTIFACT
        path.write_text(yaml.safe_dump(config))
        tracking.log_artifact(uri, parent, path)
    child = tracking.start_run(uri, exp, "inter", tags={"paradigm": "inter"}, parent_run_id=parent)
    return uri, parent, child


def test_a_runs_config_is_read_from_it_or_its_parent(tmp_path: Path) -> None:
    config = load_config(CONFIG_DIR / "mimic_demo.yaml", ["run.seed=7", "data.sample={samples: 300, seed: 0}"])
    uri, parent, child = store_with_runs(tmp_path, config.to_dict())
    assert tracking.run_config(uri, parent) == config.to_dict()
    assert tracking.run_config(uri, child) == config.to_dict()  # a model's run: its pipeline's
    with pytest.raises(tracking.RunConfigError, match=r"run 0123abcd not found in the MLflow store sqlite:///"):
        tracking.run_config(uri, "0123abcd")
    bare = tmp_path / "bare"
    bare.mkdir()
    uri2, parent2, child2 = store_with_runs(bare, None)
    with pytest.raises(tracking.RunConfigError, match=rf"run {child2} \(and its parent runs\) hold no config.yaml"):
        tracking.run_config(uri2, child2)


def resolve(experiment: str, *argv: str) -> Any:
    return resolve_config(experiment, build_parser(experiment).parse_args(list(argv)))


def test_from_run_takes_the_runs_config_and_the_command_line_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    config = load_config(CONFIG_DIR / "mimic_demo.yaml", ["run.seed=7", "train.epochs=3"])
    uri, parent, child = store_with_runs(tmp_path, config.to_dict())
    assert resolve("mimic", "--from-run", child, "--tracking-uri", uri) == config
    again = resolve("mimic", "--from-run", parent, "--tracking-uri", uri, "--seed", "2", "--set", "train.epochs=5")
    assert (again.run.seed, again.train.epochs, again.train.lr) == (2, 5, config.train.lr)
    monkeypatch.setenv(tracking.TRACKING_ENV, uri)  # the store from the environment
    assert resolve("mimic", "--from-run", parent, "--data-dir", "/data/x").data.data_dir == "/data/x"
    with pytest.raises(ConfigError, match=r"is a 'mimic' run, this script runs 'avmnist'"):
        resolve("avmnist", "--from-run", parent)
    with pytest.raises(ConfigError, match=r"--config and --from-run both name the config"):
        resolve("mimic", "--from-run", parent, "--config", str(CONFIG_DIR / "mimic.yaml"))
    monkeypatch.delenv(tracking.TRACKING_ENV)
    with pytest.raises(ConfigError, match=r"--from-run .*: which MLflow store holds the run\? Give --tracking-uri"):
        resolve("mimic", "--from-run", parent)


def test_a_run_config_the_checks_refuse_is_named_as_the_runs(tmp_path: Path) -> None:
    config = load_config(CONFIG_DIR / "mimic_demo.yaml").to_dict()
    config["train"]["weight_decay"] = -1.0  # edited by hand in the store, say
    uri, parent, _ = store_with_runs(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"the config of run {parent}: .*weight_decay"):
        resolve("mimic", "--from-run", parent, "--tracking-uri", uri)
