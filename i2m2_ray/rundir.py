"""The output folder of a pipeline run: what an earlier run left there, never losing it
without ``--overwrite``, and what ``--resume`` compares (config, data).

Nothing here starts Ray or training: the command lines call :func:`check_output_dir` before
Ray starts, so a refusal comes within seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.files import StateFileError, read_json


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = repr(v)
    return out


STATE_FILE = "pipeline.json"
# what --overwrite discards of an earlier run (the MLflow store keeps its runs: history)
RUN_OUTPUTS = ("results", "checkpoints", "plots", "summary.json", STATE_FILE)
# run.* keys that may differ on --resume: where and how long it trains, not what it trains
PLACEMENT_KEYS = (
    "num_workers",
    "cpus_per_worker",
    "use_gpu",
    "placement_strategy",
    "max_failures",
    "resource_timeout_s",
)


RESUME_REMEDY = "start afresh with --overwrite, or use another --output-dir"


class RunDirError(ConfigError):
    """The output folder cannot be used as asked; the message says why and what to do."""


def earlier_run(out: Path) -> str | None:
    """What an earlier run left in ``out`` (None: nothing)."""
    results = sorted(p.stem for p in (out / "results").glob("*.json")) if (out / "results").is_dir() else []
    if (out / "summary.json").is_file():
        return f"a finished run (summary.json; {len(results)} model(s) in results/)"
    if (out / STATE_FILE).is_file() or results or any((out / "checkpoints").glob("*.pt")):
        return f"an unfinished run ({len(results)} finished model(s) in results/: {results})"
    return None


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse what would lose an earlier run's results: a fresh run into a folder that holds
    one needs ``overwrite``; ``resume`` needs one. Touches nothing (quick: the command
    lines call it before Ray starts)."""
    if resume and overwrite:
        raise RunDirError("--resume continues the run in the output folder and --overwrite discards it: choose one")
    if resume:
        if not (out / STATE_FILE).is_file():
            raise RunDirError(f"--resume: {out / STATE_FILE} not found; nothing to resume in {out}")
        try:  # a damaged state is named now, not after Ray has started
            read_json(out / STATE_FILE, "the state of the run to resume", RESUME_REMEDY)
        except StateFileError as exc:
            raise RunDirError(str(exc)) from None
        return
    found = earlier_run(out)
    if found and not overwrite:
        raise RunDirError(
            f"{out} holds {found}, and nothing in it is changed: continue it with --resume, start afresh "
            f"with --overwrite (discards its {', '.join(RUN_OUTPUTS)}), or choose another --output-dir"
        )


def discard_earlier_run(out: Path, storage: str) -> list[str]:
    """``--overwrite``: delete what an earlier run left (:data:`RUN_OUTPUTS` and, on local
    storage, its Ray Train runs). Returns what was deleted."""
    gone: list[str] = []
    try:
        old_id = read_json(out / STATE_FILE, "state", "").get("id")
    except (StateFileError, AttributeError):
        old_id = None
    store = Path(storage)
    if old_id and "://" not in storage and store.is_dir():
        for run_dir in store.glob(f"*-{old_id}"):
            shutil.rmtree(run_dir, ignore_errors=True)
            gone.append(str(run_dir))
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        gone.append(str(path))
    return gone


def data_paths(cfg: ExperimentConfig, work_dir: Path) -> dict[str, Path | str | None]:
    """The paths a dataset reads: ``data.data_dir`` and ``data.annotations``, or the
    generated sample (``<work_dir>/sample_data``) when there is no ``data_dir``."""
    if cfg.data.data_dir is None:
        return {"sample": work_dir / "sample_data", "annotations": cfg.data.annotations}
    return {"data_dir": cfg.data.data_dir, "annotations": cfg.data.annotations}


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config less what may change on ``--resume`` (placement, see :data:`PLACEMENT_KEYS`;
    data paths, compared with their fingerprint)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key in PLACEMENT_KEYS:
        out.get("run", {}).pop(key, None)
    for key in ("data_dir", "annotations"):
        out.get("data", {}).pop(key, None)
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: saved -> now`` for every leaf that differs."""
    flat_saved, flat_now = _flatten(saved), _flatten(now)
    keys = sorted(set(flat_saved) | set(flat_now))
    return [
        f"{k}: {flat_saved.get(k, '(absent)')} -> {flat_now.get(k, '(absent)')}"
        for k in keys
        if flat_saved.get(k) != flat_now.get(k)
    ]
