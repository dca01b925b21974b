"""The console: Ray's and MLflow's chatter off unless --verbose; a line a minute in a long epoch."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np

from i2m2_ray import console

from .conftest import REPO

# what each process of a run would print, through the loggers and warnings Ray and MLflow use
CHATTER = """
import logging, warnings, sys
from i2m2_ray import console
console.set_verbose({verbose})
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
from ray.train.v2._internal.execution import context
from ray.util.annotations import RayDeprecationWarning
logging.getLogger("ray.data._internal.execution.streaming_executor").info("Dataset ds_0 execution finished")
logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled")
logging.getLogger(context.__file__).info("Reporting training result 1: TrainingReport(...)")
logging.getLogger("mlflow.pyfunc").warning("Passing a Python object as `python_model`")
warnings.warn("exclude_resources is deprecated", RayDeprecationWarning)
logging.getLogger("ray.data._internal.execution.streaming_executor").warning("a task failed: kept")
logging.getLogger("i2m2_ray.data.fastmri").info("fastMRI index: kept")
"""

NOISE = ("execution finished", "Progress bars disabled", "Reporting training result", "python_model", "deprecated")


def said(verbose: bool) -> str:
    code = CHATTER.format(verbose=verbose)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_ray_and_mlflow_chatter_is_off_unless_verbose() -> None:
    quiet = said(False)
    assert not [n for n in NOISE if n in quiet], quiet
    assert "a task failed: kept" in quiet and "fastMRI index: kept" in quiet  # warnings and our own lines stay
    loud = said(True)
    assert all(n in loud for n in NOISE), loud


def test_a_long_epoch_writes_a_line_each_period_and_passes_every_batch_through() -> None:
    batches = [{"x": np.zeros((4, 2))} for _ in range(3)] + [{"x": np.zeros((2, 2))}]
    out = io.StringIO()
    passed = list(console.every_minute(batches, "[inter] epoch 2/30", every_s=0.0, out=out))
    assert passed == batches
    lines = out.getvalue().splitlines()
    assert [line.split(" samples")[0] for line in lines] == [f"[inter] epoch 2/30: {n}" for n in (4, 8, 12, 14)]
    quiet = io.StringIO()
    assert len(list(console.every_minute(batches, "x", every_s=3600.0, out=quiet))) == 4
    assert quiet.getvalue() == ""  # an epoch shorter than the period writes nothing
