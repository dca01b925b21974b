"""The scripts on a real local Ray (this machine: CPUs only): a GPU config runs scaled to the
CPUs, an explicit ask that can never fit stops within seconds, a wait for resources that
never come ends, bad data fails once, a finished output folder is never touched without
--overwrite, --resume checks its data and names damaged files, the local Ray listens on
127.0.0.1 only, and the sweep that used to hang on 2 cores finishes.

Runs are shared (one AV-MNIST run with the real config serves most tests) and at smoke
sizes; every script starts and stops its own local Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow

# the real AV-MNIST config (configs/avmnist.yaml: use_gpu true, 4 CPUs per worker) at a
# smoke size: one epoch, the two unimodal models; none of these overrides is a placement key
SMALL = ["--set", "train.epochs=1", "--set", "product.epochs=1", "--set", "run.paradigms=[unimodal]"]


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        e.pop(key, None)
    return e


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    listening: list[str]  # addresses the script's processes listened on while it trained

    @property
    def said(self) -> str:
        return self.stdout + self.stderr


def listening_addresses(root: int) -> list[str]:
    """Local addresses (``ip:port``) on which ``root`` or a process below it listens (TCP)."""
    from .test_reliability import descendants

    pids = {root, *descendants(root)}
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            found.append(line.split()[3])
    return found


def script(*args: str, timeout: float = 900, watch: str | None = None) -> Run:
    """Run ``python <args>`` in the repository; with ``watch``, record the listening sockets
    of its process tree once that text has appeared in its output."""
    t0 = time.perf_counter()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fit-the-machine-{os.getpid()}-{time.time_ns()}.log"
    with log.open("w") as out, (log.with_suffix(".err")).open("w") as err:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env(), stdout=out, stderr=err, text=True)
        listening: list[str] = []
        try:
            while proc.poll() is None:
                if time.perf_counter() - t0 > timeout:
                    proc.kill()
                    raise AssertionError(f"{args} ran past {timeout} s: {log.read_text()[-3000:]}")
                if watch and not listening and watch in log.read_text():
                    time.sleep(3)  # the workers and Ray Data are up
                    listening = listening_addresses(proc.pid)
                time.sleep(1)
        finally:
            proc.wait(60)
    stdout, stderr = log.read_text(), log.with_suffix(".err").read_text()
    log.unlink()
    log.with_suffix(".err").unlink()
    return Run(proc.returncode, stdout, stderr, time.perf_counter() - t0, listening)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: name -> (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@dataclass
class Finished:
    data: Path  # the AV-MNIST folder (MultiBench layout)
    out: Path  # the run's output folder
    run: Run


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """``experiments/avmnist.py --data-dir D`` with the real config on this CPU-only machine."""
    from i2m2_ray.data.avmnist_sample import write_sample

    tmp = tmp_path_factory.mktemp("avmnist")
    data = write_sample(tmp / "avmnist", train=240, test=80, seed=0)
    out = tmp / "out"
    run = script("experiments/avmnist.py", "--data-dir", str(data), "--output-dir", str(out), *SMALL, watch="stage 1")
    assert run.returncode == 0, run.said[-5000:]
    print(f"AV-MNIST, real config, scaled to the CPUs: {run.wall_s:.0f} s")
    return Finished(data, out, run)


def test_a_gpu_config_runs_scaled_to_the_cpus_and_records_what_ran(finished: Finished) -> None:
    said = finished.run.stdout
    assert "placement: run.use_gpu: true -> false (the cluster has no GPU)" in said
    assert "placement: run.cpus_per_worker: 4 -> 1 (the largest node's CPUs, less 1 for Ray Data)" in said
    assert list(json.loads((finished.out / "summary.json").read_text())) == ["unimodal_image", "unimodal_audio"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{finished.out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("avmnist").experiment_id])
    assert len(runs) == 3  # the parent and the two models
    for r in runs:  # the params say what trained, not what the file asked
        assert (r.data.params["run.use_gpu"], r.data.params["run.cpus_per_worker"]) == ("false", "1.0")
        assert r.data.params["placement"].startswith("run.use_gpu: true -> false (the cluster has no GPU); ")
    state = json.loads((finished.out / "pipeline.json").read_text())
    assert state["config"]["run"]["use_gpu"] is False and state["data"]["data_dir"]["files"] == 6


def test_the_local_ray_listens_on_127_0_0_1_only(finished: Finished) -> None:
    addresses = finished.run.listening
    assert len(addresses) >= 5, addresses  # GCS, raylet, object manager, workers, agents, dashboard
    hosts = {a.rsplit(":", 1)[0] for a in addresses}
    assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, addresses


def test_an_explicit_ask_that_can_never_fit_stops_within_seconds(finished: Finished, tmp_path: Path) -> None:
    data = ["--data-dir", str(finished.data), "--output-dir", str(tmp_path / "o")]
    gpu = script("experiments/avmnist.py", *data, "--use-gpu", *SMALL, timeout=120)
    assert gpu.returncode == 2 and gpu.wall_s < 60, (gpu.wall_s, gpu.said[-3000:])
    assert "error: run.use_gpu=true asks for a GPU per worker, but the cluster has" in gpu.stderr
    assert "0 GPU(s)" in gpu.stderr and "--no-use-gpu" in gpu.stderr
    many = script("experiments/avmnist.py", *data, "--num-workers", "3", *SMALL, timeout=120)
    assert many.returncode == 2 and many.wall_s < 60, (many.wall_s, many.said[-3000:])
    assert "error: run.num_workers=3 x run.cpus_per_worker=1 asks for 3 CPUs, but only" in many.stderr
    assert "Started a local Ray" not in many.said  # refused before Ray started
    assert not (tmp_path / "o").exists()
    print(f"--use-gpu refused in {gpu.wall_s:.1f} s, --num-workers 3 in {many.wall_s:.1f} s")


def test_a_run_into_a_finished_folder_changes_nothing(finished: Finished) -> None:
    before = snapshot(finished.out)
    cmd = ["experiments/avmnist.py", "--data-dir", str(finished.data), "--output-dir", str(finished.out)]
    again = script(*cmd, *SMALL)
    assert again.returncode == 2 and again.wall_s < 60, (again.wall_s, again.said[-3000:])
    assert f"error: {finished.out} holds a finished run" in again.stderr
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    assert snapshot(finished.out) == before  # every earlier file: same names, sizes, mtimes


def test_resume_with_other_data_is_refused_naming_both(finished: Finished, tmp_path: Path) -> None:
    other = shutil.copytree(finished.data, tmp_path / "avmnist2")
    out = shutil.copytree(finished.out, tmp_path / "out")  # the run, moved
    run = script("experiments/avmnist.py", "--data-dir", str(other), "--output-dir", str(out), "--resume", *SMALL)
    assert run.returncode == 2, run.said[-3000:]
    assert "--resume: the data differ" in run.stderr
    assert f"started with data_dir {finished.data} (6 files" in run.stderr
    assert f"now reads data_dir {other} (6 files" in run.stderr


def test_damaged_state_and_checkpoint_files_are_named(finished: Finished, tmp_path: Path) -> None:
    out = shutil.copytree(finished.out, tmp_path / "moved")  # checkpoints resolve in the moved folder
    state = out / "pipeline.json"
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])
    cmd = ["experiments/avmnist.py", "--data-dir", str(finished.data), "--output-dir", str(out), "--resume", *SMALL]
    run = script(*cmd, timeout=120)
    assert run.returncode == 2 and f"error: {state}: the state of the run to resume is damaged" in run.stderr
    assert "Started a local Ray" not in run.said
    state.write_bytes(whole)
    ckpt = out / "checkpoints" / "unimodal_image.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    run = script(*cmd)
    assert run.returncode == 2, run.said[-3000:]
    assert f"error: {ckpt}: not a readable weights-only checkpoint (" in run.stderr
    assert "weights_only=False" not in run.said and "delete" in run.stderr


@pytest.mark.faults
def test_a_wait_for_resources_that_never_come_ends(tmp_path: Path) -> None:
    """Two workers that must sit on two different nodes, on a one-node Ray: the plan cannot
    know (it counts CPUs), Ray would wait forever; run.resource_timeout_s ends it."""
    run = script(
        "experiments/fastmri.py", "--smoke-test", "--output-dir", str(tmp_path / "o"),
        "--num-workers", "2", "--set", "run.cpus_per_worker=0.5", "--set", "run.placement_strategy=STRICT_SPREAD",
        "--set", "run.resource_timeout_s=20", "--set", "run.paradigms=[unimodal]",
    )  # fmt: skip
    assert run.returncode == 2, run.said[-4000:]
    assert "did not get their resources within run.resource_timeout_s=20 s" in run.stderr
    assert "placement STRICT_SPREAD" in run.stderr and "restarting" not in run.stdout
    print(f"a wait that never ends ended after {run.wall_s:.0f} s in all")


@pytest.mark.faults
def test_overwrite_starts_afresh_and_bad_data_fails_once_with_its_own_message(
    finished: Finished, tmp_path: Path
) -> None:
    """``--overwrite`` onto the finished run with a copy of its data in which one image holds
    a value no image can: the earlier results and Ray Train runs go, a new run starts, and it
    fails once (no restart, no Ray Data retry) with the reader's message naming the row. (One
    run checks both: a pipeline costs minutes on 2 cores.)"""
    out = shutil.copytree(finished.out, tmp_path / "out")
    old_id = json.loads((out / "pipeline.json").read_text())["id"]
    bad = shutil.copytree(finished.data, tmp_path / "bad")
    image = np.load(bad / "image" / "train_data.npy")
    image[5, 3] = 300.0
    np.save(bad / "image" / "train_data.npy", image)
    run = script("experiments/avmnist.py", "--data-dir", str(bad), "--output-dir", str(out), "--overwrite", *SMALL)
    assert f"--overwrite: removed {out / 'summary.json'}" in run.stdout, run.said[-4000:]
    assert json.loads((out / "pipeline.json").read_text())["id"] != old_id
    assert not list((out / "ray_results").glob(f"*-{old_id}"))  # the earlier Ray Train run went too
    assert not (out / "summary.json").exists()
    assert run.returncode == 2, run.said[-4000:]
    assert "'image' row 5 holds 300.0; expected values 0-255" in run.stderr
    assert "restarting" not in run.stdout  # no Ray Train restart
    # Ray Data prints its retry advice on any failure; the attempts it made are what count
    attempts = re.findall(r"Failed to apply UDF transform after (\d+)/(\d+) attempts", run.stderr)
    assert attempts and all(a == ("1", "1") for a in attempts), attempts
