"""Checks and row reads for datasets stored as NumPy arrays (AV-MNIST, MIMIC-III).

The driver only checks headers and builds a small index (row number + labels per sample);
the arrays are memory-mapped and read row by row inside Ray Data ``map_batches`` tasks, so
nothing large passes through the driver or the object store. No torch here: Ray Data
workers import this module.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.data.base import DataError

# dtype kinds accepted as numbers: signed / unsigned integers, floats (and bool for flags)
NUMERIC_KINDS = "iuf"
FLAG_KINDS = "biuf"
_KIND_NAMES = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float"}


def open_npy(path: str | Path, field: str) -> np.ndarray:
    """Memory-map a ``.npy`` file (only its header is read).

    Raises:
        DataError: the file is missing, is not a ``.npy`` array, or holds Python objects.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected {field})")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{p}: {field} cannot be read as a numeric .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive opens as NpzFile
        raise DataError(f"{p}: {field} is an .npz archive; expected a single .npy array")
    return arr


def check_array(
    arr: np.ndarray, where: str, field: str, shape: Sequence[int | None], kinds: str = NUMERIC_KINDS
) -> None:
    """Check rank, trailing sizes (``None`` matches any) and dtype kind of one array.

    Raises:
        DataError: naming ``where`` (the file), ``field`` and what was expected.
    """
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
        raise DataError(f"{where}: '{field}' has shape {tuple(arr.shape)}; expected {expected}")
    if arr.dtype.kind not in kinds:
        allowed = " or ".join(_KIND_NAMES[k] for k in kinds)
        raise DataError(f"{where}: '{field}' has dtype {arr.dtype}; expected {allowed} numbers")


def check_counts(counts: Mapping[str, int], where: str) -> int:
    """All arrays of one split must hold the same number of samples; return it."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise DataError(f"{where}: sample counts differ between modalities and labels ({listed})")
    return next(iter(counts.values()))


def integer_labels(values: np.ndarray, where: str, field: str, low: int, high: int) -> np.ndarray:
    """Integer class ids from an int or float array; floats must be whole numbers.

    Returns:
        ``(N,)`` int64 in ``[low, high]``.
    """
    v = np.asarray(values)
    if v.dtype.kind == "f":
        bad = ~np.isfinite(v) | (v != np.round(v))
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise DataError(
                f"{where}: '{field}' holds {v.ravel()[i].item()!r} at row {i}; expected whole class numbers"
            )
    out = v.astype(np.int64).reshape(-1)
    outside = (out < low) | (out > high)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(f"{where}: '{field}' holds {out[i]} at row {i}; expected classes {low}..{high}")
    return out


def binary_flags(values: np.ndarray, where: str, field: str) -> np.ndarray:
    """0/1 flags (bool, int or float 0./1.) as a boolean array of the same shape."""
    v = np.asarray(values)
    bad = ~np.isin(v, (0, 1))
    if bad.any():
        idx = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), v.shape)
        raise DataError(
            f"{where}: '{field}' holds {v[idx].item()!r} at index {tuple(int(i) for i in idx)}; expected 0 or 1"
        )
    return v.astype(bool)


def read_rows(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` for a memory-mapped array, reading the rows in file order.

    Args:
        arr: ``(N, ...)`` array (typically ``np.load(..., mmap_mode="r")``).
        rows: ``(B,)`` row numbers, any order.
    Returns:
        ``(B, ...)`` in-memory copy, in the order of ``rows``.
    """
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
    out[order] = arr[rows[order]]
    return out


def file_fingerprint(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Path, size and modification time of each file (to tell when a cache is stale)."""
    out = []
    for p in paths:
        st = p.stat()
        out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def marker_matches(marker: Path, wanted: Mapping[str, Any]) -> bool:
    """Whether a JSON marker file records exactly ``wanted``."""
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()) == json.loads(json.dumps(wanted)))
    except (OSError, ValueError):
        return False


def write_marker(marker: Path, content: Mapping[str, Any]) -> None:
    """Write a JSON marker atomically (a reader never sees half a file)."""
    tmp = marker.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True))
    os.replace(tmp, marker)


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name, then rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    os.replace(tmp, path)


def is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)
