"""Smoke runs of the vision-language entry points (``experiments/vqa.py``,
``experiments/nlvr2.py``) on a local Ray: generated Arrow sample, tiny random transformers,
every paradigm, every test set in summary.json and MLflow. Nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2m2_ray.data.vqa import OOD_SETS

from .conftest import REPO, RayHead, submit_job

PARADIGMS = ["unimodal_image", "unimodal_text", "inter", "intra", "i2m2"]


def run_smoke(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, f"experiments/{script}.py", "--smoke-test", "--output-dir", str(out), "--seed", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Test metrics per paradigm" in proc.stdout
    return proc


def child_metrics(out: Path, experiment: str) -> dict[str, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    return {r.data.tags["paradigm"]: r.data.metrics for r in runs if "paradigm" in r.data.tags}


def check_vqa_outputs(out: Path) -> None:
    """Every paradigm scored on the IID set and the nine OOD sets, with stage 3 on each."""
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == PARADIGMS
    sets = [f"ood_{k}" for k in OOD_SETS]
    for name, m in summary.items():
        for key in ["vqa_score", "ood_mean_vqa_score", *(f"{s}_vqa_score" for s in sets)]:
            assert key in m and 0.0 <= m[key] <= 1.0, (name, key)
        # stage 3 on the IID test split and on every OOD set: calibration and intervals
        for prefix in ["", *(f"{s}_" for s in sets)]:
            low, high = m[f"{prefix}vqa_score_ci_low"], m[f"{prefix}vqa_score_ci_high"]
            assert low <= m[f"{prefix}vqa_score"] <= high, (name, prefix, low, high)
            assert 0.0 <= m[f"{prefix}ece"] <= 1.0 and 0.0 <= m[f"{prefix}brier"] < float("inf"), (name, prefix)
        assert not any(k.startswith("ood_mean_") and k.endswith(("_ci_low", "_ci_high")) for k in m)
        # a modality missing or noisy, on the IID set and on every OOD set
        for modality in ("image", "text"):
            for prefix in ["", "ood_mean_", *(f"{s}_" for s in sets)]:
                assert 0.0 <= m[f"missing.{modality}.{prefix}vqa_score"] <= 1.0, (name, modality, prefix)
                assert 0.0 <= m[f"robustness.{modality}.relative_{prefix}vqa_score"] <= 1.0, (name, modality, prefix)
    children = child_metrics(out, "vqa")
    assert sorted(children) == sorted(PARADIGMS)
    for m in children.values():
        assert {"test_vqa_score", "test_ood_kw_ko_vqa_score", "test_ood_mean_vqa_score"} <= set(m)
        assert {"test_ood_kw_ko_vqa_score_ci_low", "test_ood_kw_ko_ece"} <= set(m)
    assert (out / "tokenizer.json").is_file() and (out / "checkpoints" / "i2m2.pt").is_file()


@pytest.mark.slow
def test_nlvr2_smoke(tmp_path: Path) -> None:
    out = tmp_path / "nlvr2"
    run_smoke("nlvr2", out)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == PARADIGMS
    for name, m in summary.items():
        assert 0.0 <= m["accuracy"] <= 1.0, name
    assert "test_accuracy" in child_metrics(out, "nlvr2")["i2m2"]


@pytest.mark.slow
def test_vqa_through_ray_job_submit(tmp_path: Path) -> None:
    """``ray job submit`` to a running cluster (one node here), as on a real one: every
    paradigm, every test set, stage 3 on each, missing and noisy modalities included (the
    VQA-VS pipeline's one end-to-end run; NLVR2's runs on a local Ray)."""
    head = RayHead(num_cpus=4)
    try:
        head.wait_ready()
        out = tmp_path / "out"
        proc = submit_job(
            head, "python", "experiments/vqa.py", "--smoke-test", "--output-dir", str(out),
            "--set", "evaluation.robustness=true",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "succeeded" in proc.stdout and "Test metrics per paradigm" in proc.stdout
        check_vqa_outputs(out)
    finally:
        head.stop()
