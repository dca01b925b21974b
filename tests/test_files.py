"""Atomic writes (a failed writer leaves the old file whole, no temporary behind) and data
fingerprints (names, sizes, mtimes; bounded; paths relative to the output folder)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from i2m2_ray.files import (
    StateFileError,
    atomic_path,
    atomic_savez,
    atomic_write_json,
    data_fingerprint,
    fingerprint_mismatch,
    path_fingerprint,
    read_json,
)


def test_an_atomic_write_replaces_the_file_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "state" / "pipeline.json"
    atomic_write_json(target, {"id": "a"})
    assert read_json(target, "state", "") == {"id": "a"}
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text('{"id": "half')  # the writer dies mid-file
        raise RuntimeError("disk full")
    assert read_json(target, "state", "") == {"id": "a"}  # the old file, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["pipeline.json"]
    atomic_savez(tmp_path / "r_test.npz", {"labels__y": np.arange(3)})
    with np.load(tmp_path / "r_test.npz") as z:
        assert z["labels__y"].tolist() == [0, 1, 2]
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # a format-from-suffix writer works
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_a_damaged_state_file_is_named_with_the_remedy(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    path.write_text('{"id": "ab", "con')  # truncated
    with pytest.raises(StateFileError, match=r"pipeline.json: the state is damaged or truncated .*; use --overwrite"):
        read_json(path, "the state", "use --overwrite")
    with pytest.raises(StateFileError, match=r"missing.json: the state not found"):
        read_json(tmp_path / "missing.json", "the state", "")


def test_a_fingerprint_sees_names_sizes_and_times_of_the_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "image").mkdir(parents=True)
    (data / "image" / "train.npy").write_bytes(b"x" * 10)
    (data / "labels.npy").write_bytes(b"y" * 4)
    first = path_fingerprint(data)
    assert (first["files"], first["bytes"], first["complete"]) == (2, 14, True)
    assert path_fingerprint(data) == first  # cheap and stable: nothing is read
    (data / "labels.npy").write_bytes(b"y" * 5)
    assert path_fingerprint(data) != first  # size
    grown = path_fingerprint(data)
    st = (data / "labels.npy").stat()
    os.utime(data / "labels.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert path_fingerprint(data) != grown  # modification time
    (data / "labels.npy").rename(data / "labels2.npy")
    assert path_fingerprint(data)["digest"] != grown["digest"]  # name
    assert path_fingerprint(data, max_files=1)["complete"] is False  # bounded
    assert path_fingerprint(tmp_path / "nothing") == {"missing": True}
    assert path_fingerprint(data / "image" / "train.npy")["files"] == 1  # a file


def test_a_moved_output_folder_keeps_its_fingerprint_and_a_mismatch_names_both(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sample_data").mkdir(parents=True)
    (out / "sample_data" / "a.h5").write_bytes(b"1234")
    fp = data_fingerprint({"sample": out / "sample_data", "annotations": None}, base=out)
    assert fp["sample"]["path"] == "sample_data" and "annotations" not in fp
    moved = tmp_path / "moved"
    out.rename(moved)
    assert data_fingerprint({"sample": moved / "sample_data"}, base=moved) == fp
    assert fingerprint_mismatch(fp, fp) is None
    other = tmp_path / "d2"
    other.mkdir()
    now = data_fingerprint({"data_dir": other}, base=moved)
    message = fingerprint_mismatch(fp, now)
    assert message is not None
    assert "started with sample sample_data (1 files" in message and f"now reads data_dir {other} (0 files" in message
