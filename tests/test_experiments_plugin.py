"""A dataset added from outside the package (docs/adding-a-dataset.md): the toy module of
``tests/toy_dataset.py`` and its config, loaded with ``--plugin`` by the generic entry
point, run end to end on a real local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PARADIGMS = ["unimodal_left", "unimodal_right", "inter", "intra", "i2m2"]


@pytest.mark.slow
def test_plugin_dataset_runs_end_to_end_on_local_ray(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "I2M2_PLUGINS", "PYTHONPATH"):
        env.pop(key, None)  # the plugin is found through --plugin and the current directory alone
    cmd = [sys.executable, "experiments/run.py", "--experiment", "toy", "--plugin", "tests.toy_dataset"]
    cmd += ["--config", "tests/toy_demo.yaml", "--smoke-test", "--noise", "0.4", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "no smoke settings for 'toy'" in proc.stderr  # none shipped: the config runs as it is
    assert "'noise': 0.4" in proc.stdout  # the dataset's own flag reached data.options
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == PARADIGMS
    for name, metrics in summary.items():
        assert 0.0 <= metrics["accuracy"] <= 1.0 and (out / "checkpoints" / f"{name}.pt").is_file(), name
    assert summary["i2m2"]["accuracy"] > 0.5  # chance: 0.25 (4 balanced classes)
    assert "Test metrics per paradigm" in proc.stdout and "balanced_accuracy" in proc.stdout  # report.metrics


def test_unknown_experiment_and_plugin_are_named(tmp_path: Path) -> None:
    """Before Ray starts: exit status 2 and the known names, or the module that failed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "I2M2_PLUGINS")}
    base = [sys.executable, "experiments/run.py", "--output-dir", str(tmp_path)]
    proc = subprocess.run([*base, "--experiment", "toy"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown experiment 'toy'; known: ['avmnist', 'fastmri'" in proc.stderr
    missing = [*base, "--experiment", "toy", "--plugin", "tests.no_such_toy"]
    proc = subprocess.run(missing, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot import plugin module 'tests.no_such_toy'" in proc.stderr
