"""MLflow tracking: one parent run per pipeline or sweep, one child run per model or trial.

Everything goes through ``MlflowClient`` with explicit run ids, so runs can be written from
the driver, from concurrent fit tasks and from rank-0 training workers alike. Every run that
is started is ended (FINISHED or FAILED), never left RUNNING.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKING_ENV = "MLFLOW_TRACKING_URI"
PARENT_TAG = "mlflow.parentRunId"
# set by experiments/study.py for each seed's pipeline: the study's run, the seed's parent run's parent
STUDY_RUN_ENV = "I2M2_STUDY_RUN_ID"


# the password of a URI's user info: scheme://user:password@host
_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<password>[^@/\s]+)@")


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URI in it masked: ``http://user:pass@host`` ->
    ``http://user:***@host``. Tracking URIs are shown through this (printed lines,
    warnings, saved state), never as given."""
    return _PASSWORD.sub(lambda m: f"{m['head']}:***@", text)


def default_tracking_uri(output_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an sqlite store in the output directory
    (MLflow 3 refuses the plain ``./mlruns`` file store)."""
    env = os.environ.get(TRACKING_ENV)
    if env:
        return env
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_experiment_id(uri: str, name: str, artifact_root: str | Path | None) -> str:
    """Id of experiment ``name``, created if needed (artifacts under ``artifact_root`` for a
    local sqlite store; a tracking server chooses its own)."""
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if uri.startswith("sqlite:") and artifact_root is not None:
        location = Path(artifact_root).resolve().as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` with string values (MLflow params)."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def start_run(
    uri: str,
    experiment_id: str,
    name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run (a child when ``parent_run_id`` is given) and log its params."""
    from mlflow.entities import Param

    client = _client(uri)
    all_tags = dict(tags)
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    items = list(flatten(params or {}).items())
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    return str(run.info.run_id)


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log the finite numeric entries of ``metrics`` at ``step``."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [
        Metric(k, float(v), ts, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not math.isnan(float(v))
    ]
    for i in range(0, len(items), 500):
        _client(uri).log_batch(run_id, metrics=items[i : i + 500])


def epoch_logger(uri: str, run_id: str) -> Callable[[Mapping[str, float], int], None]:
    """A callable that logs one epoch's metrics to ``run_id``; after a failure it warns once
    and stops logging (the epochs stay in the training result's history)."""
    tracker = Tracker(uri, "the model's results", later="its epochs can be uploaded later", check_server=False)

    def log(metrics: Mapping[str, float], step: int) -> None:
        tracker.call(log_metrics, run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step)

    return log


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    _client(uri).log_artifact(run_id, str(path), artifact_path)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark a run FINISHED / FAILED / KILLED."""
    _client(uri).set_terminated(run_id, status=status)


def reopen_run(uri: str, run_id: str) -> None:
    """Mark an ended run RUNNING again (a resumed sweep goes on writing to it)."""
    _client(uri).update_run(run_id, status="RUNNING")


def set_tag(uri: str, run_id: str, key: str, value: str) -> None:
    _client(uri).set_tag(run_id, key, value)


def delete_tag(uri: str, run_id: str, key: str) -> None:
    _client(uri).delete_tag(run_id, key)


@dataclass(frozen=True)
class RunInfo:
    """What the code reading back a run needs: its ids, status and tags."""

    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED (or SCHEDULED)
    tags: dict[str, str]


def _info(run: Any) -> RunInfo:
    return RunInfo(str(run.info.run_id), str(run.info.experiment_id), str(run.info.status), dict(run.data.tags))


def get_run(uri: str, run_id: str) -> RunInfo:
    return _info(_client(uri).get_run(run_id))


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[RunInfo]:
    """The child runs of ``parent_run_id`` in ``experiment_id``, oldest first."""
    runs = _client(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    return [_info(r) for r in runs]


def kill_stale_runs(uri: str, experiment_id: str, parent_run_id: str) -> None:
    """Close as KILLED a lost driver's parent run and its children still marked RUNNING."""
    for run in [*child_runs(uri, experiment_id, parent_run_id), get_run(uri, parent_run_id)]:
        if run.status == "RUNNING":
            end_run(uri, run.run_id, "KILLED")


def reachable(uri: str, timeout: float = 5.0) -> bool:
    """Whether the tracking store answers (an HTTP server's /health; local stores: yes)."""
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return True
    except OSError:
        return False


LOCKED_MARKERS = ("database is locked", "database is busy")


def retry_locked(fn: Callable[..., Any], *args: Any, attempts: int = 6, wait_s: float = 2.0, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried while an sqlite store is locked by another writer.

    Concurrent fits write to one sqlite file; a write waits 5 s for the lock and then raises
    "database is locked" (seen on a loaded 2-core machine). Such a write did not happen, so
    trying again is safe; any other error is raised at once.
    """
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not any(m in str(exc) for m in LOCKED_MARKERS):
                raise
            time.sleep(wait_s * (attempt + 1))
    raise AssertionError("unreachable")


def limit_retries() -> None:
    """Fail fast on a dead server: MLflow's default HTTP retries back off for minutes."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


UPLOAD_HINT = "upload them later with `python -m i2m2_ray.tracking upload <output-dir>`"


class Tracker:
    """MLflow writes that never stop the work they record: ``call(fn, *args)`` runs
    ``fn(uri, *args)``, retried while an sqlite store is locked; the first other failure is
    reported once, with where the results are kept (``results_hint``) and what to do later
    (``later``), and tracking is off for the rest of the run.

    The one such guard: the pipeline, the training workers' epoch logging
    (:func:`epoch_logger`) and the sweeps' trial callback all write through one.
    """

    def __init__(
        self,
        uri: str,
        results_hint: str,
        *,
        work: str = "training",
        later: str | None = UPLOAD_HINT,
        check_server: bool = True,
    ) -> None:
        limit_retries()
        self.uri: str | None = uri
        self.hint = results_hint
        self.work = work
        self.later = later
        if check_server and not reachable(uri):
            self._fail(f"the tracking server at {uri} does not answer")

    @property
    def enabled(self) -> bool:
        return self.uri is not None

    def _fail(self, why: str) -> None:
        then = f"; {self.later}." if self.later else "."
        print(
            mask_credentials(
                f"WARNING: MLflow tracking failed ({why}); {self.work} goes on without it. Results are "
                f"kept in {self.hint}{then}"
            ),
            flush=True,
        )
        self.uri = None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(uri, *args, **kwargs)`` if tracking is on; ``None`` after a failure."""
        if self.uri is None:
            return None
        try:
            return retry_locked(fn, self.uri, *args, **kwargs)
        except Exception as exc:  # any other MLflow/network error: keep working, say so once
            name = getattr(fn, "__name__", "MLflow")
            self._fail(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            return None
