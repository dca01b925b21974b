"""A sweep's options and its saved state: ``search/<name>/sweep.json`` keeps what
``--resume`` needs (the definition, the MLflow runs, the data's fingerprint, who started it);
an existing sweep is refused, continued (``--resume``) or discarded (``--overwrite``)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2m2_ray import tracking
from i2m2_ray.config import ConfigError, ExperimentConfig, load_config
from i2m2_ray.files import StateFileError, atomic_write_json, data_fingerprint, read_json
from i2m2_ray.rundir import data_paths
from i2m2_ray.tuning.space import SearchFile, parse_search_file
from i2m2_ray.tuning.trust import check_trust, seal


@dataclass
class SweepOptions:
    """One sweep: what to search, how many trials, and where everything goes."""

    experiment: str
    search: SearchFile
    base: ExperimentConfig
    output_dir: Path
    trials: int
    max_concurrent: int
    time_budget_s: float | None = None
    name: str | None = None
    storage_path: str | None = None
    tracking_uri: str | None = None
    data_dir: str | None = None
    annotations: str | None = None
    resume: bool = False
    strategy: str = "optuna-asha"  # or "grid": every combination of ``grid``, no early stopping
    grid: dict[str, list[Any]] = field(default_factory=dict)
    overwrite: bool = False  # a sweep of this name exists: discard it (its MLflow runs stay)
    # fits at once, as planned for the cluster (i2m2_ray.placement.plan): the components,
    # and a cap on concurrent trials; None: from the cluster's resources when the sweep starts
    fits_at_once: int | None = None
    placement: str | None = None  # what the placement changed, for the parent run's params

    @property
    def sweep_name(self) -> str:
        return self.name or f"search-{self.experiment}"

    @property
    def sweep_dir(self) -> Path:
        """``search/<name>/`` in the output directory: state, components, report."""
        return self.output_dir / "search" / self.sweep_name

    @property
    def storage(self) -> str:
        """Where Tune and the trials' Ray Train runs keep their results."""
        return self.storage_path or str(self.output_dir / "ray_results")

    @property
    def experiment_path(self) -> str:
        """The Tune experiment's folder (what ``Tuner.restore`` reads)."""
        return f"{self.storage.rstrip('/')}/{self.sweep_name}"

    @property
    def train_storage(self) -> str:
        """Where the Ray Train runs of the trials and components go."""
        return f"{self.storage.rstrip('/')}/{self.sweep_name}-train"

    @property
    def state_path(self) -> Path:
        return self.sweep_dir / "sweep.json"

    @property
    def optuna_storage(self) -> str:
        """The Optuna studies of the output directory's sweeps (one per sweep name), an sqlite
        file beside the MLflow store: ``optuna-dashboard <this>``, ``optuna.load_study``."""
        return f"sqlite:///{(self.output_dir / 'optuna.db').resolve()}"


def read_state(path: Path) -> dict[str, Any]:
    """A sweep's ``sweep.json``; a missing or damaged one is named."""
    state = read_json(path, "the sweep's state", "start the sweep afresh with --overwrite, or under another --name")
    if not isinstance(state, dict) or not {"experiment", "search", "base", "parent_run_id"} <= set(state):
        raise StateFileError(f"{path}: not a sweep state; start the sweep afresh with --overwrite")
    return state


def save_sweep_state(
    opts: SweepOptions, exp_id: str, parent: str, uri: str, data: Mapping[str, Any] | None = None
) -> None:
    """What ``--resume`` needs to rebuild the same sweep: its definition, its runs, the data
    it read (``data``: their fingerprint) and who started it (:func:`trust.seal`). The
    tracking URI is saved without its password (``--resume`` takes it from
    ``MLFLOW_TRACKING_URI`` again); the storage only when one was given (the default moves
    with the output folder)."""
    state = {
        "experiment": opts.experiment,
        "name": opts.sweep_name,
        "experiment_id": exp_id,
        "parent_run_id": parent,
        "tracking_uri": tracking.mask_credentials(uri),
        "search_file": str(opts.search.path),
        "search": opts.search.raw,
        "base": opts.base.to_dict(),
        "trials": opts.trials,
        "max_concurrent": opts.max_concurrent,
        "time_budget_s": opts.time_budget_s,
        "strategy": opts.strategy,
        "grid": opts.grid,
        "data_dir": opts.data_dir,
        "annotations": opts.annotations,
        "data": dict(data or {}),
        "storage_path": opts.storage_path,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        **seal(opts.sweep_name),
    }
    atomic_write_json(opts.state_path, state)


def saved_tracking_uri(saved: str | None) -> str | None:
    """The tracking URI to resume with: the saved one, or, when its password was masked, the
    same URI from ``MLFLOW_TRACKING_URI`` (the password is never written to disk)."""
    if saved is None or "***@" not in saved:
        return saved
    env = os.environ.get(tracking.TRACKING_ENV)
    if env and tracking.mask_credentials(env) == saved:
        return env
    raise ConfigError(
        f"the sweep was tracked at {saved}, whose password is not saved: set {tracking.TRACKING_ENV} to that URI "
        "with its password to resume"
    )


def load_sweep_options(output_dir: Path, name: str, trust: bool = False, **changes: Any) -> SweepOptions:
    """The options of a sweep saved in ``output_dir`` (for ``--resume``), after checking it
    was written by this user (:mod:`i2m2_ray.tuning.trust`; ``trust``: ``--trust-storage``).

    Raises:
        ConfigError: no such sweep, a damaged ``sweep.json``, or an untrusted one.
    """
    path = output_dir / "search" / name / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"no sweep '{name}' to resume in {output_dir} (missing {path})")
    try:
        s = read_state(path)
    except StateFileError as exc:
        raise ConfigError(str(exc)) from None
    search = parse_search_file(s["search"], Path(s["search_file"]))
    opts = SweepOptions(
        experiment=s["experiment"],
        search=search,
        base=load_config(None, [], base=s["base"]),
        output_dir=output_dir,
        trials=int(s["trials"]),
        max_concurrent=int(s["max_concurrent"]),
        time_budget_s=s.get("time_budget_s"),
        name=name,
        storage_path=s.get("storage_path"),
        data_dir=s.get("data_dir"),
        annotations=s.get("annotations"),
        resume=True,
        strategy=s.get("strategy", "optuna-asha"),
        grid=dict(s.get("grid") or {}),
    )
    check_trust(s, name, opts.experiment_path, trust, path.parent)  # before anything else is used
    opts.tracking_uri = saved_tracking_uri(s.get("tracking_uri")) if "tracking_uri" not in changes else None
    return dataclasses.replace(opts, **changes)


def sweep_exists(opts: SweepOptions) -> bool:
    """Whether a sweep of this name was started in the output folder (its state or its
    local Tune experiment; quick, no Ray)."""
    local = "://" not in opts.experiment_path and Path(opts.experiment_path).is_dir()
    return opts.state_path.exists() or local


def discard_sweep(opts: SweepOptions) -> list[str]:
    """``--overwrite``: delete an earlier sweep of this name: ``search/<name>/`` and its
    Tune and Ray Train storage. Returns what was deleted."""
    gone = []
    for path in (str(opts.sweep_dir), opts.experiment_path, opts.train_storage):
        if "://" in path:
            import pyarrow.fs

            fs, inner = pyarrow.fs.FileSystem.from_uri(path)
            if fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound:
                fs.delete_dir(inner)
                gone.append(path)
        elif Path(path).exists():
            shutil.rmtree(path)
            gone.append(path)
    return gone


def sweep_exists_message(opts: SweepOptions) -> str:
    return (
        f"a sweep named '{opts.sweep_name}' already exists in {opts.output_dir}, and nothing in it is changed: "
        "continue it with --resume, start it afresh with --overwrite (discards its search/ folder, trials and "
        "components; its MLflow runs stay), or start another with --name"
    )


def sweep_data(opts: SweepOptions) -> dict[str, Any]:
    """The fingerprint of the data the sweep reads (``--resume`` compares it)."""
    return data_fingerprint(data_paths(opts.base, opts.output_dir), base=opts.output_dir)
