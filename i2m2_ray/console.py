"""What a run prints: a line per stage, one line per model per epoch (and, within an epoch
longer than a minute, a line each minute), the summary table at the end.

Ray's and MLflow's own chatter is off in every process of a run unless ``--verbose``
(which sets :data:`VERBOSE_ENV` in the driver and :attr:`LoopConfig.verbose` for the
training workers): Ray Train's dump of every report, Ray Data's "execution finished" and
"progress bars disabled" lines, Ray's deprecation warnings, and MLflow's notes while it
logs a model (its pickling warning, input validation and download progress bars; its request
for type hints is met by the pyfunc's, in :mod:`i2m2_ray.predict`). Errors
and warnings that say something went wrong stay.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

Batch = TypeVar("Batch", bound=Mapping[str, Any])

VERBOSE_ENV = "I2M2_VERBOSE"

# logger -> the lowest level still shown when quiet
_QUIET_LEVELS = {
    "ray.data._internal.progress": logging.ERROR,  # "Progress bars disabled. To enable, ..."
    "mlflow.pyfunc": logging.ERROR,  # "Passing a Python object as `python_model` ...", "Validating input example"
    "mlflow.models": logging.WARNING,
    "mlflow.store.db.utils": logging.WARNING,  # "Creating initial MLflow database tables..."
    "alembic": logging.WARNING,
}


def verbose() -> bool:
    """Whether this process was asked for everything (``--verbose``, or ``I2M2_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def set_verbose(on: bool) -> None:
    """Record ``--verbose`` for this process and those it starts, then quiet (or not) it."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    quiet(not on)


def quiet(on: bool | None = None) -> None:
    """Turn Ray's and MLflow's chatter off in this process (``on`` None: unless
    :func:`verbose`). Called by the entry points and at the start of every training worker."""
    if on is None:
        on = not verbose()
    if not on:
        return
    try:  # Ray Data sets up its loggers when imported: after that, its console shows warnings only
        import ray.data  # noqa: F401

        for handler in logging.getLogger("ray.data").handlers:
            # "Dataset ... execution finished in ... seconds"; its file in Ray's session logs keeps all
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
    except ImportError:
        pass
    for name, level in _QUIET_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    try:  # Ray Train logs "Reporting training result N: TrainingReport(...)" under its file's path
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    try:
        from ray.util.annotations import RayDeprecationWarning

        warnings.filterwarnings("ignore", category=RayDeprecationWarning)
    except ImportError:
        pass
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def every_minute(batches: Iterable[Batch], label: str, every_s: float = 60.0, out: Any = None) -> Iterator[Batch]:
    """Pass ``batches`` through, writing ``"<label>: N samples in S s (R samples/s)"`` each
    ``every_s`` seconds: a long epoch shows it goes on (plain lines, which read the same in a
    terminal, a job's log and a file)."""
    stream = out if out is not None else sys.stdout
    t0 = last = time.perf_counter()
    seen = 0
    for batch in batches:
        yield batch
        seen += int(next(iter(batch.values())).shape[0])
        now = time.perf_counter()
        if now - last >= every_s:
            last = now
            stream.write(f"{label}: {seen} samples in {now - t0:.0f} s ({seen / (now - t0):.0f} samples/s)\n")
            stream.flush()
