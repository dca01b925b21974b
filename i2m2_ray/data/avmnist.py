"""AV-MNIST (MultiBench layout): a digit seen as an image and heard as a spectrogram.

Real layout (see ../shared/reference/method.md)::

    <data-dir>/image/train_data.npy   (N, 784)       grey values 0-255 (MNIST, energy removed)
    <data-dir>/image/test_data.npy
    <data-dir>/audio/train_data.npy   (N, 112, 112)  spectrograms 0-255
    <data-dir>/audio/test_data.npy
    <data-dir>/train_labels.npy       (N,)           digits 0-9
    <data-dir>/test_labels.npy

Any integer or float dtype is accepted for the inputs, int or whole-valued float for the
labels. Splits are fixed, as in the public code: train = the first 55/60 of the train files
(55,000 of 60,000), validation = the rest (5,000), test = the test files. ``data.split`` is
not used.

Modalities: ``image`` ``(1, 28, 28)`` and ``audio`` ``(1, 112, 112)``, both scaled by 1/255
(float32); one label head ``digit`` (10 classes). The facts for the encoders
(``info["inputs"]``) give both shapes, and ``info["encoders"]`` = ``["lenet"]``, the
recipe's: a LeNet per modality (``model.encoder: lenet``); the two inputs differ in shape,
so the inter expert fuses late (``model.inter_fusion: concat`` or ``lrtf``).

Only labels are read on the driver. An index (row number, digit) per split becomes a Ray
Dataset; ``map_batches`` reads the rows from the memory-mapped ``.npy`` files, checks and
scales them, so the arrays never pass through the driver.

Config: ``model.width`` = channels of the first LeNet stage (doubling per stage);
``model.blocks`` = ``[image stages, audio stages]`` (the public code: ``[4, 6]``);
``data.options.audio_pool`` = average-pool the spectrogram by this factor (1 = as read; the
CPU demo uses 4, i.e. 28x28); ``data.sample`` = ``{train, test, seed}`` of the generated
sample.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.data.arrays import (
    NUMERIC_KINDS,
    check_array,
    check_counts,
    integer_labels,
    marker_matches,
    open_npy,
    read_rows,
    write_marker,
)
from i2m2_ray.data.base import (
    DataError,
    Dataset,
    PredictInput,
    PredictSource,
    PreparedData,
    index_dataset,
    label_column,
    quiet_data_context,
    sample_settings,
    shuffle_seed,
    spaced,
)
from i2m2_ray.data.registry import register_dataset
from i2m2_ray.spec import TaskSpec

log = logging.getLogger(__name__)

MODALITIES = ("image", "audio")
HEAD = "digit"
CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
AUDIO_SIDE = 112
OPTIONS = {"audio_pool": 1}  # data.options known to this dataset, with defaults
SAMPLE = {"train": 6000, "test": 1500, "seed": 0}  # data.sample: avmnist_sample.write_sample's settings
ROWS_PER_BLOCK = 500


def source_files(data_dir: str | Path, split: str) -> dict[str, Path]:
    """Paths of one split's files: ``image``, ``audio`` and ``labels``."""
    root = Path(data_dir)
    return {
        "image": root / "image" / f"{split}_data.npy",
        "audio": root / "audio" / f"{split}_data.npy",
        "labels": root / f"{split}_labels.npy",
    }


def train_val_sizes(n: int) -> tuple[int, int]:
    """First 55/60 of the train file for training, the rest for validation (55,000 / 5,000
    of the real 60,000)."""
    n_train = (11 * n + 6) // 12  # round(n * 55 / 60) in integers
    return n_train, n - n_train


def read_split(data_dir: str | Path, split: str) -> tuple[dict[str, Path], np.ndarray]:
    """Check one split's files (headers only for the inputs); return paths and digits ``(N,)``.

    Raises:
        DataError: a missing file, wrong shape or dtype, labels outside 0..9, or different
            sample counts; the message names the file and field.
    """
    paths = source_files(data_dir, split)
    image = open_npy(paths["image"], f"image/{split}_data.npy, (N, 784) grey values")
    check_array(image, str(paths["image"]), "image", (None, 784), NUMERIC_KINDS)
    audio = open_npy(paths["audio"], f"audio/{split}_data.npy, (N, 112, 112) spectrograms")
    check_array(audio, str(paths["audio"]), "audio", (None, AUDIO_SIDE, AUDIO_SIDE), NUMERIC_KINDS)
    raw = open_npy(paths["labels"], f"{split}_labels.npy, (N,) digits 0-9")
    if raw.ndim == 2 and raw.shape[1] == 1:  # a column vector is fine
        raw = raw[:, 0]
    check_array(raw, str(paths["labels"]), "labels", (None,), NUMERIC_KINDS)
    check_counts(
        {
            f"image/{split}_data.npy": image.shape[0],
            f"audio/{split}_data.npy": audio.shape[0],
            f"{split}_labels.npy": raw.shape[0],
        },
        str(Path(data_dir)),
    )
    digits = integer_labels(np.asarray(raw), str(paths["labels"]), "labels", 0, CLASSES - 1)
    return paths, digits


class AVMNISTReader:
    """Ray Data batch UDF: index rows (``row``, ``y_digit``) -> scaled modality arrays.

    Output batch: ``image`` ``(B, 1, 28, 28)`` and ``audio`` ``(B, 1, 112/p, 112/p)``
    float32 in [0, 1] (``p`` = ``audio_pool``), ``y_digit`` ``(B,)`` int64 when the index
    has labels, and the index columns named in ``keep`` as they are. A modality whose path
    is None (prediction without it) is not read.
    """

    def __init__(
        self, image_path: str | None, audio_path: str | None, audio_pool: int = 1, keep: tuple[str, ...] = ()
    ) -> None:
        self.paths = {k: v for k, v in {"image": image_path, "audio": audio_path}.items() if v is not None}
        self.audio_pool = audio_pool
        self.keep = keep
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}  # memory maps are reopened where it runs

    def _rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.paths[name], mmap_mode="r", allow_pickle=False)
        values = read_rows(self._arrays[name], rows)
        lo, hi = (values.min(), values.max()) if values.size else (0, 0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 255):
            flat = values.reshape(len(rows), -1)
            bad = ~np.isfinite(flat) | (flat < 0) | (flat > 255)
            i = int(np.flatnonzero(bad.any(axis=1))[0])
            raise DataError(
                f"{self.paths[name]}: '{name}' row {int(rows[i])} holds {flat[i][bad[i]][0].item()!r}; "
                "expected values 0-255"
            )
        return values

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["row"].astype(np.int64)
        n = len(rows)
        out = {k: batch[k] for k in self.keep}
        if "image" in self.paths:
            image = (self._rows("image", rows).astype(np.float32) / 255.0).reshape(n, *IMAGE_SHAPE)
            out["image"] = np.ascontiguousarray(image, dtype=np.float32)
        if "audio" in self.paths:
            audio = self._rows("audio", rows).astype(np.float32) / 255.0
            p = self.audio_pool
            if p > 1:
                s = AUDIO_SIDE // p
                audio = audio.reshape(n, s, p, s, p).mean(axis=(2, 4), dtype=np.float32)
            out["audio"] = np.ascontiguousarray(audio[:, None], dtype=np.float32)
        col = label_column(HEAD)
        if col in batch:
            out[col] = batch[col].astype(np.int64)
        return out


def options(cfg: ExperimentConfig) -> dict[str, Any]:
    """``data.options`` with defaults; unknown keys and bad values are errors."""
    unknown = sorted(set(cfg.data.options) - set(OPTIONS))
    if unknown:
        raise DataError(f"unknown data.options key(s) {unknown} for avmnist; known: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **cfg.data.options}
    pool = opts["audio_pool"]
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1 or AUDIO_SIDE % pool:
        raise DataError(
            f"data.options.audio_pool must be a whole divisor of {AUDIO_SIDE} (1, 2, 4, 7, ...), got {pool!r}"
        )
    return opts


def prepare(cfg: ExperimentConfig, data_dir: str | Path) -> PreparedData:
    """Check the files, cut the fixed splits and build the Ray Datasets."""
    import ray.data

    opts = options(cfg)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found (expected the MultiBench AV-MNIST folder)")
    train_paths, train_digits = read_split(root, "train")
    test_paths, test_digits = read_split(root, "test")
    n_train, n_val = train_val_sizes(len(train_digits))
    if n_val < 1 or len(test_digits) < 1:
        raise DataError(
            f"{root}: {len(train_digits)} training and {len(test_digits)} test rows; need at least 12 and 1 "
            "(validation takes the last 5/60 of the train files)"
        )
    cap = cfg.data.max_samples  # evenly spaced rows of each split (files may be sorted by digit)
    rows = {  # the training split is shuffled globally every epoch
        "train": spaced(n_train, cap),
        "val": n_train + spaced(n_val, cap),
        "test": spaced(len(test_digits), cap),
    }
    digits = {"train": train_digits, "val": train_digits, "test": test_digits}
    files = {"train": train_paths, "val": train_paths, "test": test_paths}
    quiet_data_context(cfg.run.deterministic)
    datasets: dict[str, ray.data.Dataset] = {}
    for split, idx in rows.items():
        reader = AVMNISTReader(str(files[split]["image"]), str(files[split]["audio"]), opts["audio_pool"])
        datasets[split] = index_dataset(
            [{"row": int(r), label_column(HEAD): int(digits[split][r])} for r in idx],
            reader,
            batch_size=256,
            blocks=min(len(idx) // ROWS_PER_BLOCK, 64),
            shuffle_seed=shuffle_seed(cfg) if split == "train" else None,
        )
    counts = np.bincount(train_digits[rows["train"]], minlength=CLASSES)
    side = AUDIO_SIDE // opts["audio_pool"]
    info = {
        "train_file_rows": len(train_digits),
        "inputs": {"image": list(IMAGE_SHAPE), "audio": [1, side, side]},
        "encoders": ["lenet"],
    }
    log.info("AV-MNIST: %s", info)
    return PreparedData(
        spec=TaskSpec(MODALITIES, {HEAD: CLASSES}),
        datasets=datasets,
        class_counts={HEAD: [int(c) for c in counts]},
        sizes={s: len(r) for s, r in rows.items()},
        info=info,
        state={"audio_pool": int(opts["audio_pool"])},
    )


def predict_data(source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
    """``<split>_data.npy`` of the modalities asked for (and ``<split>_labels.npy`` when it is
    there) under ``source.data_dir``, every row, read as training read them (``audio_pool``
    from ``state``). Raises :class:`DataError` naming a missing or malformed file."""
    import ray.data

    quiet_data_context(True)
    root = Path(source.data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found (expected the MultiBench AV-MNIST folder)")
    if "audio_pool" not in state:
        raise DataError("the checkpoint's preprocessing state has no 'audio_pool' (AV-MNIST)")
    paths = source_files(root, source.split)
    shapes = {"image": (None, 784), "audio": (None, AUDIO_SIDE, AUDIO_SIDE)}
    counts: dict[str, int] = {}
    for m in source.modalities:
        arr = open_npy(paths[m], f"{m}/{source.split}_data.npy, {MODALITY_FILES[m]}")
        check_array(arr, str(paths[m]), m, shapes[m], NUMERIC_KINDS)
        counts[f"{m}/{source.split}_data.npy"] = int(arr.shape[0])
    digits: np.ndarray | None = None
    if paths["labels"].is_file():
        raw = open_npy(paths["labels"], f"{source.split}_labels.npy, (N,) digits 0-9")
        raw = raw[:, 0] if raw.ndim == 2 and raw.shape[1] == 1 else raw
        check_array(raw, str(paths["labels"]), "labels", (None,), NUMERIC_KINDS)
        counts[f"{source.split}_labels.npy"] = int(raw.shape[0])
        digits = integer_labels(np.asarray(raw), str(paths["labels"]), "labels", 0, CLASSES - 1)
    n = check_counts(counts, str(root))
    if n < 1:
        raise DataError(f"{root}: the {source.split} files hold no rows")
    items: list[dict[str, Any]] = [{"row": r} for r in range(n)]
    if digits is not None:
        items = [{"row": r, label_column(HEAD): int(digits[r])} for r in range(n)]
    reader = AVMNISTReader(
        str(paths["image"]) if "image" in source.modalities else None,
        str(paths["audio"]) if "audio" in source.modalities else None,
        int(state["audio_pool"]),
        keep=("row",),
    )
    ds: ray.data.Dataset = index_dataset(items, reader, batch_size=256, blocks=min(n // ROWS_PER_BLOCK, 64))
    return PredictInput(dataset=ds, ids=("row",), labelled=digits is not None, rows=n)


MODALITY_FILES = {"image": "(N, 784) grey values", "audio": "(N, 112, 112) spectrograms"}


def check_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``data`` settings this dataset reads, checked without reading any file; returns
    the generated sample's settings."""
    if cfg.data.annotations is not None:
        raise DataError("--annotations is not used by avmnist (labels are the {train,test}_labels.npy files)")
    options(cfg)
    s = sample_settings(cfg, SAMPLE, "avmnist")
    if s["train"] < 12:
        raise ConfigError(f"data.sample.train must be >= 12 (validation takes the last 5/60), got {s['train']}")
    return s


SAMPLE_VERSION = 2  # bump when the generator changes, so stale samples are rewritten


@register_dataset("avmnist")
class AVMNIST(Dataset):
    """AV-MNIST: the MultiBench folder in ``data.data_dir``, or the generated sample."""

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData:
        """Prepare real data from ``data.data_dir``, or write (once) and prepare the generated
        sample under ``work_dir/sample_data``."""
        from i2m2_ray.data.avmnist_sample import write_sample

        s = self.check_config(cfg)
        data_dir = cfg.data.data_dir
        if data_dir is None:
            sample_dir = Path(work_dir) / "sample_data"
            marker = sample_dir / "sample.json"
            wanted = {**cfg.data.sample, "generator": SAMPLE_VERSION}
            if not marker_matches(marker, wanted):
                sample_dir.mkdir(parents=True, exist_ok=True)
                marker.unlink(missing_ok=True)
                write_sample(sample_dir, **s)
                write_marker(marker, wanted)
            data_dir = str(sample_dir)
        return prepare(cfg, data_dir)

    def check_config(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Cheap checks of the ``data`` settings, before Ray starts (:func:`check_config`)."""
        return check_config(cfg)

    def predict_data(self, cfg: ExperimentConfig, source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
        """New files for a trained model (:func:`predict_data`)."""
        return predict_data(source, state)
