"""End-to-end runs of the fastMRI entry point: on a local Ray against a real MLflow
tracking server, and through ``ray job submit`` to a two-node cluster on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from i2m2_ray import tracking

from .conftest import REPO, MlflowServer, RayHead, submit_job

PARADIGMS = ["unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2"]


def check_outputs(
    out: Path, tracking_uri: str, paradigms: list[str] = PARADIGMS, robustness: bool = False
) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = json.loads((out / "summary.json").read_text())
    assert list(summary) == paradigms
    for name, m in summary.items():
        for key in (
            "auroc_mean",
            "balanced_accuracy_mean",
            "wall_seconds",
            "auroc_abnormal",
            "auroc_acl",
            "auroc_cartilage",
            "auroc_mtear",
        ):
            assert key in m, (name, key)
        assert m["wall_seconds"] > 0
        assert (out / "checkpoints" / f"{name}.pt").is_file()
        # stage 3: calibration, intervals, each modality missing and noisy
        assert 0 <= m["ece_mean"] <= 1 and 0 <= m["brier_mean"] <= 2, name
        assert 0 <= m["auroc_mean_ci_low"] <= m["auroc_mean_ci_high"] <= 1, name
        for modality in ("magnitude", "phase") if robustness else ():
            assert 0 <= m[f"missing.{modality}.auroc_mean"] <= 1, (name, modality)
            assert f"robustness.{modality}.relative_auroc_mean" in m, (name, modality)
            assert f"robustness.{modality}.effective_auroc_mean" in m, (name, modality)
    if robustness:
        # known answers: a unimodal expert given only the training mean of its modality predicts one
        # value for every slice (AUROC 0.5 on each label); without the other modality it is unchanged
        alone = summary["unimodal_magnitude"]
        assert alone["missing.magnitude.auroc_mean"] == 0.5
        assert alone["missing.phase.auroc_mean"] == pytest.approx(alone["auroc_mean"])
        assessment = json.loads((out / "assessment.json").read_text())
        assert sorted(assessment["robustness"]) == sorted(paradigms)
        curve = assessment["robustness"]["i2m2"]["noise"]["phase"]
        assert curve["levels"] == [0.0, 0.5, 1.0]
        assert curve["metrics"][0]["auroc_mean"] == pytest.approx(summary["i2m2"]["auroc_mean"])  # level 0: clean
        for fig in ("robustness_magnitude.png", "robustness_phase.png", "comparison_auroc_mean.png"):
            assert (out / "plots" / fig).stat().st_size > 1000, fig
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("fastmri")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["paradigm"] for r in children) == sorted(paradigms)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "i2m2.auroc_mean" in parent.data.metrics
    # no secret reaches MLflow: the Ray auth token appears in no param or tag
    token_file = Path.home() / ".ray" / "auth_token"
    token = token_file.read_text().strip() if token_file.is_file() else ""
    for r in runs:
        values = [*r.data.params.values(), *r.data.tags.values()]
        assert not token or all(token not in v for v in values)
        assert not any("token" in k.lower() for k in [*r.data.params, *r.data.tags])
    for child in children:
        assert "test_auroc_mean" in child.data.metrics
        assert child.data.tags["dataset"] == "fastmri"
        assert child.data.tags["stage"] in ("components", "products")
        assert len(client.get_metric_history(child.info.run_id, "val_auroc_mean")) >= 1
        arts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"checkpoint", "plots"} <= arts
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert f"plots/reliability_{child.data.tags['paradigm']}_acl.png" in plots
        assert "test_ece_mean" in child.data.metrics
        assert not robustness or "test_missing.phase.auroc_mean" in child.data.metrics
    parent_plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/comparison_auroc_mean.png" in parent_plots
    assert any(p.startswith("plots/curves_") for p in parent_plots), parent_plots  # ROC and PR per label
    assert not robustness or "plots/robustness_magnitude.png" in parent_plots
    assert "i2m2.auroc_mean_ci_low" in parent.data.metrics
    return summary


@pytest.mark.slow
def test_fastmri_on_local_ray_with_tracking_server(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "mlflow")
    try:
        server.wait_ready()
        out = tmp_path / "out"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": server.uri}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run(
            [
                sys.executable,
                "experiments/fastmri.py",
                "--smoke-test",
                "--output-dir",
                str(out),
                "--seed",
                "1",
                "--set",
                "evaluation.inter_extended=true",
                "--set",
                "evaluation.robustness=true",
            ],  # fmt: skip
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "Test metrics per paradigm" in proc.stdout and f"MLflow:  open {server.uri}" in proc.stdout
        # the printed page is the experiment's saved view of this run's models
        assert "viewStateShareKey=i2m2-paradigms&compareRunsMode=CHART" in proc.stdout
        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("fastmri")
        view = json.loads(exp.tags[tracking.VIEW_TAG_PREFIX + tracking.COMPARISON_VIEW])
        parent = json.loads((out / "pipeline.json").read_text())["parent_run_id"]
        shown = client.search_runs([exp.experiment_id], json.loads(view["state"])["searchFilter"])
        assert sorted(r.data.tags["paradigm"] for r in shown) == sorted([*PARADIGMS, "inter_extended"])
        assert {r.data.tags["mlflow.parentRunId"] for r in shown} == {parent}
        # a console a person reads: Ray's and MLflow's chatter stays off (back with --verbose)
        said = proc.stdout + proc.stderr
        noise = ("Reporting training result", "execution finished", "Progress bars disabled", "RayDeprecationWarning")
        noisy = [line for line in said.splitlines() if any(n in line for n in noise)]
        assert not noisy, noisy
        print(f"console: {len(said.splitlines())} lines")
        models = [*PARADIGMS[:3], "inter_extended", *PARADIGMS[3:]]
        summary = check_outputs(out, server.uri, models, robustness=True)
        # the control: the fitted inter expert trained on for the products' epochs
        assert summary["inter_extended"]["best_epoch"] >= 0
        assert "stage 2: training ['intra', 'i2m2', 'inter_extended']" in proc.stdout
        assert not (out / "mlflow.db").exists()  # everything went to the server
        # artifacts were uploaded through the server into its artifact store
        assert list((tmp_path / "mlflow" / "artifacts").rglob("i2m2.pt"))
    finally:
        server.stop()


def submit(head: RayHead, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` of the fastMRI smoke test to ``head``, blocking until it ends."""
    return submit_job(head, "python", "experiments/fastmri.py", "--smoke-test", "--output-dir", str(out), *extra)


@pytest.mark.slow
@pytest.mark.single_node
def test_fastmri_job_submit_to_a_local_head(tmp_path: Path) -> None:
    """``ray job submit`` of the tiny pipeline to a ``ray start --head`` on 127.0.0.1 (token
    authentication on): the job succeeds, summary.json and the MLflow runs exist; only the
    head started here is stopped. (``make test`` runs it only where the two-node test, which
    checks all of this on a head with a second node, cannot run.)"""
    head = RayHead(num_cpus=4)
    try:
        head.wait_ready()
        out = tmp_path / "out"
        proc = submit(head, out)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "succeeded" in proc.stdout
        check_outputs(out, f"sqlite:///{out / 'mlflow.db'}")
    finally:
        head.stop()
    assert head.proc.poll() is not None  # the head is gone


@pytest.mark.slow
@pytest.mark.multinode
def test_fastmri_job_submit_to_two_node_cluster(tmp_path: Path) -> None:
    head = RayHead(num_cpus=4)
    hidden = tmp_path / "not_shared"  # the second node mounts its own empty folder here
    try:
        head.wait_ready()
        head.join_worker_node(num_cpus=2, private_dir=hidden)
        # 1. an output folder that the second node cannot see fails at start, with the reason
        bad = submit(head, hidden / "out", "--num-workers", "2")
        assert bad.returncode != 0
        said = bad.stdout + bad.stderr
        assert f"error: {hidden / 'out'}/ray_results is a local path that node" in said, said[-3000:]
        assert "stage 1" not in bad.stdout  # no training started
        # 2. a folder both nodes see: DDP over two workers, one on each node
        out = tmp_path / "out"
        proc = submit(
            head,
            out,
            "--num-workers",
            "2",
            "--set",
            "run.placement_strategy=STRICT_SPREAD",
            "--set",
            "run.cpus_per_worker=0.5",
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "succeeded" in proc.stdout
        failed = [line for line in proc.stdout.splitlines() if "MLflow tracking failed" in line]
        assert not failed, failed
        summary = check_outputs(out, f"sqlite:///{out / 'mlflow.db'}")
        assert all(m["num_nodes"] == 2 for m in summary.values())
    finally:
        head.stop()
