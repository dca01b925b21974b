"""Losing a worker, losing the driver, and a dead tracking server lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from i2m2_ray import tracking
from i2m2_ray.training.launch import FitResult

from .conftest import REPO, TINY_OVERRIDES, MlflowServer, free_port, kill_group

PARADIGMS = ["unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2"]


def descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def fit_inter(tmp: Path, tiny: tuple[Path, Path], name: str, max_failures: int, *extra: str) -> FitResult:
    from i2m2_ray.config import load_config
    from i2m2_ray.data import fastmri
    from i2m2_ray.training.launch import FitRequest, fit

    settings = ["train.epochs=4", "train.patience=10", "run.seed=3", f"run.max_failures={max_failures}"]
    cfg = load_config(None, [*TINY_OVERRIDES, *settings, *extra])
    data = fastmri.prepare(cfg, *tiny)
    req = FitRequest.from_config(
        cfg,
        data,
        "inter",
        storage_path=str(tmp / "storage"),
        checkpoint_path=tmp / f"{name}.pt",
        run_name=name,
    )
    return fit(req)


@pytest.fixture(scope="module")
def undisturbed(
    ray_local: None, tiny_fastmri: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> FitResult:
    """One undisturbed fit of the inter model (seed 3, 4 epochs), the reference of the tests
    below (a fit costs ~30 s on 2 cores). One restart is allowed, as a user's run.max_failures
    allows it: CI once saw Ray's TrainController process die 5 s into this fit (SYSTEM_ERROR, no
    kill of ours), after ~40 min of the session's Ray; a restart before the first checkpoint
    starts the run over (the same model); one after it resumes, and the comparison below says
    whether that reproduced the model."""
    return fit_inter(tmp_path_factory.mktemp("undisturbed"), tiny_fastmri, "undisturbed", 1)


@pytest.mark.slow
@pytest.mark.faults
def test_worker_killed_mid_run_resumes_from_last_checkpoint(
    undisturbed: FitResult, tiny_fastmri: tuple[Path, Path], tmp_path: Path
) -> None:
    baseline = undisturbed
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        run_dir = tmp_path / "storage" / "disturbed"
        deadline = time.time() + 300
        while time.time() < deadline and not list(run_dir.glob("checkpoint_*")):
            time.sleep(0.2)
        time.sleep(0.5)  # into the next epoch
        # the local Ray of this test process is our child: its train worker is among our descendants
        for pid in descendants(os.getpid()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "RayTrainWorker" in cmdline:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    disturbed = fit_inter(tmp_path, tiny_fastmri, "disturbed", max_failures=1)
    killer.join(5)
    assert killed, "no training worker was found to kill"
    # the restarted worker continued from a checkpoint: same epochs, one history entry each
    assert disturbed.epochs_run == baseline.epochs_run == 4
    assert [h["epoch"] for h in disturbed.history] == [1, 2, 3, 4]
    assert abs(disturbed.test["auroc_mean"] - baseline.test["auroc_mean"]) < 0.15
    print(
        f"worker loss: baseline auroc_mean {baseline.test['auroc_mean']:.4f}, "
        f"after kill {disturbed.test['auroc_mean']:.4f}, epochs {disturbed.epochs_run}"
    )


@pytest.mark.slow
def test_the_same_seed_gives_the_same_model(
    undisturbed: FitResult, tiny_fastmri: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two fits with one seed read the same batches in the same order (run.deterministic):
    every epoch's validation metrics and the test metrics agree to the last digit."""
    first = undisturbed
    again = fit_inter(tmp_path, tiny_fastmri, "again", 1)
    assert len(first.history) == len(again.history) == 4
    for a, b in zip(first.history, again.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_auroc_mean"] == b["val_auroc_mean"], (a, b)
    assert first.test == again.test


@pytest.mark.slow
def test_a_held_training_split_changes_the_order_from_the_second_epoch_only(
    undisturbed: FitResult, tiny_fastmri: tuple[Path, Path], tmp_path: Path
) -> None:
    """The reference fit holds its small training split after epoch 1 (train.in_memory_mb):
    epoch 1 streams as a run that never holds it does (same loss, same validation); from
    epoch 2 the held rows are drawn in another seeded order, so the losses part."""
    streamed = fit_inter(tmp_path, tiny_fastmri, "streamed", 1, "train.in_memory_mb=0")
    first, second = undisturbed.history, streamed.history
    assert first[0]["train_loss"] == second[0]["train_loss"]
    assert first[0]["val_auroc_mean"] == second[0]["val_auroc_mean"]
    assert first[1]["train_loss"] != second[1]["train_loss"]


@pytest.mark.slow
def test_a_fit_alone_takes_the_idle_cores_once_its_split_is_held(
    ray_local: None, tiny_fastmri: tuple[Path, Path], tmp_path: Path
) -> None:
    """With a core share (a local Ray, run.deterministic: false), a fit running alone takes
    every core of the machine from the epoch its training split is held (epoch 2); epoch 1,
    which streams, keeps its one CPU's thread. The driver's count is gone afterwards."""
    from i2m2_ray.config import load_config
    from i2m2_ray.data import fastmri
    from i2m2_ray.training.cores import CoreShare, machine_cores
    from i2m2_ray.training.launch import FitRequest, fit_concurrently

    cfg = load_config(None, [*TINY_OVERRIDES, "train.epochs=2", "run.seed=3", "run.deterministic=false"])
    req = FitRequest.from_config(
        cfg,
        fastmri.prepare(cfg, *tiny_fastmri),
        "unimodal_magnitude",
        storage_path=str(tmp_path / "storage"),
        checkpoint_path=tmp_path / "alone.pt",
    )
    share = CoreShare(str(tmp_path / "cores"))
    req.loop.core_share = share.folder
    ((key, result),) = list(fit_concurrently({"alone": req}, share=share))
    assert isinstance(result, FitResult), result
    assert [h["torch_threads"] for h in result.history] == [1.0, float(machine_cores())]
    assert not share.path.exists()


def run_script(out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen(
        [sys.executable, "experiments/fastmri.py", "--smoke-test", "--output-dir", str(out), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_driver_loss_and_dead_tracking_server_lose_nothing(tmp_path: Path) -> None:
    """On real files at their real size (fastMRI volumes of 640 rows, ~368 columns, zero-filled
    to 400 and cropped to 320, as configs/fastmri.yaml says; ``--smoke-test`` with ``--data-dir``
    runs every stage tiny, configs/smoke/fastmri_real.yaml): the driver dies once the first
    models have finished, ``--resume`` reuses them while the tracking server is down, then the
    saved results are uploaded."""
    from i2m2_ray.data.fastmri_sample import write_sample

    # 8 volumes of the real size, 3 slices each (the real ones hold ~35): the smoke settings
    # take the first 6 usable ones, so a 7th and 8th are there to be left out
    data_dir, ann_dir = write_sample(
        tmp_path / "real", volumes=8, slices=3, height=640, width=368, pad_width=400, crop=320, seed=0
    )
    data = ["--data-dir", str(data_dir), "--annotations", str(ann_dir)]
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": dead}
    env.pop("RAY_ADDRESS", None)
    # 1. the driver dies once the first models have finished
    proc = run_script(out, env, *data)
    deadline = time.time() + 900
    while time.time() < deadline and not list((out / "results").glob("*.json")):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.5)
    finished_before = sorted(p.stem for p in (out / "results").glob("*.json"))
    assert finished_before
    kill_group(proc)
    # 2. --resume: finished models are reused, the rest trained; tracking failure is reported
    done = subprocess.run(
        [sys.executable, "experiments/fastmri.py", "--smoke-test", "--output-dir", str(out), "--resume", *data],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, log
    for name in finished_before:
        assert f"{name}: finished earlier, reusing" in done.stdout
    assert "MLflow tracking failed" in done.stdout and "upload" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == PARADIGMS
    assert all((out / "checkpoints" / f"{n}.pt").is_file() for n in PARADIGMS)
    assert all("auroc_mean" in m and m["wall_seconds"] > 0 for m in summary.values())
    # the real sizes are kept: k-space zero-filled to 400, 320 x 320 crops, 6 volumes of 8
    assert "'inputs': {'magnitude': [1, 320, 320], 'phase': [1, 320, 320]}" in done.stdout, log
    assert "'volumes': 6" in done.stdout and "'train_volumes': 4" in done.stdout, log
    from i2m2_ray.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / "checkpoints" / "i2m2.pt", paradigm="i2m2")
    settings = ckpt["config"]["data"]
    assert (settings["crop_size"], settings["pad_width"], settings["max_volumes"]) == (320, 400, 6)
    assert ckpt["config"]["run"]["use_gpu"] is False and ckpt["config"]["model"]["width"] == 4
    # 3. the server is back: upload the saved results
    server = MlflowServer(tmp_path / "mlflow")
    try:
        server.wait_ready()
        up = subprocess.run(
            [sys.executable, "-m", "i2m2_ray.tracking", "upload", str(out), "--tracking-uri", server.uri],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("fastmri")
        runs = client.search_runs([exp.experiment_id])
        assert sorted(r.data.tags.get("paradigm", "") for r in runs if r.data.tags.get("paradigm")) == sorted(PARADIGMS)
        assert all(r.info.status == "FINISHED" for r in runs)
        for r in runs:
            if r.data.tags.get("paradigm"):
                assert "test_auroc_mean" in r.data.metrics
                assert len(client.get_metric_history(r.info.run_id, "val_auroc_mean")) >= 1
        # every model is an MLflow model on its child run: I2M2's loads and predicts its example
        import mlflow

        kids = {r.data.tags["paradigm"]: r.info.run_id for r in runs if r.data.tags.get("paradigm")}
        for name, run_id in kids.items():
            assert "model" in [a.path for a in client.list_artifacts(run_id)] or any(
                m.source_run_id == run_id for m in client.search_logged_models([exp.experiment_id])
            ), f"{name}: no MLflow model on its uploaded run"
        mlflow.set_tracking_uri(server.uri)
        try:
            model = mlflow.pyfunc.load_model(f"runs:/{kids['i2m2']}/model")
            probs = model.predict(model.input_example)
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        probs = probs[[c for c in probs.columns if c.startswith("prob_")]].to_numpy()
        assert probs.shape[0] == 2 and ((probs >= 0) & (probs <= 1)).all(), probs
        # the experiment's saved view compares the uploaded run's children
        tags = client.get_experiment(exp.experiment_id).tags
        view = json.loads(tags[tracking.VIEW_TAG_PREFIX + tracking.COMPARISON_VIEW])
        found = client.search_runs([exp.experiment_id], json.loads(view["state"])["searchFilter"])
        assert sorted(r.info.run_id for r in found) == sorted(kids.values())
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.faults
def test_a_damaged_epoch_checkpoint_falls_back_to_the_one_before(
    ray_local: None, tiny_fastmri: tuple[Path, Path], tmp_path: Path
) -> None:
    """Ray Train keeps two checkpoints of a run: when the latest no longer loads (a full disk
    truncated it), the resumed run starts from the one before; when none loads, the error
    names the latest file, at once (no restart: it would fail alike)."""
    from i2m2_ray.training.checkpoint import CheckpointError

    first = fit_inter(tmp_path, tiny_fastmri, "damaged", 0)
    kept = sorted((tmp_path / "storage" / "damaged").glob("checkpoint_*/model.pt"))
    assert len(kept) == 2, kept  # the last epoch's and the final one
    latest = kept[-1]
    latest.write_bytes(latest.read_bytes()[:100])
    again = fit_inter(tmp_path, tiny_fastmri, "damaged", 1)  # the same run name: resumes
    assert again.epochs_run == first.epochs_run == 4 and len(again.history) == 4
    for path in sorted((tmp_path / "storage" / "damaged").glob("checkpoint_*/model.pt")):
        path.write_bytes(path.read_bytes()[:100])
    newest = sorted((tmp_path / "storage" / "damaged").glob("checkpoint_*/model.pt"))[-1]
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"{newest.parent.name}/model.pt: not a readable weights-only") as caught:
        fit_inter(tmp_path, tiny_fastmri, "damaged", 1)
    assert "no earlier checkpoint of this run can be read either" in str(caught.value)
    assert "weights_only=False" not in str(caught.value)
    print(f"no readable checkpoint: failed after {time.perf_counter() - t0:.0f} s")
