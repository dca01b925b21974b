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
def test_plugin_dataset_runs_end_to_end_in_a_study_of_two_seeds_at_once(tmp_path: Path) -> None:
    """``experiments/study.py --parallel 2`` over the toy plugin: two seeds' pipelines at once
    (each its own local Ray), each output in its seed's run.log, then the comparison."""
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "I2M2_PLUGINS", "PYTHONPATH"):
        env.pop(key, None)  # the plugin is found through --plugin and the current directory alone
    cmd = [sys.executable, "experiments/study.py", "--experiment", "toy", "--seeds", "0", "1", "--parallel", "2"]
    cmd += ["--output-dir", str(out), "--plugin", "tests.toy_dataset", "--config", "tests/toy_demo.yaml"]
    cmd += ["--smoke-test", "--noise", "0.4"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    logs = {s: (out / f"seed{s}" / "run.log").read_text() for s in (0, 1) if (out / f"seed{s}" / "run.log").is_file()}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + "".join(v[-3000:] for v in logs.values())
    assert "seed 0: started" in proc.stdout and "seed 1: started" in proc.stdout
    for s, log in logs.items():
        assert "no smoke settings for 'toy'" in log  # none shipped: the config runs as it is
        assert "'noise': 0.4" in log  # the dataset's own flag reached data.options
        assert "Test metrics per paradigm" in log and "balanced_accuracy" in log  # report.metrics
        summary = json.loads((out / f"seed{s}" / "summary.json").read_text())
        assert list(summary) == PARADIGMS
        for name, metrics in summary.items():
            assert 0.0 <= metrics["accuracy"] <= 1.0 and (out / f"seed{s}" / "checkpoints" / f"{name}.pt").is_file()
        assert summary["i2m2"]["accuracy"] > 0.5  # chance: 0.25 (4 balanced classes)
    assert sorted(logs) == [0, 1]
    comparison = json.loads((out / "comparison.json").read_text())
    assert sorted(comparison["models"]) == sorted(PARADIGMS)
    assert "i2m2 minus each model over 2 seeds" in proc.stdout


def test_unknown_experiment_and_plugin_are_named(tmp_path: Path) -> None:
    """Before Ray starts: exit status 2 and the known names, or the module that failed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "I2M2_PLUGINS")}
    base = [sys.executable, "experiments/run.py", "--output-dir", str(tmp_path)]
    proc = subprocess.run([*base, "--experiment", "toy"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown experiment 'toy'; known: ['avmnist', 'fastmri'" in proc.stderr
    missing = [*base, "--experiment", "toy", "--plugin", "tests.no_such_toy"]
    proc = subprocess.run(missing, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot import plugin module 'tests.no_such_toy'" in proc.stderr
