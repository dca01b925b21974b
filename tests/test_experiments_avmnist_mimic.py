"""End-to-end: the MIMIC entry point on a local Ray and repeated from its MLflow run, the
AV-MNIST one through ``ray job submit`` (``--smoke-test``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, RayHead, submit_job


def run_smoke(script: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(script, "--smoke-test", "--output-dir", str(out), "--seed", "1", *extra)


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def check_outputs(
    out: Path, experiment: str, paradigms: list[str], head: str, metrics: list[str], checkout: bool = True
) -> None:
    """summary.json, checkpoints and the MLflow parent/child runs of one pipeline."""
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == paradigms
    for name, m in summary.items():
        for key in [*metrics, *(f"{k}_{head}" for k in metrics), "wall_seconds"]:
            assert key in m, (name, key)
        assert 0.0 <= m["accuracy"] <= 1.0 and m["wall_seconds"] > 0
        assert (out / "checkpoints" / f"{name}.pt").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1
    # repeatable: the resolved config, the command line, the code and package versions
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert artifacts >= {"config.yaml", "summary.json", "comparison.csv", "comparison.md"}
    assert (out / "config.yaml").is_file()
    # the comparison a person opens: a row per model, the main metric with its interval
    import csv

    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["model"] for r in rows] == paradigms
    for r in rows:
        low, value, high = (float(r[k]) for k in (f"{metrics[0]}_ci_low", metrics[0], f"{metrics[0]}_ci_high"))
        assert 0.0 <= low <= high <= 1.0 and 0.0 <= value <= 1.0, r
    # the parent holds the report's metrics per paradigm, not every test metric
    assert f"i2m2.{metrics[0]}" in parents[0].data.metrics
    assert not any(k.endswith(("_ece", ".ece", ".brier")) for k in parents[0].data.metrics)
    tags = parents[0].data.tags
    assert tags["command"].startswith(f"python experiments/{experiment}.py") and tags["version.ray"]
    if checkout:  # run from this git checkout (a submitted job runs in a copy without .git)
        assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["paradigm"] for r in children) == sorted(paradigms)
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert child.data.tags["dataset"] == experiment
        assert f"test_{metrics[0]}" in child.data.metrics and f"test_{metrics[0]}_{head}" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, f"val_{metrics[0]}")) >= 1
        assert {"checkpoint", "plots"} <= {a.path for a in client.list_artifacts(child.info.run_id)}


@pytest.mark.slow
def test_mimic_smoke_on_local_ray(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_smoke("experiments/mimic.py", out, "--task", "icd9_1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Test metrics per paradigm" in proc.stdout
    paradigms = ["unimodal_static", "unimodal_timeseries", "inter", "intra", "i2m2"]
    check_outputs(out, "mimic", paradigms, "icd9_1", ["auroc", "auprc", "accuracy"])
    assert (out / "sample_data" / "im.pk").is_file() and (out / "sample_data" / "im.npz").is_file()
    # the same run again from what MLflow holds (no --smoke-test, --seed or --task given), its
    # two unimodal models (an explicit --set overrides the run's config): in deterministic mode
    # (the default) they give the same test metrics, exactly
    parent = json.loads(proc.stdout.strip().splitlines()[-1])["parent_run_id"]
    again = run_script(
        "experiments/mimic.py", "--from-run", parent, "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}",
        "--output-dir", str(tmp_path / "again"), "--set", "run.paradigms=[unimodal]",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    first, second = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "again"))
    assert list(first) == paradigms and list(second) == paradigms[:2]
    for name in paradigms[:2]:
        assert second[name]["auroc"] == first[name]["auroc"] and second[name]["accuracy"] == first[name]["accuracy"]


@pytest.mark.slow
def test_avmnist_through_ray_job_submit(tmp_path: Path) -> None:
    """The AV-MNIST entry point submitted with ``ray job submit`` to a running head (token
    authentication on): the job succeeds and leaves its sample, summary, checkpoints and runs
    (MIMIC's runs on a local Ray, above)."""
    head = RayHead(num_cpus=4)
    try:
        head.wait_ready()
        out = tmp_path / "avmnist"
        proc = submit_job(head, "python", "experiments/avmnist.py", "--smoke-test", "--output-dir", str(out))
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "succeeded" in proc.stdout and "f1_macro" in proc.stdout
        paradigms = ["unimodal_image", "unimodal_audio", "inter", "intra", "i2m2"]
        metrics = ["accuracy", "f1_macro", "balanced_accuracy"]
        check_outputs(out, "avmnist", paradigms, "digit", metrics, checkout=False)
        assert (out / "sample_data" / "audio" / "train_data.npy").is_file()
    finally:
        head.stop()
