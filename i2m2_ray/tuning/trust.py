"""Whose sweep is this? ``--resume`` restores a sweep with ``Tuner.restore``, which unpickles
the Tune experiment's files (``tuner.pkl``, the searcher's state): a pickle runs code when
it is loaded. So a sweep records, when it starts, who started it: the owner's uid, a random
token, and an HMAC of both (and of the sweep's name) under a key only that user can read
(``~/.i2m2_ray/sweep.key``, created with mode 0600; ``$I2M2_SWEEP_KEY_FILE`` names another).
A resume checks them, and that no file Tune will unpickle belongs to someone else or can be
written by others; a sweep that fails a check is restored only with ``--trust-storage``.

Storage given as a URI (``s3://``, ``gs://``) has no owner to check: the seal alone decides.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from i2m2_ray.config import ConfigError

KEY_ENV = "I2M2_SWEEP_KEY_FILE"
SEAL_KEYS = ("owner_uid", "token", "seal")
# what Tuner.restore unpickles in the experiment folder (and the trial folders below it)
PICKLED = ("*.pkl",)


class UntrustedSweepError(ConfigError):
    """A sweep to resume was not (provably) written by this user; the message says why and
    names ``--trust-storage``."""


def key_file() -> Path:
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".i2m2_ray" / "sweep.key")


def user_key() -> bytes:
    """This user's sealing key, created (mode 0600) at first use."""
    path = key_file()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by a concurrent command
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _mac(key: bytes, uid: int, token: str, name: str) -> str:
    return hmac.new(key, f"{uid}\0{token}\0{name}".encode(), hashlib.sha256).hexdigest()


def seal(name: str) -> dict[str, Any]:
    """What a starting sweep records in ``sweep.json`` about who started it."""
    uid, token = os.getuid(), secrets.token_hex(16)
    return {"owner_uid": uid, "token": token, "seal": _mac(user_key(), uid, token, name)}


def distrust(state: Mapping[str, Any], name: str, experiment_path: str) -> list[str]:
    """Why the saved sweep ``state`` (with its Tune experiment at ``experiment_path``) may
    not be this user's; empty when every check passes."""
    reasons: list[str] = []
    uid = os.getuid()
    if any(k not in state for k in SEAL_KEYS):
        reasons.append("sweep.json records no owner (written by an older version, or by hand)")
    else:
        if state["owner_uid"] != uid:
            reasons.append(f"sweep.json says uid {state['owner_uid']} started it, not you (uid {uid})")
        expected = _mac(user_key(), int(state["owner_uid"]), str(state["token"]), name)
        if not hmac.compare_digest(expected, str(state["seal"])):
            reasons.append(f"its seal does not match your key ({key_file()}): another user, or another key, wrote it")
    if "://" not in experiment_path:
        root = Path(experiment_path)
        for pattern in PICKLED:
            for path in sorted(root.rglob(pattern)) if root.is_dir() else []:
                st = path.stat()
                if st.st_uid != uid:
                    reasons.append(f"{path} belongs to uid {st.st_uid}")
                elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    reasons.append(f"{path} can be written by others (mode {stat.filemode(st.st_mode)})")
    return reasons


def check_trust(state: Mapping[str, Any], name: str, experiment_path: str, trust: bool, where: Path) -> None:
    """Raise :class:`UntrustedSweepError` unless the sweep passes :func:`distrust`'s checks
    or ``trust`` (``--trust-storage``) says to restore it anyway."""
    reasons = distrust(state, name, experiment_path)
    if reasons and not trust:
        raise UntrustedSweepError(
            f"--resume of the sweep in {where}: {'; '.join(reasons[:5])}. Resuming unpickles the Tune files in "
            f"{experiment_path} (tuner.pkl, the searcher's state), and a pickle runs code when it is loaded: "
            "resume only storage you trust, and say so with --trust-storage"
        )
