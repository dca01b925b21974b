"""End-to-end: the fastMRI entry point on a local Ray, and through ``ray job submit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, VENV_BIN, RayHead

PARADIGMS = ["unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2"]


def check_outputs(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == PARADIGMS
    for name, m in summary.items():
        for key in ("auroc_mean", "balanced_accuracy_mean", "wall_seconds",
                    "auroc_abnormal", "auroc_acl", "auroc_cartilage", "auroc_mtear"):
            assert key in m, (name, key)
        assert m["wall_seconds"] > 0
        assert (out / "checkpoints" / f"{name}.pt").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fastmri")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["paradigm"] for r in children) == sorted(PARADIGMS)
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert "test_auroc_mean" in child.data.metrics
        assert child.data.tags["dataset"] == "fastmri"
        assert child.data.tags["stage"] in ("components", "products")
        history = client.get_metric_history(child.info.run_id, "val_auroc_mean")
        assert len(history) >= 1
        arts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"checkpoint", "plots"} <= arts


@pytest.mark.slow
def test_fastmri_smoke_on_local_ray(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "experiments/fastmri.py", "--smoke-test", "--output-dir", str(out), "--seed", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Test metrics per paradigm" in proc.stdout and "mlflow ui" in proc.stdout
    check_outputs(out)


@pytest.mark.slow
def test_fastmri_through_ray_job_submit(tmp_path: Path) -> None:
    head = RayHead(num_cpus=4)
    try:
        head.wait_ready()
        out = tmp_path / "out"
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": head.dashboard}
        env.pop("MLFLOW_TRACKING_URI", None)
        proc = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "submit", "--address", head.dashboard,
             "--working-dir", str(REPO),
             "--runtime-env-json", json.dumps({"excludes": [".venv", "outputs", ".git", "*.egg-info"]}),
             "--", "python", "experiments/fastmri.py", "--smoke-test", "--output-dir", str(out)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "succeeded" in proc.stdout
        check_outputs(out)
    finally:
        head.stop()
