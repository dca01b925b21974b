"""Idle cores for the fits of one machine: torch threads that follow how many training
workers are running, for a local Ray with ``run.deterministic: false``.

A local Ray runs the stage-1 fits side by side, one torch thread per worker CPU. When the
short fits end, the long one goes on alone at one thread while the other cores idle (on 2
cores the AV-MNIST inter expert trained alone at one thread for about a third of stage 1).
With a :class:`CoreShare`, the driver writes how many training workers it has running into
a file of a machine-wide folder, and each worker, at the start of every epoch, takes
``cores // running workers`` threads (never fewer than its CPUs), adding up every driver's
file on the machine, so that several drivers (``study.py --parallel``) do not oversubscribe
it.

Why only with ``run.deterministic: false``: the number of threads changes the order of
floating-point sums in convolutions and matrix products (20 SGD steps of a small LeNet end
2.4e-6 apart at one and at two threads), and when a fit gets more threads depends on when
the others end. Results then differ in their last digits from run to run.

Only a worker whose training split is held in memory (:mod:`i2m2_ray.training.held`) takes
more threads: one that still streams needs the spare cores for Ray Data's preprocessing.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from i2m2_ray.files import atomic_write_json

# one file per driver, named by its process id
SHARE_DIR = Path(tempfile.gettempdir()) / "i2m2_ray_cores"


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity; else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@dataclass
class CoreShare:
    """The driver's side: how many training workers this driver has running right now."""

    folder: str = str(SHARE_DIR)

    @property
    def path(self) -> Path:
        return Path(self.folder) / f"{os.getpid()}.json"

    def set(self, workers: int) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"pid": os.getpid(), "workers": int(workers)})

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def running_workers(folder: str | Path) -> int:
    """Training workers running on this machine: the sum over the drivers' files whose
    process is alive (a file left by a killed driver is ignored, and removed)."""
    total = 0
    for f in Path(folder).glob("*.json"):
        try:
            entry = json.loads(f.read_text())
            pid, workers = int(entry["pid"]), int(entry["workers"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not ours
        if _alive(pid):
            total += max(0, workers)
        else:
            f.unlink(missing_ok=True)
    return total


def threads_for(base: int, cores: int, workers: int) -> int:
    """The torch threads of one worker: an equal share of the cores among the running
    workers, never fewer than ``base`` (its CPUs)."""
    return max(base, cores // max(1, workers))
