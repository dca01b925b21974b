"""MLflow tracking: one parent run per pipeline or sweep, one child run per model or trial.

Everything goes through ``MlflowClient`` with explicit run ids, so runs can be written from
the driver, from concurrent fit tasks and from rank-0 training workers alike. Every run that
is started is ended (FINISHED or FAILED), never left RUNNING.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
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


# MLflow's experiment-kind tag: a model-training experiment, not a GenAI one (the UI reads it
# where its GenAI / model-training switch is off; the runs page's address carries the switch)
KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def get_experiment_id(uri: str, name: str, artifact_root: str | Path | None) -> str:
    """Id of experiment ``name``, created if needed (artifacts under ``artifact_root`` for a
    local sqlite store; a tracking server chooses its own) and tagged as model training."""
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, MODEL_TRAINING)
        return str(exp.experiment_id)
    location = None
    if uri.startswith("sqlite:") and artifact_root is not None:
        location = Path(artifact_root).resolve().as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location, tags={KIND_TAG: MODEL_TRAINING}))
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


# A saved view of the MLflow UI (3.x) is an experiment tag: this prefix, then the view's key;
# its value an envelope {name, createdAt, updatedAt (ms), state: the view's state as JSON}.
# An address with ``viewStateShareKey=<key>`` opens the experiment's page in that view.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPARISON_VIEW = "i2m2-paradigms"


def comparison_view_state(parent_run_id: str, metrics: Sequence[str]) -> dict[str, Any]:
    """The state of the UI's runs page that compares one pipeline's models: the runs whose
    parent is ``parent_run_id``, grouped by their ``paradigm`` tag, a bar chart per main test metric
    (``test_<metric>``, in order) in a section of their own, those metrics as table columns,
    charts without data hidden. Every field of the page's state is given (search, then UI),
    so nothing is left to what a browser remembers."""
    section = "i2m2-main-test-metrics"
    charts = [
        {
            "uuid": f"i2m2-test-{metric}",
            "type": "BAR",
            "runsCountToCompare": 10,
            "metricSectionId": section,
            "deleted": False,
            "isGenerated": False,
            "metricKey": f"test_{metric}",
        }
        for metric in metrics
    ]
    return {
        # search
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        # page
        "selectedColumns": [f"metrics.`test_{metric}`" for metric in metrics],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Paradigm comparison: test metrics",
                "display": True,
                "isReordered": True,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,
        # a group per paradigm: the UI nests children under their (collapsed) parent, and
        # its charts draw only the rows shown; groups show each model, bars drawn per group
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "paradigm"}]},
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
        "chartsSearchFilter": "",
    }


def save_comparison_view(uri: str, experiment_id: str, parent_run_id: str, metrics: Sequence[str]) -> str:
    """The experiment's saved view "Paradigm comparison (latest run)": the models of the run
    ``parent_run_id`` side by side on ``metrics`` (see :func:`comparison_view_state`),
    replacing the view of an earlier run. Returns the view's key."""
    now = int(time.time() * 1000)
    envelope = {
        "name": "Paradigm comparison (latest run)",
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(comparison_view_state(parent_run_id, metrics)),
    }
    _client(uri).set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + COMPARISON_VIEW, json.dumps(envelope))
    return COMPARISON_VIEW


def runs_page(base_url: str, experiment_id: str, view: str | None = None) -> str:
    """The address of an experiment's runs page in the MLflow UI at ``base_url``, on its
    model-training side (MLflow 3 otherwise opens a fresh browser on the GenAI overview);
    with ``view``, that saved view (e.g. :data:`COMPARISON_VIEW`) in the page's chart mode."""
    page = f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if view:
        page += f"&viewStateShareKey={view}&compareRunsMode=CHART"
    return page


def ui_hint(uri: str, experiment: str, mlflow_bin: str = "mlflow") -> list[str]:
    """What to type, or open, to see ``experiment``'s runs: for a local store the ``mlflow
    ui`` command (on 127.0.0.1) and the page to open; for a server, the page. Empty when the
    store does not answer or holds no such experiment."""
    try:
        exp = _client(uri).get_experiment_by_name(experiment)
    except Exception:
        return []
    if exp is None:
        return []
    shown = mask_credentials(uri)
    view = COMPARISON_VIEW if VIEW_TAG_PREFIX + COMPARISON_VIEW in exp.tags else None
    if uri.startswith(("http://", "https://")):
        return [f"MLflow:  open {runs_page(shown, exp.experiment_id, view)}"]
    return [
        f"MLflow:  {mlflow_bin} ui --backend-store-uri {shown} --host 127.0.0.1 --port 5000",
        f"         then open {runs_page('http://127.0.0.1:5000', exp.experiment_id, view)}",
    ]


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` (MLflow params), each value written as YAML flow
    text so that :func:`unflatten` reads it back as it was: ``None`` -> ``null``, ``False``
    -> ``false``, ``[1, 1]``, the string ``"1e-3"`` quoted; an empty mapping stays, as
    ``{}``. Values beyond MLflow's 6,000 characters are cut (config.yaml keeps them whole)."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = param_text(v)[:6000]
    return out


def param_text(value: Any) -> str:
    """One param's value as YAML flow text. A string stays as it is (readable in the UI),
    unless YAML would read it back as something else of a plain kind (``"null"``,
    ``"true"``, ``"3"``): then it is quoted."""
    import yaml

    if isinstance(value, str):
        try:
            back = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if back == value or _prose(value, back):
            return value
    if isinstance(value, Mapping):
        value = dict(value)
    elif isinstance(value, tuple):
        value = list(value)
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    except yaml.YAMLError:  # an object YAML cannot write: its text
        return str(value)
    return text.removesuffix("\n...\n").removesuffix("\n").strip()


def _prose(text: str, parsed: Any) -> bool:
    """A string YAML reads as a mapping or list though it is not written as one (flow
    mappings and lists start with a bracket): ``"a: b"``, ``"- x"``."""
    return isinstance(parsed, dict | list) and not text.lstrip().startswith(("{", "["))


def unflatten(params: Mapping[str, str]) -> dict[str, Any]:
    """The nested dict that :func:`flatten` wrote as ``params``."""
    import yaml

    out: dict[str, Any] = {}
    for key, text in params.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node[leaf] = text if _prose(text, value) else value
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


# the packages whose versions a run records (tags version.<name>)
VERSIONED = ("i2m2-ray", "ray", "torch", "mlflow", "optuna", "transformers", "numpy")
CONFIG_ARTIFACT = "config.yaml"


def provenance(argv: Sequence[str] | None = None, cwd: str | Path | None = None) -> dict[str, str]:
    """What a parent run records so that it can be repeated: ``command`` (the command line,
    as it could be typed again), ``git_commit`` and ``git_dirty`` when the code runs from a
    git checkout (also as MLflow's ``mlflow.source.git.commit``, shown in its UI), and
    ``version.<package>`` for the packages that decide the numbers (:data:`VERSIONED`;
    ``version.python`` too), and the driver's machine (:func:`host_tags`): the same seed
    reproduces a run to the digit on the same kind of machine and installation, but CPU
    kernels round differently with the instruction set they use."""
    import platform
    import shlex
    import subprocess
    import sys
    from importlib import metadata

    args = list(sys.argv if argv is None else argv)
    command = mask_credentials(shlex.join(["python", *args]))[:5000]  # a --tracking-uri's password too
    tags = {"command": command, "version.python": platform.python_version()}
    for name in VERSIONED:
        try:
            tags[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    tags.update(host_tags())
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (a job's copy)
        return tags
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        tags.update(
            {"git_commit": commit, "git_dirty": "true" if changed else "false", "mlflow.source.git.commit": commit}
        )
    return tags


def host_tags() -> dict[str, str]:
    """The machine the driver runs on, as tags: ``host.cpu`` (the CPU model), ``host.cpu_kernels``
    (the instruction set torch's CPU kernels use, e.g. AVX512, which decides their rounding)
    and ``host.gpu`` (the first CUDA device's name, where there is one). A cluster's workers
    may run elsewhere; their own machines are not recorded."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    tags = {"host.cpu": cpu, "host.cpu_kernels": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        tags["host.gpu"] = torch.cuda.get_device_name(0)
    return tags


class RunConfigError(ValueError):
    """A run's config cannot be read back from MLflow; the message names the run and why."""


def run_config(uri: str, run_id: str) -> dict[str, Any]:
    """The config a run was made with: its ``config.yaml`` artifact, or its parent's (a
    model's child run points to the pipeline's run). Raises :class:`RunConfigError`
    naming the run when it is not found or holds no config."""
    import tempfile

    import yaml

    client = _client(uri)
    seen: list[str] = []
    current: str | None = run_id
    while current and current not in seen:
        seen.append(current)
        try:
            run = client.get_run(current)
        except Exception as exc:
            raise RunConfigError(
                f"run {current} not found in the MLflow store {mask_credentials(uri)} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        names = {a.path for a in client.list_artifacts(current)}
        if CONFIG_ARTIFACT in names:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(current, CONFIG_ARTIFACT, tmp)
                loaded = yaml.safe_load(Path(path).read_text())
            if not isinstance(loaded, dict):
                raise RunConfigError(f"run {current}: {CONFIG_ARTIFACT} is not a mapping")
            return loaded
        current = run.data.tags.get(PARENT_TAG)
    raise RunConfigError(
        f"run {run_id} (and its parent runs) hold no {CONFIG_ARTIFACT}: runs logged before i2m2-ray recorded "
        f"its config cannot be repeated with --from-run; give the config with --config instead"
    )


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
