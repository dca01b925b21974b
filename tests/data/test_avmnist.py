from pathlib import Path

import numpy as np
import pytest

from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.data import get_dataset
from i2m2_ray.data.avmnist import (
    AVMNISTReader,
    prepare,
    read_split,
    train_val_sizes,
)
from i2m2_ray.data.avmnist_sample import write_sample
from i2m2_ray.data.base import DataError, label_column

from ..conftest import REPO

OVERRIDES = ["model.encoder=lenet", "model.inter_fusion=concat", "model.blocks=[1, 1]", "model.width=2"]


def write_layout(
    root: Path,
    n_train: int = 24,
    n_test: int = 5,
    image_dtype: str = "uint8",
    audio_dtype: str = "float32",
    label_dtype: str = "int64",
) -> Path:
    """Hand-made files: row i of every input is filled with the value i (so a row can be
    recognised after the pipeline), test rows with 200 + i; digits are i % 10."""
    (root / "image").mkdir(parents=True)
    (root / "audio").mkdir()
    for split, n, base in (("train", n_train, 0), ("test", n_test, 200)):
        values = base + np.arange(n)
        np.save(root / "image" / f"{split}_data.npy", np.repeat(values[:, None], 784, axis=1).astype(image_dtype))
        audio = np.broadcast_to(values[:, None, None], (n, 112, 112)).astype(audio_dtype)
        np.save(root / "audio" / f"{split}_data.npy", audio)
        np.save(root / f"{split}_labels.npy", (np.arange(n) % 10).astype(label_dtype))
    return root


def collect(ds) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_train_val_sizes_follow_55_to_5() -> None:
    assert train_val_sizes(60000) == (55000, 5000)
    assert train_val_sizes(1200) == (1100, 100)
    assert train_val_sizes(4800) == (4400, 400)
    assert train_val_sizes(12) == (11, 1)


def test_reader_scales_reshapes_and_keeps_row_order(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d")
    reader = AVMNISTReader(str(root / "image/train_data.npy"), str(root / "audio/train_data.npy"))
    rows = np.array([7, 2, 19])
    out = reader({"row": rows, label_column("digit"): np.array([7, 2, 9])})
    assert out["image"].shape == (3, 1, 28, 28) and out["image"].dtype == np.float32
    assert out["audio"].shape == (3, 1, 112, 112) and out["audio"].dtype == np.float32
    np.testing.assert_allclose(out["image"][:, 0, 5, 5], rows / 255.0, rtol=1e-6)
    np.testing.assert_allclose(out["audio"][:, 0, 100, 3], rows / 255.0, rtol=1e-6)
    assert out["y_digit"].dtype == np.int64 and out["y_digit"].tolist() == [7, 2, 9]


def test_reader_pools_audio(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_layout(root, n_train=12)
    audio = np.zeros((12, 112, 112), dtype=np.uint8)
    audio[0, :4, :4] = 255  # one 4x4 block -> one pooled pixel of 1.0
    audio[0, 4:8, 0:4] = np.array([0, 51, 102, 153], dtype=np.uint8)[None]  # mean 76.5
    np.save(root / "audio/train_data.npy", audio)
    reader = AVMNISTReader(str(root / "image/train_data.npy"), str(root / "audio/train_data.npy"), audio_pool=4)
    out = reader({"row": np.array([0]), "y_digit": np.array([0])})
    assert out["audio"].shape == (1, 1, 28, 28)
    assert out["audio"][0, 0, 0, 0] == pytest.approx(1.0)
    assert out["audio"][0, 0, 1, 0] == pytest.approx(76.5 / 255)
    assert out["audio"][0, 0].sum() == pytest.approx(1.0 + 76.5 / 255)


def test_prepare_fixed_splits(ray_local: None, tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d", n_train=24, n_test=5)
    prepared = prepare(load_config(None, OVERRIDES), root)
    assert prepared.sizes == {"train": 22, "val": 2, "test": 5}
    assert prepared.spec.modalities == ("image", "audio") and dict(prepared.spec.heads) == {"digit": 10}
    assert sum(prepared.class_counts["digit"]) == 22 and len(prepared.class_counts["digit"]) == 10
    seen = {}
    for split in ("train", "val", "test"):
        batch = collect(prepared.datasets[split])
        assert set(batch) == {"image", "audio", "y_digit"}
        assert batch["y_digit"].dtype == np.int64 and batch["image"].dtype == np.float32
        seen[split] = np.rint(batch["image"][:, 0, 0, 0] * 255).astype(int)
        # the label travels with its row: digit = row % 10
        np.testing.assert_array_equal(batch["y_digit"], (seen[split] % 200) % 10)
        np.testing.assert_allclose(batch["audio"][:, 0, 50, 50], batch["image"][:, 0, 3, 3])
    assert sorted(seen["train"]) == list(range(22))  # the first 55/60 of the train file
    assert sorted(seen["val"]) == [22, 23]  # the next 5/60
    assert sorted(seen["test"]) == [200, 201, 202, 203, 204]  # the test file


def test_float_labels_with_whole_values_are_accepted(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d", label_dtype="float64")
    _, digits = read_split(root, "train")
    assert digits.dtype == np.int64 and digits[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


# ---- bad input ---------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d")
    (root / "audio/test_data.npy").unlink()
    with pytest.raises(DataError, match=r"audio/test_data.npy: file not found \(expected audio/test_data.npy"):
        read_split(root, "test")


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d")
    np.save(root / "image/train_data.npy", np.zeros((24, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match=r"image/train_data.npy: 'image' has shape \(24, 28, 28\); expected \(N, 784\)"):
        read_split(root, "train")
    np.save(root / "image/train_data.npy", np.zeros((24, 784), dtype=np.uint8))
    np.save(root / "audio/train_data.npy", np.zeros((24, 112, 100), dtype=np.uint8))
    with pytest.raises(DataError, match=r"'audio' has shape \(24, 112, 100\); expected \(N, 112, 112\)"):
        read_split(root, "train")


@pytest.mark.parametrize("dtype,shown", [("complex64", "complex64"), ("bool", "bool"), ("U3", "<U3")])
def test_wrong_dtype_is_named(tmp_path: Path, dtype: str, shown: str) -> None:
    root = write_layout(tmp_path / "d")
    np.save(root / "audio/train_data.npy", np.zeros((24, 112, 112), dtype=dtype))
    with pytest.raises(DataError, match=rf"audio/train_data.npy: 'audio' has dtype {shown}; expected integer"):
        read_split(root, "train")


def test_object_array_is_refused(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d")
    np.save(root / "train_labels.npy", np.array([None] * 24, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"train_labels.npy: .*cannot be read as a numeric .npy array"):
        read_split(root, "train")


def test_mismatched_counts_are_named(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d")
    np.save(root / "audio/train_data.npy", np.zeros((23, 112, 112), dtype=np.uint8))
    with pytest.raises(
        DataError,
        match=r"sample counts differ .*image/train_data.npy: 24, audio/train_data.npy: 23, train_labels.npy: 24",
    ):
        read_split(root, "train")


@pytest.mark.parametrize("bad,shown", [(10, "10"), (-1, "-1"), (3.5, "3.5")])
def test_bad_labels_are_named(tmp_path: Path, bad: float, shown: str) -> None:
    root = write_layout(tmp_path / "d", label_dtype="float64")
    labels = np.load(root / "test_labels.npy")
    labels[3] = bad
    np.save(root / "test_labels.npy", labels)
    with pytest.raises(DataError, match=rf"test_labels.npy: 'labels' holds {shown}.* at row 3"):
        read_split(root, "test")


def test_values_outside_0_255_are_named_when_read(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d", image_dtype="float32")
    image = np.load(root / "image/train_data.npy")
    image[5, 17] = 300.0
    np.save(root / "image/train_data.npy", image)
    reader = AVMNISTReader(str(root / "image/train_data.npy"), str(root / "audio/train_data.npy"))
    reader({"row": np.array([0, 1]), "y_digit": np.array([0, 1])})  # clean rows pass
    with pytest.raises(DataError, match=r"image/train_data.npy: 'image' row 5 holds 300.0; expected values 0-255"):
        reader({"row": np.array([4, 5]), "y_digit": np.array([4, 5])})


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.options={audio_pool: 3}", r"data.options.audio_pool must be a whole divisor of 112"),
        ("data.options={pool: 4}", r"unknown data.options key\(s\) \['pool'\]"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, override: str, message: str) -> None:
    root = write_layout(tmp_path / "d")
    with pytest.raises(DataError, match=message):
        prepare(load_config(None, [*OVERRIDES, override]), root)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.inter_fusion=early", r"differ in shape; use late fusion"),
        ("model.encoder=preact_resnet", r"model.encoder='preact_resnet' is not available for avmnist"),
        ("model.blocks=[2]", r"model.blocks must list the LeNet stages of \[image, audio\]"),
    ],
)
def test_bad_model_settings_are_named(ray_local: None, tmp_path: Path, override: str, message: str) -> None:
    """The model section is checked against the data's input facts (the encoder registry),
    before any training starts."""
    from i2m2_ray.models.registry import check_model

    cfg = load_config(None, ["experiment=avmnist", *OVERRIDES, override])
    prepared = prepare(cfg, write_layout(tmp_path / "d"))
    with pytest.raises(ConfigError, match=message):
        check_model(cfg, prepared.spec, prepared.info)


# ---- encoders and the generated sample ---------------------------------------------


def test_encoders_are_lenets_with_the_recipe_sizes() -> None:
    import torch

    from i2m2_ray.models.build import build_model
    from i2m2_ray.models.registry import encoder_factory
    from i2m2_ray.spec import TaskSpec

    cfg = load_config(REPO / "configs/avmnist.yaml").model
    # the facts AV-MNIST's data give the encoder registry (spectrograms as read)
    build_encoder = encoder_factory({"inputs": {"image": [1, 28, 28], "audio": [1, 112, 112]}})
    # unimodal LeNets of width 3, the inter expert's of width 6 (model.inter_expert)
    assert build_encoder(["image"], cfg).out_features == 24
    assert build_encoder(["audio"], cfg).out_features == 96
    assert build_encoder(["image"], cfg.for_expert("inter")).out_features == 48
    assert build_encoder(["audio"], cfg.for_expert("inter")).out_features == 192
    with pytest.raises(ValueError, match="one LeNet per modality"):
        build_encoder(["image", "audio"], cfg)
    model = build_model("i2m2", TaskSpec(("image", "audio"), {"digit": 10}), cfg, build_encoder)
    out = model({"image": torch.zeros(2, 1, 28, 28), "audio": torch.zeros(2, 1, 112, 112)})
    assert out["digit"].shape == (2, 10)


def test_generator_writes_the_layout_and_plants_the_cues(tmp_path: Path) -> None:
    root = write_sample(tmp_path / "s", train=600, test=24, seed=3)
    image = np.load(root / "image/train_data.npy")
    audio = np.load(root / "audio/train_data.npy")
    labels = np.load(root / "train_labels.npy")
    assert image.shape == (600, 784) and image.dtype == np.float32
    assert audio.shape == (600, 112, 112) and audio.dtype == np.uint8
    assert labels.shape == (600,) and labels.dtype == np.int64 and set(labels) == set(range(10))
    assert image.min() >= 0 and image.max() <= 255
    assert np.load(root / "image/test_data.npy").shape == (24, 784)
    assert np.load(root / "audio/test_data.npy").shape == (24, 112, 112)
    # the parity bit (digit >= 5) is the XOR of the two background levels...
    s_img = np.median(image, axis=1) > 60
    s_aud = np.median(audio.reshape(600, -1), axis=1) > 65
    parity = labels >= 5
    assert np.mean(parity == (s_img ^ s_aud)) > 0.98
    # ...and neither level alone says anything about it
    for s in (s_img, s_aud):
        assert abs(parity[s].mean() - parity[~s].mean()) < 0.15


def test_load_writes_the_sample_once(ray_local: None, tmp_path: Path) -> None:
    cfg = load_config(None, [*OVERRIDES, "data.sample={train: 36, test: 6, seed: 0}"])
    dataset = get_dataset("avmnist")
    prepared = dataset.load(cfg, tmp_path)
    assert prepared.sizes == {"train": 33, "val": 3, "test": 6}
    assert prepared.info["inputs"] == {"image": [1, 28, 28], "audio": [1, 112, 112]}
    marker = tmp_path / "sample_data" / "sample.json"
    stamp = (tmp_path / "sample_data/audio/train_data.npy").stat().st_mtime_ns
    dataset.load(cfg, tmp_path)
    assert (tmp_path / "sample_data/audio/train_data.npy").stat().st_mtime_ns == stamp
    assert marker.is_file()
    with pytest.raises(DataError, match="--annotations is not used by avmnist"):
        dataset.load(load_config(None, [*OVERRIDES, "data.annotations=somewhere"]), tmp_path)


# ---- issue 16: more bad input, data.max_samples ------------------------------------------


@pytest.mark.parametrize("modality,bad,shown", [("audio", np.nan, "nan"), ("image", np.inf, "inf")])
def test_nan_and_inf_reach_the_driver_with_file_field_and_row(
    ray_local: None, tmp_path: Path, modality: str, bad: float, shown: str
) -> None:
    from i2m2_ray.data import data_error_from

    root = write_layout(tmp_path / "d", image_dtype="float32")
    path = root / modality / "test_data.npy"
    values = np.load(path)
    values[3].flat[7] = bad
    np.save(path, values)
    prepared = prepare(load_config(None, OVERRIDES), root)  # only headers and labels are read here
    with pytest.raises(Exception) as err:
        collect(prepared.datasets["test"])
    found = data_error_from(err.value)
    assert str(found) == f"{path}: '{modality}' row 3 holds {shown}; expected values 0-255"


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.sample={train: 36, tset: 6}", r"unknown data.sample key\(s\) \['tset'\] for avmnist"),
        ("data.sample={train: 6}", r"data.sample.train must be >= 12 \(validation takes the last 5/60\), got 6"),
        ("data.sample={train: '36'}", r"data.sample.train must be a whole number >= 1, got '36'"),
    ],
)
def test_bad_sample_settings_are_named_before_writing(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_dataset("avmnist").load(load_config(None, [*OVERRIDES, override]), tmp_path)
    assert not (tmp_path / "sample_data").exists()


def test_max_samples_takes_evenly_spaced_rows_of_each_split(ray_local: None, tmp_path: Path) -> None:
    root = write_layout(tmp_path / "d", n_train=24, n_test=5)
    prepared = prepare(load_config(None, [*OVERRIDES, "data.max_samples=4"]), root)
    assert prepared.sizes == {"train": 4, "val": 2, "test": 4}
    rows = np.rint(collect(prepared.datasets["train"])["image"][:, 0, 0, 0] * 255).astype(int)
    assert sorted(rows) == [0, 7, 14, 21]  # spread over the 22 training rows, not the first 4
    assert sum(prepared.class_counts["digit"]) == 4
