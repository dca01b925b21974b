"""A head started the way cluster/ starts its heads (``RAY_AUTH_MODE=token``, the token in a
file of its own) turns away a job submitted without the token or with a wrong one, and runs a
job submitted with it.

The head reads its token from ``RAY_AUTH_TOKEN_PATH`` (a file in the test's temp dir), which
Ray consults before ~/.ray/auth_token: the developer's default token file, which the other
tests' heads use, is neither read nor written here (checked).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, RayHead

ENTRYPOINT = ["python", "-c", "print('ok')"]


@pytest.fixture
def token_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RayHead, Path]]:
    """A head with token authentication on and a fresh token of its own; stopped afterwards."""
    # a token or mode in the developer's shell must not decide which token the head uses
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    token_file = tmp_path / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    head = RayHead(num_cpus=2, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)})
    try:
        head.wait_ready(timeout=300)
        yield head, token_file
    finally:
        head.stop()


def client_env(home: Path, **auth: str) -> dict[str, str]:
    """The environment of a client on another machine: no Ray settings but ``auth``, and a
    home of its own, so no default token file (~/.ray/auth_token) is there to be found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", **auth}


def submit(head: RayHead, env: dict[str, str], submission_id: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", head.dashboard, "--submission-id", submission_id]
    for _ in range(5):
        proc = subprocess.run([*cmd, "--", *ENTRYPOINT], env=env, capture_output=True, text=True, timeout=600)
        # a head whose job agent is still starting, or whose dashboard did not answer the
        # version check in time, on a loaded machine: try again
        said = proc.stdout + proc.stderr
        if "No available agent" not in said and "Failed to connect to Ray at address" not in said:
            break
        time.sleep(30)
    return proc


def get_json(url: str, token: str | None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.mark.slow
def test_job_submission_needs_the_token(token_head: tuple[RayHead, Path], tmp_path: Path) -> None:
    head, token_file = token_head
    token = token_file.read_text()
    real_default = Path.home() / ".ray" / "auth_token"
    before = real_default.stat() if real_default.exists() else None
    home = tmp_path / "client-home"
    home.mkdir()

    # no token at all: the dashboard answers 401 and `ray job submit` stops with an AuthenticationError
    none = submit(head, client_env(home), "no-token")
    out = none.stdout + none.stderr
    assert none.returncode != 0, out[-3000:]
    assert "AuthenticationError" in out and "Unauthorized" in out, out[-3000:]

    # a wrong token: 403
    wrong = submit(head, client_env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32)), "wrong")
    out = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0, out[-3000:]
    assert "AuthenticationError" in out and "Invalid authentication token" in out, out[-3000:]

    # the token, from the file RAY_AUTH_TOKEN_PATH names, as cluster/README.md tells a client
    ok = submit(head, client_env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file)), "with-token")
    out = ok.stdout + ok.stderr
    assert ok.returncode == 0, out[-3000:]
    assert "ok" in ok.stdout.splitlines(), out[-3000:]

    # the job API itself: nothing without the token; with it, only the authenticated job, SUCCEEDED
    status, _ = get_json(f"{head.dashboard}/api/jobs/", None)
    assert status == 401
    status, jobs = get_json(f"{head.dashboard}/api/jobs/", token)
    assert status == 200, jobs
    assert isinstance(jobs, list)
    assert {j["submission_id"]: j["status"] for j in jobs} == {"with-token": "SUCCEEDED"}

    # the token is in no log or file the head wrote, and the default token file is untouched
    leaks = [
        p
        for p in Path(head.temp_dir).rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 50_000_000 and token.encode() in p.read_bytes()
    ]
    assert not leaks, leaks
    assert not (home / ".ray" / "auth_token").exists()  # no client made or used a default token
    after = real_default.stat() if real_default.exists() else None
    assert (before is None) == (after is None)
    if before is not None and after is not None:
        assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)
