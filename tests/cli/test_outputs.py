"""Where a command writes under ``ray job submit``: the job is detected from what Ray sets
for a job's driver, its default output folder is durable, and a relative path is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i2m2_ray.cli.outputs import JOB_CONFIG_ENV, resolve_output_dir, submitted_job
from i2m2_ray.config import ConfigError

JOB_ENV = {JOB_CONFIG_ENV: json.dumps({"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_abc"}})}


def test_a_submitted_job_is_told_by_its_environment_or_its_working_directory(tmp_path: Path) -> None:
    assert submitted_job(JOB_ENV, tmp_path) == "raysubmit_abc"
    assert submitted_job({JOB_CONFIG_ENV: "{not json"}, tmp_path) == "a Ray job"
    copy = tmp_path / "session_2026-12-01_15-00-00_1_2" / "runtime_resources" / "working_dir_files" / "_ray_pkg_x"
    copy.mkdir(parents=True)
    assert submitted_job({}, copy) == "a Ray job"
    assert submitted_job({}, tmp_path) is None
    assert submitted_job({}, tmp_path / "runtime_resources") is None  # not under a Ray session


def test_under_a_job_the_default_is_durable_and_a_relative_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**JOB_ENV, "I2M2_OUTPUT_ROOT": str(tmp_path / "durable")}
    out = resolve_output_dir(None, "avmnist", environ=env, cwd=tmp_path / "copy")
    assert out == tmp_path / "durable" / "avmnist"
    said = capsys.readouterr().out
    assert "running as Ray job raysubmit_abc" in said and f"results go to {out}" in said
    with pytest.raises(ConfigError, match=r"--output-dir runs/x is a relative path, and this command runs as Ray job"):
        resolve_output_dir("runs/x", "avmnist", environ=env, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"--storage-path ray is a relative path.* e.g. --storage-path /"):
        resolve_output_dir("/abs/out", "avmnist", storage_path="ray", environ=env, cwd=tmp_path)
    assert resolve_output_dir("/abs/out", "avmnist", storage_path="s3://b/r", environ=env) == Path("/abs/out")
    # no job: the relative default and relative paths resolve against the working directory
    assert resolve_output_dir(None, "avmnist", environ={}, cwd=tmp_path) == tmp_path / "outputs" / "avmnist"
    assert resolve_output_dir("runs/x", "avmnist", environ={}, cwd=tmp_path) == tmp_path / "runs" / "x"
    default_root = resolve_output_dir(None, "mimic", environ=JOB_ENV, cwd=tmp_path)
    assert default_root == Path.home() / "i2m2_ray_outputs" / "mimic"
