"""Where a command writes: ``--output-dir`` or its default, and a submitted Ray job's case.

``ray job submit --working-dir .`` runs the command in a temporary copy of the working
directory, under the Ray session's ``runtime_resources`` folder on the head node, which
Ray deletes with the session: a relative path there (the default ``outputs/<experiment>``
among them) would leave the results and the sqlite MLflow store where nobody finds them
and nothing keeps them. So under a submitted job the default becomes
``~/i2m2_ray_outputs/<experiment>`` on the head node (``$I2M2_OUTPUT_ROOT/<experiment>``
when that is set), said in one line, and a relative ``--output-dir`` or
``--storage-path`` is refused, naming an absolute one to pass.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from i2m2_ray.config import ConfigError

# what Ray's job supervisor sets for every submitted job's driver (Ray 2.60,
# dashboard/modules/job/job_supervisor.py: the job's runtime_env and metadata, with the
# submission id under "job_submission_id")
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
OUTPUT_ROOT_ENV = "I2M2_OUTPUT_ROOT"
DEFAULT_JOB_ROOT = "i2m2_ray_outputs"  # under the home folder of the head node's user


def submitted_job(environ: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> str | None:
    """The submission id when this process is the driver of a ``ray job submit`` (``"a Ray
    job"`` when the id is unknown), else None.

    Two signs, either enough: the job config Ray's job supervisor puts in the driver's
    environment, and a working directory inside a Ray session's ``runtime_resources``
    folder (where the job's copy of ``--working-dir`` is unpacked).
    """
    env = os.environ if environ is None else environ
    raw = env.get(JOB_CONFIG_ENV)
    if raw:
        try:
            metadata = json.loads(raw).get("metadata") or {}
        except (ValueError, AttributeError):
            metadata = {}
        return str(metadata.get("job_submission_id") or "a Ray job")
    parts = Path(cwd if cwd is not None else os.getcwd()).resolve().parts
    if "runtime_resources" in parts:
        at = parts.index("runtime_resources")
        if at > 0 and parts[at - 1].startswith("session_"):
            return "a Ray job"
    return None


def job_output_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    root = env.get(OUTPUT_ROOT_ENV)
    return Path(root).expanduser() if root else Path.home() / DEFAULT_JOB_ROOT


def resolve_output_dir(
    given: str | None,
    experiment: str,
    storage_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Path:
    """The absolute output folder of a command (``--output-dir``, or its default).

    Raises:
        ConfigError: under a submitted job, ``given`` or ``storage_path`` is a relative
            local path (it would resolve inside the job's temporary copy).
    """
    job = submitted_job(environ, cwd)
    base = Path(cwd) if cwd is not None else Path.cwd()
    if job is not None:
        root = job_output_root(environ)
        for flag, value in (("--output-dir", given), ("--storage-path", storage_path)):
            if value is not None and "://" not in value and not Path(value).expanduser().is_absolute():
                raise ConfigError(
                    f"{flag} {value} is a relative path, and this command runs as Ray job {job} in a temporary "
                    f"copy of the working directory that Ray deletes: pass an absolute path, e.g. "
                    f"{flag} {root / experiment}"
                )
        if given is None:
            out = (root / experiment).resolve()
            print(
                f"note: running as Ray job {job}, whose working directory is a temporary copy; results go to "
                f"{out} on this node (choose with --output-dir)",
                flush=True,
            )
            return out
    path = Path(given).expanduser() if given is not None else Path("outputs") / experiment
    return (path if path.is_absolute() else base / path).resolve()


def mlflow_command() -> str:
    """``mlflow`` beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.is_file() else "mlflow"
