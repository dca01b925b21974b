import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.data.base import DataError, data_error_from, label_column
from i2m2_ray.data.fastmri import (
    LABELS,
    SlicePreprocessor,
    build_index,
    finding_to_label,
    image_to_modalities,
    inspect_volume,
    kspace_to_image,
    prepare,
    read_annotations,
    volume_split,
)
from i2m2_ray.data.fastmri_sample import write_sample

from ..conftest import TINY_OVERRIDES, TINY_SAMPLE


@pytest.mark.parametrize(
    "finding,target",
    [
        ("ACL High Grade Sprain", "acl"),
        ("ACL Low-Mod Grade Sprain", "acl"),
        ("Meniscus Tear", "mtear"),
        ("Cartilage - Partial Thickness loss/defect", "cartilage"),
        ("cartilage - full thickness", "cartilage"),
        ("Joint Effusion ", "abnormal"),  # the real file's trailing space
        ("Displaced Meniscal Tissue", "abnormal"),  # meniscal, but not "Meniscus Tear"
        ("Bone-Subchondral edema", "abnormal"),
    ],
)
def test_finding_to_label(finding: str, target: str) -> None:
    assert finding_to_label(finding) == target


def write_annotations(root: Path, rows: list[list[str]], listed: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "knee.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "slice", "study_level", "x", "y", "width", "height", "label"])
        w.writerows(rows)
    (root / "knee_file_list.csv").write_text("\n".join(listed) + "\n\n")
    return root


def test_read_annotations_handwritten(tmp_path: Path) -> None:
    root = write_annotations(
        tmp_path / "Annotations",
        [
            ["file1000001", "3", "No", "1", "2", "3", "4", "Joint Effusion "],
            ["file1000001", "3", "No", "1", "2", "3", "4", "ACL High Grade Sprain"],
            ["file1000001", "5", "No", "1", "2", "3", "4", "Meniscus Tear"],
            ["file1000002", "", "Yes", "", "", "", "", "artifact"],
            ["file1000002", "0", "No", "1", "2", "3", "4", "Cartilage - Full Thickness loss/defect"],
        ],
        ["file1000001", "file1000002", "file1000003"],
    )
    ann = read_annotations(root)
    assert ann.reviewed == ["file1000001", "file1000002", "file1000003"]
    assert ann.skipped_list_lines == 1
    assert ann.study_level_rows == 1
    assert ann.positives == {
        ("file1000001", 3): {"abnormal", "acl"},
        ("file1000001", 5): {"mtear"},
        ("file1000002", 0): {"cartilage"},
    }


def test_annotation_naming_unlisted_volume_is_an_error(tmp_path: Path) -> None:
    root = write_annotations(tmp_path / "A", [["file9", "0", "No", "", "", "", "", "Meniscus Tear"]], ["file1"])
    with pytest.raises(DataError, match=r"knee.csv, line 2: volume 'file9' is labelled but not listed"):
        read_annotations(root)


def test_annotations_missing_column_is_named(tmp_path: Path) -> None:
    root = tmp_path / "A"
    root.mkdir()
    (root / "knee.csv").write_text("file,slice,label\nfile1,0,ACL\n")
    (root / "knee_file_list.csv").write_text("file1\n")
    with pytest.raises(DataError, match=r"knee.csv: missing column\(s\) \['study_level'"):
        read_annotations(root)


def test_kspace_to_image_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(2, 12, 7)) + 1j * rng.normal(size=(2, 12, 7))).astype(np.complex64)
    out = kspace_to_image(k, pad_width=10, crop=6)
    # reference: explicit zero-fill (left pad (10-7)//2 = 1), centred ortho inverse FFT, crop
    padded = np.zeros((2, 12, 10), dtype=np.complex128)
    padded[:, :, 1:8] = k
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(padded, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    ref = img[:, 3:9, 2:8]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    mods = image_to_modalities(out)
    assert mods["magnitude"].shape == (2, 1, 6, 6) and mods["phase"].shape == (2, 1, 6, 6)
    np.testing.assert_allclose(mods["phase"][:, 0], np.angle(ref) / np.pi, atol=1e-5)
    np.testing.assert_allclose(mods["magnitude"].mean(axis=(-2, -1)), 0, atol=1e-5)


@pytest.mark.parametrize("shape,pad,crop", [((2, 12, 7), 10, 6), ((1, 11, 7), 10, 5), ((3, 16, 9), 13, 8)])
def test_kspace_to_image_even_and_odd_sizes_match_the_shifts(shape: tuple[int, int, int], pad: int, crop: int) -> None:
    # even sizes take the sign-flip path, odd ones the plain shifts: both equal the reference
    rng = np.random.default_rng(1)
    k = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    h, w = shape[1:]
    padded = np.zeros((shape[0], h, pad), dtype=np.complex128)
    padded[:, :, (pad - w) // 2 : (pad - w) // 2 + w] = k
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(padded, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    top, left = (h - crop) // 2, (pad - crop) // 2
    out = kspace_to_image(k, pad_width=pad, crop=crop)
    assert out.dtype == np.complex64 and out.shape == (shape[0], crop, crop)
    np.testing.assert_allclose(out, img[:, top : top + crop, left : left + crop], rtol=1e-5, atol=1e-6)


def test_signed_kspace_gives_the_same_image() -> None:
    from i2m2_ray.data.fastmri import kspace_signs

    rng = np.random.default_rng(2)
    k = (rng.normal(size=(2, 12, 7)) + 1j * rng.normal(size=(2, 12, 7))).astype(np.complex64)
    signed = np.zeros((2, 12, 10), dtype=np.complex64)
    signed[:, :, 1:8] = k * kspace_signs(12, 7, 1)
    np.testing.assert_allclose(
        kspace_to_image(signed, pad_width=10, crop=6, signed=True), kspace_to_image(k, 10, 6), rtol=1e-5, atol=1e-6
    )


def test_point_in_image_centre_is_flat_kspace() -> None:
    # a delta at the centre pixel has constant-magnitude k-space; inverting recovers it
    img = np.zeros((8, 8), dtype=np.complex64)
    img[4, 4] = 1
    from i2m2_ray.data.fastmri_sample import image_to_kspace

    k = image_to_kspace(img, 8)
    np.testing.assert_allclose(np.abs(k), 1 / 8, rtol=1e-5)
    back = kspace_to_image(k[None], pad_width=8, crop=8)[0]
    np.testing.assert_allclose(np.abs(back), np.abs(img), atol=1e-6)


def test_volume_split_is_the_public_codes_two_sklearn_splits() -> None:
    from sklearn.model_selection import train_test_split

    ids = [f"file{1000000 + i}" for i in range(40)]
    a = volume_split(ids, [0.7, 0.15, 0.15], seed=0)
    assert [len(a[s]) for s in ("train", "val", "test")] == [28, 6, 6]
    assert set(a["train"]).isdisjoint(a["val"]) and set(a["val"]).isdisjoint(a["test"])
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    # the public code: test_size 0.3, random_state 0; then 0.5: first part test, second val
    train, rest = train_test_split(sorted(ids), test_size=0.3, random_state=0)
    test, val = train_test_split(rest, test_size=0.5, random_state=0)
    assert a == {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    assert a == volume_split(list(reversed(ids)), [0.7, 0.15, 0.15], seed=0)  # order does not matter
    assert a != volume_split(ids, [0.7, 0.15, 0.15], seed=1)
    # 0.3 x 10 is whole: exactly 3 held out (1 - 0.7 in floating point would take 4)
    assert [len(v) for v in volume_split(ids[:10], [0.7, 0.15, 0.15], 0).values()] == [7, 2, 1]


def test_volume_split_ignores_run_seed_and_hash_seed(ray_local: None, tiny_fastmri: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    data_dir, ann_dir = tiny_fastmri
    splits = []
    for seed in (0, 7):
        prepared = prepare(load_config(None, [*TINY_OVERRIDES, f"run.seed={seed}"]), data_dir, ann_dir)
        splits.append({k: prepared.info[f"{k}_volumes"] for k in ("train", "val", "test")})
        assert prepared.info["split_seed"] == 0
    assert splits[0] == splits[1]
    code = (
        "from i2m2_ray.data.fastmri import volume_split;"
        "names = list({f'file{1000000 + i}' for i in range(60)});"  # a set's order follows the hash seed
        "print(volume_split(names, [0.7, 0.15, 0.15], 0))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": h, "PATH": ""}, capture_output=True, text=True
        ).stdout
        for h in ("1", "2")
    }
    assert len(outputs) == 1 and "train" in outputs.pop()


def test_generator_writes_the_real_layout(tiny_fastmri: tuple[Path, Path]) -> None:
    data_dir, ann_dir = tiny_fastmri
    with h5py.File(data_dir / "file1000000.h5") as f:
        assert set(f.keys()) == {"kspace", "reconstruction_rss", "reconstruction_esc", "ismrmrd_header"}
        assert f["kspace"].dtype == np.complex64 and f["kspace"].shape[:2] == (4, 64)
        assert f["reconstruction_rss"].dtype == np.float32 and f["reconstruction_rss"].shape == (4, 32, 32)
        assert b"ismrmrdHeader" in f["ismrmrd_header"][()]
        assert set(f.attrs) == {"acquisition", "max", "norm", "patient_id"}
        assert f.attrs["acquisition"] in ("CORPD_FBK", "CORPDFS_FBK")
    text = (ann_dir / "knee.csv").read_text()
    assert "Joint Effusion ," in text or "Joint Effusion \n" in text or "artifact" in text


def test_reader_round_trips_generator(tiny_fastmri: tuple[Path, Path]) -> None:
    data_dir, ann_dir = tiny_fastmri
    cfg = load_config(None, TINY_OVERRIDES)
    rows, info = build_index(cfg, data_dir, ann_dir)
    # 14 volumes: file..11 is wider than pad_width, file..9 is not reviewed
    assert info["skipped_wide_volumes"] == 1
    assert info["volumes"] == 12
    assert len(rows) == 12 * 4
    # the index's positives are exactly the csv's slice-level rows
    expected: set[tuple[str, int, str]] = set()
    with (ann_dir / "knee.csv").open() as fh:
        for r in csv.DictReader(fh):
            if r["study_level"] == "No" and r["file"] != "file1000011":
                expected.add((r["file"], int(r["slice"]), finding_to_label(r["label"])))
    got = {(r["volume"], r["slice"], h) for r in rows for h in LABELS if r[label_column(h)]}
    assert got == expected
    # the preprocessed magnitude matches the stored reconstruction (same place, same shape)
    prep = SlicePreprocessor(pad_width=40, crop=32)
    batch = {k: np.array([r[k] for r in rows[:4]]) for k in rows[0]}
    out = prep(batch)
    with h5py.File(rows[0]["path"]) as f:
        rss = f["reconstruction_rss"][:4]
    for s in range(4):
        corr = np.corrcoef(out["magnitude"][s, 0].ravel(), rss[s].ravel())[0, 1]
        assert corr > 0.9


def test_prepare_builds_streaming_datasets(ray_local: None, tiny_fastmri: tuple[Path, Path]) -> None:
    data_dir, ann_dir = tiny_fastmri
    cfg = load_config(None, TINY_OVERRIDES)
    prepared = prepare(cfg, data_dir, ann_dir)
    assert sum(prepared.sizes.values()) == 48
    batch = next(iter(prepared.datasets["val"].iter_batches(batch_size=4, batch_format="numpy")))
    assert batch["magnitude"].shape == (4, 1, 32, 32) and batch["magnitude"].dtype == np.float32
    assert batch[label_column("acl")].dtype == np.int64
    assert prepared.class_counts["acl"][0] + prepared.class_counts["acl"][1] == prepared.sizes["train"]


# ---- bad input ---------------------------------------------------------------------


def copy_sample(tmp_path: Path) -> tuple[Path, Path]:
    return write_sample(tmp_path / "s", **{**TINY_SAMPLE, "volumes": 8})


def test_missing_hdf5_is_named(tmp_path: Path) -> None:
    data_dir, ann_dir = copy_sample(tmp_path)
    (data_dir / "file1000002.h5").unlink()
    with pytest.raises(DataError, match=r"1 listed volume\(s\) not found .*file1000002"):
        build_index(load_config(None, TINY_OVERRIDES), data_dir, ann_dir)
    cfg = load_config(None, [*TINY_OVERRIDES, "data.options={skip_absent_volumes: true}"])
    rows, info = build_index(cfg, data_dir, ann_dir)
    assert info["absent_volumes"] == 1


def test_corrupt_hdf5_is_named(tmp_path: Path) -> None:
    data_dir, ann_dir = copy_sample(tmp_path)
    path = data_dir / "file1000003.h5"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(DataError, match=r"file1000003.h5: cannot be read as HDF5"):
        build_index(load_config(None, TINY_OVERRIDES), data_dir, ann_dir)


def test_volume_without_kspace_is_named(tmp_path: Path) -> None:
    data_dir, ann_dir = copy_sample(tmp_path)
    with h5py.File(data_dir / "file1000001.h5", "a") as f:
        del f["kspace"]
    with pytest.raises(DataError, match=r"file1000001.h5: no 'kspace' dataset"):
        build_index(load_config(None, TINY_OVERRIDES), data_dir, ann_dir)


def test_wrong_dtype_and_rank_are_named(tmp_path: Path) -> None:
    p = tmp_path / "file1.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = np.zeros((2, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match=r"file1.h5: 'kspace' has dtype float32; expected complex64"):
        inspect_volume(p)
    with h5py.File(p, "w") as f:
        f["kspace"] = np.zeros((8, 8), dtype=np.complex64)
    with pytest.raises(DataError, match=r"'kspace' has shape \(8, 8\)"):
        inspect_volume(p)


def test_nan_kspace_is_named(tmp_path: Path) -> None:
    p = tmp_path / "file1.h5"
    k = np.ones((1, 8, 6), dtype=np.complex64)
    k[0, 2, 2] = np.nan
    with h5py.File(p, "w") as f:
        f["kspace"] = k
    prep = SlicePreprocessor(pad_width=8, crop=4)
    batch = {"path": np.array([str(p)]), "slice": np.array([0]), **{label_column(h): np.array([0]) for h in LABELS}}
    with pytest.raises(DataError, match=r"file1.h5: 'kspace' holds NaN or inf values in slice 0"):
        prep(batch)


def test_empty_split_is_named(ray_local: None, tmp_path: Path) -> None:
    data_dir, ann_dir = write_sample(tmp_path / "s", **{**TINY_SAMPLE, "volumes": 3})
    with pytest.raises(DataError, match=r"the '(val|test)' split is empty"):
        prepare(load_config(None, TINY_OVERRIDES), data_dir, ann_dir)


def test_preprocessor_reads_repeated_and_unsorted_slices(tiny_fastmri: tuple[Path, Path]) -> None:
    # a batch may name a slice twice and in any order: each row gets its own slice
    data_dir, _ = tiny_fastmri
    path = str(sorted(data_dir.glob("*.h5"))[0])
    prep = SlicePreprocessor(pad_width=40, crop=32)
    labels = {f"y_{h}": np.zeros(4, dtype=np.int64) for h in ("abnormal", "acl", "cartilage", "mtear")}
    out = prep({"path": np.array([path] * 4), "slice": np.array([2, 0, 2, 1]), **labels})
    single = [prep({"path": np.array([path]), "slice": np.array([s]), **{k: v[:1] for k, v in labels.items()}})
              for s in (2, 0, 1)]  # fmt: skip
    for row, ref in zip([0, 1, 2, 3], [single[0], single[1], single[0], single[2]], strict=True):
        np.testing.assert_allclose(out["magnitude"][row], ref["magnitude"][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["phase"][row], ref["phase"][0], rtol=1e-5, atol=1e-5)


# ---- issue 16: more bad input -----------------------------------------------------------


@pytest.mark.parametrize("value", ["3.5", "-1", "three"])
def test_a_slice_number_that_is_not_a_whole_number_at_least_0_is_named(tmp_path: Path, value: str) -> None:
    root = write_annotations(tmp_path / "A", [["file1000001", value, "No", "1", "2", "3", "4", "ACL"]], ["file1000001"])
    with pytest.raises(DataError, match=rf"knee.csv, line 2: field 'slice' is '{value}', expected an integer slice"):
        read_annotations(root)


def test_volumes_of_different_heights_are_named(tmp_path: Path) -> None:
    data_dir, ann_dir = copy_sample(tmp_path)
    with h5py.File(data_dir / "file1000004.h5", "a") as f:
        k = f["kspace"][:, :48]
        del f["kspace"]
        f["kspace"] = k
    with pytest.raises(DataError, match=r"file1000004.h5: 'kspace' has height 48, but file1000000 has 64"):
        build_index(load_config(None, TINY_OVERRIDES), data_dir, ann_dir)


def test_an_empty_kspace_is_named(tmp_path: Path) -> None:
    p = tmp_path / "file1.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = np.zeros((0, 8, 8), dtype=np.complex64)
    with pytest.raises(DataError, match=r"file1.h5: 'kspace' is empty \(shape \(0, 8, 8\)\)"):
        inspect_volume(p)


@pytest.mark.parametrize(
    "override,error,message",
    [
        ("data.options={skip_absent: true}", DataError, r"unknown data.options key\(s\) \['skip_absent'\] for fastmri"),
        ("data.options={skip_absent_volumes: 1}", DataError, r"skip_absent_volumes must be true or false, got 1"),
        ("data.sample={volumes: 4, slicez: 2}", ConfigError, r"unknown data.sample key\(s\) \['slicez'\] for fastmri"),
        ("data.sample={volumes: many}", ConfigError, r"data.sample.volumes must be a whole number >= 1, got 'many'"),
        ("data.sample={height: 24}", ConfigError, r"data.crop_size \(32\) must be <= data.sample.height \(24\)"),
        ("data.sample={width: 48}", ConfigError, r"data.sample.width \(48\) must be <= data.pad_width \(40\)"),
    ],
)
def test_bad_data_settings_are_named_before_anything_is_read(
    tmp_path: Path, override: str, error: type[Exception], message: str
) -> None:
    from i2m2_ray.data import check_data_config, get_dataset

    cfg = load_config(None, [*TINY_OVERRIDES, override])
    with pytest.raises(error, match=message):
        get_dataset("fastmri").load(cfg, tmp_path)  # before any file is written or read
    with pytest.raises(ConfigError, match=message):
        check_data_config(get_dataset("fastmri"), cfg)  # what the command lines call before Ray starts
    assert not (tmp_path / "sample_data").exists()


def test_max_volumes_counts_usable_volumes_and_max_samples_caps_each_split(
    ray_local: None, tiny_fastmri: tuple[Path, Path]
) -> None:
    data_dir, ann_dir = tiny_fastmri  # file1000011 is too wide for pad width 40
    rows, info = build_index(load_config(None, [*TINY_OVERRIDES, "data.max_volumes=12"]), data_dir, ann_dir)
    assert info["volumes"] == 12 and info["skipped_wide_volumes"] == 1  # 12 usable: the wide one passed over
    prepared = prepare(load_config(None, [*TINY_OVERRIDES, "data.max_samples=5"]), data_dir, ann_dir)
    assert all(n <= 5 for n in prepared.sizes.values()) and prepared.sizes["train"] == 5
    assert sum(prepared.class_counts["acl"]) == 5


def test_nan_kspace_reaches_the_driver_with_file_and_slice(ray_local: None, tmp_path: Path) -> None:
    data_dir, ann_dir = write_sample(tmp_path / "s", **{**TINY_SAMPLE, "volumes": 6})
    prepared = prepare(load_config(None, TINY_OVERRIDES), data_dir, ann_dir)
    name = "file1000000.h5"
    with h5py.File(data_dir / name, "a") as f:
        k = f["kspace"][...]
        k[2, 5, 5] = np.inf
        f["kspace"][...] = k
    with pytest.raises(Exception) as err:
        for split in ("train", "val", "test"):
            for _ in prepared.datasets[split].iter_batches(batch_size=None):
                pass
    found = data_error_from(err.value)
    assert found is not None and str(found).endswith(f"{name}: 'kspace' holds NaN or inf values in slice 2")
