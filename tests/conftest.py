"""Shared fixtures: a real local Ray, tiny generated fastMRI samples, config helpers."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2m2_ray.cli.common import smoke_overrides

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent  # the venv running the tests: its ray, mlflow, python

TINY_SAMPLE = dict(volumes=14, slices=4, height=64, width=36, pad_width=40, crop=32, seed=0)
# the entry points' --smoke-test settings (configs/smoke/fastmri.yaml): tiny crop, model and epochs
TINY_OVERRIDES = smoke_overrides("fastmri")


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """An in-process local Ray (its own instance; shut down at the end)."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_fastmri(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from i2m2_ray.data.fastmri_sample import write_sample

    return write_sample(tmp_path_factory.mktemp("fastmri"), **TINY_SAMPLE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_group(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Stop a process started with ``start_new_session=True`` and everything in its group."""
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, served artifacts)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ]
        self.log = open(root / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError("mlflow server not ready")

    def stop(self) -> None:
        kill_group(self.proc)
        self.log.close()


# what `ray job submit` says when the head's dashboard or job agent is not answering yet (a
# loaded machine): nothing was submitted, so the submission is tried again
NOT_UP_YET = ("No available agent", "Failed to establish a new connection", "Failed to connect to Ray")


def submit_job(head: RayHead, *entrypoint: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``ray job submit`` of ``entrypoint`` to ``head``, uploading this checkout with the
    project's runtime_env (data, outputs and venvs left behind), and wait for the job to end.

    The client presents the token the head wrote to ~/.ray/auth_token (RAY_AUTH_MODE=token);
    the job gets no tracking server and no download access (it uses its output folder's
    sqlite store). A head whose dashboard or job agent is still starting on a loaded machine
    answers "No available agent" or refuses the connection (:data:`NOT_UP_YET`): the
    submission is tried again then.
    """
    env = {**os.environ, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", str(REPO)]
    cmd += ["--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--", *entrypoint]
    for _ in range(5):
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        said = proc.stdout + proc.stderr
        if not any(m in said for m in NOT_UP_YET) or "Job '" in said:  # a job that started is never resubmitted
            break
        time.sleep(30)
    return proc


def venv_env() -> dict[str, str]:
    """This environment with the project's venv first on PATH, as for a user who activated
    it: a job's entrypoint ``python ...`` then runs the venv's Python."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class RayHead:
    """A ``ray start --head`` on 127.0.0.1 with its own ports and temp dir; stopping it
    kills only its own process group (never ``ray stop``, which stops every Ray here).

    ``env``: extra environment for the head and any node it adds, e.g. ``RAY_AUTH_MODE`` and
    ``RAY_AUTH_TOKEN_PATH`` for a token of the test's own instead of ~/.ray/auth_token.
    """

    def __init__(self, num_cpus: int = 4, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        # worker port ranges stay below the ephemeral range (32768+) that free_port() draws from.
        # Unix socket paths are limited to ~107 bytes: keep the temp dir short.
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        cmd = [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--dashboard-port={self.dashboard_port}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={num_cpus}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--min-worker-port=20000",
            "--max-worker-port=24999",
        ]
        self.log = open(Path(self.temp_dir) / "head.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env={**venv_env(), **self.env}
        )

    def add_worker_node(self, num_cpus: int = 2, private_dir: Path | None = None) -> None:
        """A second node: ``ray start --address`` in its own process group, with a
        ``second_node`` custom resource.

        ``private_dir``: the node (and every worker it starts) sees its own empty tmpfs
        there, in a mount namespace of its own, as a machine that lacks a mount would: what
        the head writes into that folder, this node cannot see.
        """
        cmd = [
            str(VENV_BIN / "ray"),
            "start",
            "--block",
            f"--address={self.address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            '--resources={"second_node": 1}',
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--min-worker-port=25000",
            "--max-worker-port=29999",
        ]
        if private_dir is not None:
            private_dir.mkdir(parents=True, exist_ok=True)
            mount = f"mount -t tmpfs i2m2-private {shlex.quote(str(private_dir))}"
            cmd = ["unshare", "--mount", "sh", "-c", f"{mount} && exec {shlex.join(cmd)}"]
        self.worker_log = open(Path(self.temp_dir) / "worker.log", "w")  # noqa: SIM115
        # a joining node must present the cluster's token (~/.ray/auth_token) to the GCS
        env = {**venv_env(), "RAY_AUTH_MODE": "token", **self.env}
        self.worker = subprocess.Popen(
            cmd, stdout=self.worker_log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def join_worker_node(self, num_cpus: int = 2, private_dir: Path | None = None, attempts: int = 3) -> None:
        """Add a second node and wait until the cluster counts two alive nodes. Ray gives a
        starting node 30 s to register (not configurable); on a loaded machine that can run
        out, and the node's ``ray start`` exits: it is started again (``attempts`` in all)."""
        for _ in range(attempts):
            self.add_worker_node(num_cpus=num_cpus, private_dir=private_dir)
            deadline = time.time() + 300
            while time.time() < deadline and self.worker.poll() is None and self.alive_nodes() < 2:
                time.sleep(2)
            if self.alive_nodes() == 2:
                return
            kill_group(self.worker)
            self.worker_log.close()
        raise AssertionError(f"the second node did not join: {Path(self.worker_log.name).read_text()[-3000:]}")

    def alive_nodes(self) -> int:
        import json
        import urllib.request

        # the dashboard API wants the cluster's token (token authentication is on)
        token_file = Path(self.env.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        token = self.env.get("RAY_AUTH_TOKEN") or token_file.read_text().strip()
        req = urllib.request.Request(
            f"{self.dashboard}/nodes?view=summary", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                data = json.load(r)
        except OSError:
            return 0  # the dashboard is (re)starting: ask again
        return sum(1 for n in data["data"]["summary"] if n["raylet"]["state"] == "ALIVE")

    def wait_ready(self, timeout: float = 120) -> None:
        import urllib.error
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers (401 without a token): the dashboard is up
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"Ray head not ready: {Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        procs = [p for p in (getattr(self, "worker", None), self.proc) if p is not None]
        for proc in procs:
            kill_group(proc)
        # raylet-spawned workers share the session's process group; sweep any left
        subprocess.run(["pkill", "-9", "-f", self.temp_dir], check=False)
        self.log.close()
        if hasattr(self, "worker_log"):
            self.worker_log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
