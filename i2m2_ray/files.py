"""Files that must never be half-written, and what a run remembers about its data.

Every state, result and checkpoint file is written atomically: to a temporary file in the
same folder, flushed to disk, then renamed over the target (a rename within one file system
is atomic), so a reader (or a resumed run after a crash) sees the old file or the new one,
never a torn one. A state file that is damaged anyway (a disk filled up, a hand edit) is
reported with its path, never as a bare ``JSONDecodeError``.

A data fingerprint is cheap: the names, sizes and modification times of the files a dataset
reads (for a folder, of its files, up to a bound), not their contents; ``--resume`` compares
it with the one saved when the run started.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# files of one data path whose name, size and mtime enter a fingerprint (a deep folder of
# millions of files would otherwise take minutes to list)
FINGERPRINT_MAX_FILES = 20_000


class StateFileError(ValueError):
    """A state or result file cannot be read; the message names the file and what to do."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block
    ends without an error, removed when it fails. The temporary name keeps the suffix, so
    writers that infer the format from it (``savefig``, ``np.savez``) work."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_savez(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """``np.savez`` of ``arrays`` to ``path``, atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str | Path, what: str, remedy: str) -> Any:
    """The JSON in ``path``; a missing, truncated or otherwise unreadable file raises
    :class:`StateFileError` naming it, ``what`` it is and the ``remedy``."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise StateFileError(f"{p}: {what} not found; {remedy}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFileError(f"{p}: {what} is damaged or truncated ({exc}); {remedy}") from None


# --------------------------------------------------------------------------------------
# Data fingerprints
# --------------------------------------------------------------------------------------


def path_fingerprint(path: str | Path, max_files: int = FINGERPRINT_MAX_FILES) -> dict[str, Any]:
    """Names (relative), sizes and modification times of the file ``path`` or of the files
    under the folder ``path`` (walked in name order, at most ``max_files``), as a digest
    with counts: ``{"files", "bytes", "digest", "complete"}``; ``{"missing": true}`` when
    nothing is there."""
    root = Path(path)
    if not root.exists():
        return {"missing": True}
    h = hashlib.sha256()
    files = size = 0
    complete = True

    def add(p: Path, name: str) -> None:
        nonlocal files, size
        st = p.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        files += 1
        size += st.st_size

    if root.is_file():
        add(root, root.name)
    else:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                if files >= max_files:
                    complete = False
                    break
                p = Path(folder) / name
                if p.is_file():
                    add(p, str(p.relative_to(root)))
            if not complete:
                break
    return {"files": files, "bytes": size, "digest": h.hexdigest()[:16], "complete": complete}


def data_fingerprint(paths: Mapping[str, str | Path | None], base: str | Path | None = None) -> dict[str, Any]:
    """The fingerprint of every data path a run reads, keyed by role (``data_dir``,
    ``annotations``, ``sample``): the path as given (relative to ``base`` when it lies
    under it, so that a moved output folder still matches) and its :func:`path_fingerprint`."""
    out: dict[str, Any] = {}
    for role, path in paths.items():
        if path is None:
            continue
        p = Path(path).resolve()
        shown = str(p)
        if base is not None:
            with contextlib.suppress(ValueError):
                shown = str(p.relative_to(Path(base).resolve()))
        out[role] = {"path": shown, **path_fingerprint(p)}
    return out


def describe_fingerprint(fp: Mapping[str, Any]) -> str:
    """``data_dir /d/knee (973 files, 88.1 GB, digest ab12...)`` for every role."""
    parts = []
    for role, f in fp.items():
        if f.get("missing"):
            parts.append(f"{role} {f['path']} (missing)")
            continue
        more = "" if f.get("complete", True) else "+"
        parts.append(f"{role} {f['path']} ({f['files']}{more} files, {f['bytes'] / 1e9:.3g} GB, digest {f['digest']})")
    return "; ".join(parts) or "no data paths"


def fingerprint_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """None when the data match; else what differs, naming both sides."""
    if dict(saved) == dict(current):
        return None
    return f"the run started with {describe_fingerprint(saved)}, and now reads {describe_fingerprint(current)}"
