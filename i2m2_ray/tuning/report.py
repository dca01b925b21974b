"""What a sweep leaves: its trials as ranked rows, an Optuna study of them (importances,
optimisation history), and the summary artifacts on disk and on the sweep's parent run."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from i2m2_ray import tracking
from i2m2_ray.files import atomic_path, atomic_write_text
from i2m2_ray.tuning.space import SearchSpace, TrialPlan, TrialRecipe

if TYPE_CHECKING:
    import optuna
    from ray.tune import ResultGrid

log = logging.getLogger(__name__)


@dataclass
class TrialRow:
    """One trial of a finished sweep, for the ranking."""

    trial_id: str
    status: str  # completed | stopped | error | unfinished
    score: float
    epochs: int
    raw: dict[str, Any]
    test: dict[str, float]
    history: list[float]
    checkpoint: Any = None
    error: str = ""
    order: int = 0  # creation order in the sweep


@dataclass
class SweepResult:
    rows: list[TrialRow]  # ranked, best first
    best: TrialRow | None
    best_plan: TrialPlan | None
    parent_run_id: str
    tracking_uri: str
    experiment_path: str
    interrupted: bool
    total_epochs: int
    importance: dict[str, float]
    artifacts: dict[str, Path]


def summary_columns(base: Mapping[str, Any]) -> list[str]:
    """The test metrics the sweep's base config reports (``report.metrics``)."""
    return list(base.get("report", {}).get("metrics", ["accuracy"]))


def trial_rows(grid: ResultGrid, monitor: str, mode: str) -> list[TrialRow]:
    """Tune's results as rows, ranked (see :func:`rank_rows`)."""
    rows: list[TrialRow] = []
    for i in range(len(grid)):
        result = grid[i]
        trial_id = Path(result.path).name.removeprefix("trial_")
        m = dict(result.metrics or {})
        if result.error is not None:
            status = "error"
        elif m.get("completed"):
            status = "completed"
        elif m.get("done"):
            status = "stopped"
        else:
            status = "unfinished"
        history: list[float] = []
        df = result.metrics_dataframe
        if df is not None and f"val_{monitor}" in df:
            epoch_rows = df[df["completed"].isna()] if "completed" in df else df
            history = [float(v) for v in epoch_rows[f"val_{monitor}"].tolist()]
        score = m.get(f"best_{monitor}", math.nan)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                status=status,
                score=float(score) if isinstance(score, (int, float)) else math.nan,
                epochs=int(m.get("epoch", 0) or 0),
                raw={k: v for k, v in (result.config or {}).items()},
                test={k[len("test_") :]: float(v) for k, v in m.items() if k.startswith("test_")},
                history=history,
                checkpoint=result.checkpoint if status == "completed" else None,
                error=str(result.error)[:300] if result.error is not None else "",
                order=i,
            )
        )
    return rank_rows(rows, mode)


def rank_rows(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by the objective (NaN last); ties keep the trial order."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (math.isnan(r.score), sign * r.score if not math.isnan(r.score) else 0.0))


def ranking_table(rows: Sequence[TrialRow], objective: str, test_columns: Sequence[str], limit: int = 0) -> str:
    """A plain-text ranked table: objective, status, epochs, test metrics, parameters."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r.raw if k not in names]
    header = ["rank", "trial", "status", objective, "epochs", *[f"test_{c}" for c in test_columns], *names]
    lines = [header]
    shown = rows[:limit] if limit else rows
    for i, r in enumerate(shown, start=1):
        cells = [str(i), r.trial_id, r.status, f"{r.score:.4f}", str(r.epochs)]
        cells += [f"{r.test[c]:.4f}" if c in r.test else "-" for c in test_columns]
        cells += [_short(r.raw[n]) if n in r.raw else "-" for n in names]
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def ranking_csv(rows: Sequence[TrialRow], columns: Sequence[str]) -> str:
    """The ranking as CSV: every test column, the sampled parameters as one JSON cell."""
    lines = ["rank,trial_id,status,objective,epochs," + ",".join(f"test_{c}" for c in columns) + ",params"]
    for i, r in enumerate(rows, start=1):
        tests = ",".join(f"{r.test.get(c, math.nan):.6f}" for c in columns)
        params = json.dumps(r.raw, sort_keys=True).replace('"', "'")
        lines.append(f'{i},{r.trial_id},{r.status},{r.score:.6f},{r.epochs},{tests},"{params}"')
    return "\n".join(lines) + "\n"


def optuna_study(
    rows: Sequence[TrialRow], space: SearchSpace, mode: str, storage: str | None = None, name: str | None = None
) -> optuna.Study:
    """An Optuna study holding the sweep's trials (in the order they were created):
    completed trials with their objective, early-stopped ones as pruned (with their
    per-epoch values), failed ones as failed.

    ``storage`` (an Optuna storage URL, e.g. ``sqlite:///out/optuna.db``) keeps it under
    ``name``: a study of that name written before (by the same sweep before it was
    interrupted) is replaced, so the stored study always holds each trial once."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is not None:
        try:
            optuna.delete_study(study_name=str(name), storage=storage)
        except KeyError:
            pass  # the first report of this sweep
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", storage=storage, study_name=name)
    for r in sorted(rows, key=lambda r: (r.order, r.trial_id)):
        if r.status == "unfinished" or not r.raw:
            continue
        finite = not math.isnan(r.score)
        if r.status == "completed" and finite:
            state, value = TrialState.COMPLETE, r.score
        elif r.status in ("completed", "stopped"):
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.FAIL, None
        inter = {i + 1: v for i, v in enumerate(r.history) if not math.isnan(v)}
        study.add_trial(
            create_trial(
                params=dict(r.raw),
                distributions=space.distributions(r.raw),
                value=value,
                state=state,
                intermediate_values=inter,
                user_attrs={"trial_id": r.trial_id},
            )
        )
    return study


def importance_artifacts(
    study: optuna.Study, folder: Path, seed: int, objective: str = "objective"
) -> tuple[dict[str, float], dict[str, Path]]:
    """Parameter importances (fANOVA over the completed trials, as a CSV table) and Optuna's
    plots of the study (PNG): optimisation history, parameter importances, parallel
    coordinates, slices and the intermediate (per-epoch) values. A plot the study cannot
    give (too few completed trials, one parameter) is left out with a warning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as views

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    importance: dict[str, float] = {}
    table = folder / "param_importance.csv"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        importance = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        lines = ["parameter,importance", *[f"{k},{v:.6f}" for k, v in importance.items()]]
    except (ValueError, RuntimeError) as exc:
        # fANOVA needs two completed trials and parameters that every one of them has
        lines = ["parameter,importance", f"# not computed: {exc}"]
    atomic_write_text(table, "\n".join(lines) + "\n")
    out["param_importance"] = table
    plots: dict[str, Any] = {
        "optimization_history": lambda: views.plot_optimization_history(study, target_name=objective),
        "param_importances": lambda: views.plot_param_importances(study, evaluator=evaluator, target_name=objective),
        "parallel_coordinate": lambda: views.plot_parallel_coordinate(study, target_name=objective),
        "slice": lambda: views.plot_slice(study, target_name=objective),
        "intermediate_values": lambda: views.plot_intermediate_values(study),
    }
    for name, plot in plots.items():
        if name == "param_importances" and not importance:
            continue  # fANOVA could not run (above)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib backend
                drawn = plot()
            figure = (drawn.flat[0] if hasattr(drawn, "flat") else drawn).figure  # slice: an array of axes
            path = folder / f"{name}.png"
            with atomic_path(path) as tmp:
                figure.savefig(tmp, dpi=120, bbox_inches="tight")
            out[name] = path
        except (ValueError, RuntimeError) as exc:
            log.warning("%s not plotted: %s", name, exc)
        finally:
            plt.close("all")
    return importance, out


@dataclass
class Report:
    """The summary of a sweep's trials as written to its ``report/`` folder."""

    best: TrialRow | None
    best_plan: TrialPlan | None
    importance: dict[str, float]
    artifacts: dict[str, Path]  # ranking, ranking_csv, importance, plot, best config and checkpoint
    total_epochs: int


def write_report(
    rows: list[TrialRow],
    recipe: TrialRecipe,
    folder: Path,
    *,
    experiment: str,
    sweep_name: str,
    mode: str,
    optuna_storage: str | None = None,
) -> Report:
    """Ranking (text and CSV), Optuna importances and plots, the best trial's config and
    checkpoint, all in ``folder``; the Optuna study kept in ``optuna_storage`` under the
    sweep's name (None: in memory only)."""
    folder.mkdir(parents=True, exist_ok=True)
    monitor, seed = recipe.base["train"]["monitor"], int(recipe.base["run"]["seed"])
    best = next((r for r in rows if r.status == "completed" and not math.isnan(r.score)), None)
    best_plan = recipe.plan(best.raw) if best is not None else None
    artifacts: dict[str, Path] = {}

    columns = summary_columns(recipe.base)
    atomic_write_text(folder / "ranking.txt", ranking_table(rows, f"val_{monitor}", columns[:2]) + "\n")
    artifacts["ranking"] = folder / "ranking.txt"
    atomic_write_text(folder / "ranking.csv", ranking_csv(rows, columns))
    artifacts["ranking_csv"] = folder / "ranking.csv"

    study = optuna_study(rows, recipe.space, mode, optuna_storage, sweep_name)
    importance, plots = importance_artifacts(study, folder, seed, f"val_{monitor}")
    artifacts.update(plots)

    if best_plan is not None and best is not None:
        best_cfg = folder / "best_config.yaml"
        atomic_write_text(
            best_cfg,
            f"# best trial {best.trial_id} of sweep {sweep_name}: val_{monitor} {best.score:.4f}\n"
            f"# overrides: {' '.join(best_plan.overrides)}\n"
            + yaml.safe_dump(best_plan.config.to_dict(), sort_keys=False),
        )
        artifacts["best_config"] = best_cfg
        if best.checkpoint is not None:
            ckpt_dir = Path(best.checkpoint.to_directory(str(folder / "best_checkpoint")))
            artifacts["best_checkpoint"] = ckpt_dir
    return Report(best, best_plan, importance, artifacts, sum(r.epochs for r in rows))


def log_report(
    report: Report,
    rows: Sequence[TrialRow],
    uri: str,
    experiment_id: str,
    parent: str,
    search_file: Path,
) -> None:
    """The report's files and summary metrics on the sweep's parent run; the best trial's
    run tagged ``best``, with the best checkpoint. An MLflow failure is reported, not
    raised."""
    from i2m2_ray.tuning.callback import find_trial_runs

    best, artifacts = report.best, report.artifacts
    try:
        for key, art in artifacts.items():
            if key == "best_checkpoint":
                tracking.log_artifact(uri, parent, art, "best_checkpoint")
            else:
                tracking.log_artifact(uri, parent, art, "search")
        tracking.log_artifact(uri, parent, search_file, "search")
        summary: dict[str, float] = {
            "trials_completed": sum(r.status == "completed" for r in rows),
            "trials_stopped_early": sum(r.status == "stopped" for r in rows),
            "trials_failed": sum(r.status == "error" for r in rows),
            "total_epochs": report.total_epochs,
        }
        if best is not None:
            summary["best_objective"] = best.score
            summary.update({f"best_test_{k}": v for k, v in best.test.items()})
        tracking.log_metrics(uri, parent, summary)
        tracking.log_metrics(uri, parent, {f"importance.{k}": v for k, v in report.importance.items()})
        if best is not None:
            tracking.set_tag(uri, parent, "best_trial", best.trial_id)
            for run_id in find_trial_runs(uri, experiment_id, parent).get(best.trial_id, [])[-1:]:
                tracking.set_tag(uri, run_id, "best", "true")
                if "best_checkpoint" in artifacts:
                    tracking.log_artifact(uri, run_id, artifacts["best_checkpoint"], "checkpoint")
    except Exception as exc:
        print(f"WARNING: MLflow: {type(exc).__name__}: {exc}", flush=True)
