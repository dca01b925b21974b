"""A sixth dataset added from outside the package, as docs/adding-a-dataset.md shows: this
module and one config (``tests/toy_demo.yaml``), no edit to ``i2m2_ray``.

    python experiments/run.py --experiment toy --plugin tests.toy_dataset --config tests/toy_demo.yaml

Two modalities, ``left`` and ``right``, each an ``(8,)`` vector; the label (4 classes) is
``2 a + b``, where the bit ``a`` shifts ``left[0]`` and the bit ``b`` shifts ``right[0]``
(Gaussian noise of sd ``data.options.noise`` everywhere). Each unimodal expert can read one
bit (about half the labels), a model of both modalities all of them; chance is 1/4.

Layout (real data and the generated sample alike): ``<data_dir>/toy.npz`` with ``left``
``(N, 8)`` float32, ``right`` ``(N, 8)`` float32, ``label`` ``(N,)`` int64 and ``split``
``(N,)`` (0 train, 1 validation, 2 test).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.config import ExperimentConfig
from i2m2_ray.data import DataError, Dataset, Flag, PreparedData, register_dataset
from i2m2_ray.data.base import index_dataset, label_column, quiet_data_context, shuffle_seed
from i2m2_ray.spec import TaskSpec

MODALITIES = ("left", "right")
HEAD = "label"
FEATURES = 8
OPTIONS = {"noise": 0.5}  # data.options known to this dataset, with defaults


def write_sample(folder: Path, train: int, val: int, test: int, noise: float, seed: int) -> Path:
    """Write ``toy.npz`` in the layout above."""
    rng = np.random.default_rng(seed)
    n = train + val + test
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    left = rng.normal(0.0, noise, (n, FEATURES)).astype(np.float32)
    right = rng.normal(0.0, noise, (n, FEATURES)).astype(np.float32)
    left[:, 0] += 2.0 * a - 1.0
    right[:, 0] += 2.0 * b - 1.0
    split = np.repeat([0, 1, 2], [train, val, test])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.npz"
    np.savez(path, left=left, right=right, label=(2 * a + b).astype(np.int64), split=split)
    return path


class ToyReader:
    """Ray Data batch UDF: index rows (``row``, ``y_label``) -> ``left``, ``right`` ``(B, 8)``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # read again where it runs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._arrays is None:
            with np.load(self.path) as z:
                self._arrays = {m: z[m] for m in MODALITIES}
        rows = batch["row"].astype(np.int64)
        out = {m: self._arrays[m][rows] for m in MODALITIES}
        out[label_column(HEAD)] = batch[label_column(HEAD)].astype(np.int64)
        return out


@register_dataset("toy")
class Toy(Dataset):
    """Two noisy vectors, one bit of the label in each."""

    flags = (Flag("--noise", "data.options.noise", help="sd of the generated sample's noise"),)

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData:
        unknown = sorted(set(cfg.data.options) - set(OPTIONS))
        if unknown:
            raise DataError(f"unknown data.options key(s) {unknown} for toy; known: {sorted(OPTIONS)}")
        opts = {**OPTIONS, **cfg.data.options}
        if cfg.data.data_dir is None:  # the generated sample, written again when its settings change
            s = {"train": 400, "val": 100, "test": 200, "seed": 0, **cfg.data.sample, "noise": opts["noise"]}
            folder = Path(work_dir) / "sample_data"
            marker = folder / "sample.json"
            if not marker.is_file() or json.loads(marker.read_text()) != s:
                write_sample(folder, s["train"], s["val"], s["test"], float(s["noise"]), s["seed"])
                marker.write_text(json.dumps(s))
            path = folder / "toy.npz"
        else:
            path = Path(cfg.data.data_dir) / "toy.npz"
        if not path.is_file():
            raise DataError(f"{path}: file not found (expected toy.npz with left, right, label and split)")
        with np.load(path) as z:
            labels, split = z["label"], z["split"]
        quiet_data_context(cfg.run.deterministic)
        datasets = {}
        for code, name in enumerate(("train", "val", "test")):
            rows = np.flatnonzero(split == code)
            if len(rows) == 0:
                raise DataError(f"{path}: the '{name}' split is empty")
            datasets[name] = index_dataset(
                [{"row": int(r), label_column(HEAD): int(labels[r])} for r in rows],
                ToyReader(str(path)),
                batch_size=128,
                blocks=2,
                shuffle_seed=shuffle_seed(cfg) if name == "train" else None,
            )
        counts = np.bincount(labels[split == 0], minlength=4)
        return PreparedData(
            spec=TaskSpec(MODALITIES, {HEAD: 4}),
            datasets=datasets,
            class_counts={HEAD: [int(c) for c in counts]},
            sizes={name: int((split == code).sum()) for code, name in enumerate(("train", "val", "test"))},
            info={"inputs": {m: [FEATURES] for m in MODALITIES}, "noise": float(opts["noise"])},
        )
