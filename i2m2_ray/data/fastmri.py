"""fastMRI single-coil knee volumes with fastMRI+ slice labels.

Real layout (see ``docs`` and ../shared/reference/method.md):

* ``<file>.h5``: ``kspace`` (slices, 640, W) complex64, ``reconstruction_rss`` /
  ``reconstruction_esc`` (slices, 320, 320) float32, ``ismrmrd_header`` XML bytes, attrs
  ``acquisition``, ``max``, ``norm``, ``patient_id``.
* ``Annotations/knee.csv``: ``file, slice, study_level, x, y, width, height, label``.
* ``Annotations/knee_file_list.csv``: the reviewed volumes, one per line, no header.

Only a small index (file, slice, labels) is built on the driver; k-space is read and turned
into magnitude and phase inside a Ray Data ``map_batches`` stage, slice batches streaming
to the training workers.

Modalities ``magnitude`` and ``phase``, ``(1, crop, crop)`` each (``info["inputs"]``); the
recipe's encoder is the PreAct-ResNet knee network (``model.encoder: preact_resnet``).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.fft

from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.data.base import (
    DataError,
    Dataset,
    PredictInput,
    PredictSource,
    PreparedData,
    capped,
    index_dataset,
    label_column,
    quiet_data_context,
    sample_settings,
    shuffle_seed,
)
from i2m2_ray.data.registry import register_dataset
from i2m2_ray.spec import TaskSpec

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

LABELS = ("abnormal", "acl", "cartilage", "mtear")
MODALITIES = ("magnitude", "phase")
KNEE_CSV_COLUMNS = ("file", "slice", "study_level", "x", "y", "width", "height", "label")
OPTIONS = {"skip_absent_volumes": False}  # data.options known to this dataset, with defaults
# data.sample: the generated sample's settings (fastmri_sample.write_sample), with defaults
SAMPLE = {"volumes": 40, "slices": 8, "height": 640, "width": 368, "seed": 0}
_FILE_RE = re.compile(r"^file\w+$")


def finding_to_label(finding: str) -> str:
    """Map a fastMRI+ finding string to one of the four slice targets.

    "ACL" -> acl; "Meniscus Tear" -> mtear; "cartilage" in any case -> cartilage; any other
    finding -> abnormal (other findings only; abnormal is not a superset).
    """
    text = finding.strip()
    if not text:
        raise ValueError("empty finding label")
    if "ACL" in text:
        return "acl"
    if "Meniscus Tear" in text:
        return "mtear"
    if "cartilage" in text.lower():
        return "cartilage"
    return "abnormal"


@dataclass
class Annotations:
    """fastMRI+ labels: reviewed volumes and, per (volume, slice), the positive targets."""

    reviewed: list[str]
    positives: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    study_level_rows: int = 0
    skipped_list_lines: int = 0


def read_annotations(annotations_dir: str | Path) -> Annotations:
    """Read ``knee.csv`` and ``knee_file_list.csv`` from a fastMRI+ ``Annotations`` folder."""
    root = Path(annotations_dir)
    list_path = root / "knee_file_list.csv"
    csv_path = root / "knee.csv"
    for p in (list_path, csv_path):
        if not p.is_file():
            raise DataError(f"{p}: file not found (expected the fastMRI+ Annotations folder)")
    reviewed: list[str] = []
    skipped = 0
    for line in list_path.read_text().splitlines():
        name = line.strip().strip(",").removesuffix(".h5")
        if _FILE_RE.match(name):
            reviewed.append(name)
        else:
            skipped += 1  # blank or stray line (the real list ends with one)
    if not reviewed:
        raise DataError(f"{list_path}: no volume names found (expected lines like 'file1000000')")
    ann = Annotations(reviewed=sorted(set(reviewed)), skipped_list_lines=skipped)
    reviewed_set = set(ann.reviewed)
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in KNEE_CSV_COLUMNS if c not in cols]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {missing}; expected {list(KNEE_CSV_COLUMNS)}")
        for lineno, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            volume = row["file"].removesuffix(".h5")
            if row["study_level"].lower() in ("yes", "true", "1"):
                ann.study_level_rows += 1  # whole-study remarks (e.g. artifact): no slice target
                continue
            try:
                target = finding_to_label(row["label"])
            except ValueError:
                raise DataError(f"{csv_path}, line {lineno}: field 'label' is empty") from None
            try:
                value = float(row["slice"])
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value.is_integer() and value >= 0):
                raise DataError(
                    f"{csv_path}, line {lineno}: field 'slice' is {row['slice']!r}, expected an integer"
                    " slice number >= 0"
                )
            sl = int(value)
            if volume not in reviewed_set:
                raise DataError(
                    f"{csv_path}, line {lineno}: volume '{volume}' is labelled but not listed in {list_path.name}"
                )
            ann.positives.setdefault((volume, sl), set()).add(target)
    return ann


def find_volumes(data_dir: str | Path) -> dict[str, Path]:
    """Map volume name (file stem) -> path for every ``*.h5`` under ``data_dir``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found")
    return {p.stem: p for p in sorted(root.rglob("*.h5"))}


def inspect_volume(path: Path) -> tuple[int, int, int]:
    """Check a volume's ``kspace`` without reading it; return (slices, height, width)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise DataError(f"{path}: no 'kspace' dataset (keys: {sorted(f.keys())})")
            ds = f["kspace"]
            if ds.ndim != 3:
                raise DataError(f"{path}: 'kspace' has shape {ds.shape}; expected (slices, height, width)")
            if not np.issubdtype(ds.dtype, np.complexfloating):
                raise DataError(f"{path}: 'kspace' has dtype {ds.dtype}; expected complex64")
            if 0 in ds.shape:
                raise DataError(f"{path}: 'kspace' is empty (shape {ds.shape}); expected (slices, height, width)")
            return int(ds.shape[0]), int(ds.shape[1]), int(ds.shape[2])
    except OSError as exc:
        raise DataError(f"{path}: cannot be read as HDF5 ({exc})") from None


def _alternating(n: int, start: int = 0) -> np.ndarray:
    """``(-1)^(start + i)`` for ``i < n``, float32."""
    return np.where((np.arange(n) + start) % 2, -1.0, 1.0).astype(np.float32)


def kspace_signs(h: int, w: int, left: int) -> np.ndarray:
    """``(h, w)`` signs ``(-1)^(row + left + col)`` that k-space placed at column ``left``
    of the zero-filled grid is multiplied by (see :func:`kspace_to_image`)."""
    return _alternating(h)[:, None] * _alternating(w, left)[None, :]


def _check_sizes(h: int, w: int, pad_width: int, crop: int) -> None:
    if w > pad_width:
        raise ValueError(f"k-space width {w} exceeds pad width {pad_width}")
    if crop > h or crop > pad_width:
        raise ValueError(f"crop {crop} larger than the image ({h}, {pad_width})")


def kspace_to_image(kspace: np.ndarray, pad_width: int, crop: int, signed: bool = False) -> np.ndarray:
    """Zero-fill k-space to ``pad_width``, centred inverse 2-D FFT, centre crop.

    For even sizes the centring shifts are sign flips, ``fftshift(ifft(ifftshift(x)))[n] =
    (-1)^(n + N/2) ifft((-1)^k x)[n]``: k-space is multiplied by alternating signs while it
    is zero-filled and the crop by the output signs, so no whole-array shift copies are
    made; the width is transformed first and cropped before the height is, so the second
    pass runs over ``crop`` columns instead of ``pad_width``.

    Args:
        kspace: ``(..., H, W)`` complex, ``W <= pad_width``.
        signed: ``kspace`` is already zero-filled to ``pad_width`` and multiplied by
            :func:`kspace_signs` (what :class:`SlicePreprocessor` hands over); then it is
            transformed in place.
    Returns:
        ``(..., crop, crop)`` complex64 image.
    """
    h, w = kspace.shape[-2:]
    _check_sizes(h, w, pad_width, crop)
    top = (h - crop) // 2
    lft = (pad_width - crop) // 2
    left = (pad_width - w) // 2
    if h % 2 or pad_width % 2:  # odd sizes: the plain shifts
        if signed:
            raise ValueError("signed k-space needs an even height and pad width")
        padded = np.zeros((*kspace.shape[:-1], pad_width), dtype=np.complex64)
        padded[..., left : left + w] = kspace
        axes = (-2, -1)
        image = scipy.fft.fftshift(
            scipy.fft.ifft2(scipy.fft.ifftshift(padded, axes=axes), axes=axes, norm="ortho"), axes=axes
        )
        return image[..., top : top + crop, lft : lft + crop].astype(np.complex64, copy=False)
    if signed:
        padded = kspace
    else:
        padded = np.zeros((*kspace.shape[:-1], pad_width), dtype=np.complex64)
        np.multiply(kspace, kspace_signs(h, w, left), out=padded[..., left : left + w])
    cols = scipy.fft.ifft(padded, axis=-1, norm="ortho", overwrite_x=True)[..., lft : lft + crop]
    image = scipy.fft.ifft(cols, axis=-2, norm="ortho", overwrite_x=True)[..., top : top + crop, :]
    out_signs = _alternating(crop, top + h // 2)[:, None] * _alternating(crop, lft + pad_width // 2)[None, :]
    image *= out_signs
    return image.astype(np.complex64, copy=False)


def image_to_modalities(image: np.ndarray) -> dict[str, np.ndarray]:
    """``(B, S, S)`` complex -> magnitude (per-slice standardised) and phase / pi, ``(B, 1, S, S)``."""
    mag = np.abs(image).astype(np.float32)
    mean = mag.mean(axis=(-2, -1), keepdims=True)
    std = mag.std(axis=(-2, -1), keepdims=True) + 1e-8
    phase = (np.angle(image) / np.pi).astype(np.float32)
    return {"magnitude": ((mag - mean) / std)[:, None], "phase": phase[:, None]}


class SlicePreprocessor:
    """Ray Data batch UDF: index rows (path, slice, labels) -> modality arrays and labels.

    Rows of one file in a batch are read with one HDF5 open; the FFT runs on the whole batch.
    Label columns pass through when the index has them (prediction: when labels were
    given), and so do the index columns named in ``keep``.
    """

    def __init__(self, pad_width: int, crop: int, keep: tuple[str, ...] = ()) -> None:
        self.pad_width = pad_width
        self.crop = crop
        self.keep = keep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import h5py

        paths = batch["path"]
        slices = batch["slice"].astype(np.int64)
        n = len(paths)
        kspace: np.ndarray | None = None
        signed = False
        for path in dict.fromkeys(paths.tolist()):
            idx = np.flatnonzero(paths == path)
            try:
                with h5py.File(path, "r") as f:
                    ds = f["kspace"]
                    # h5py reads strictly increasing indices: each distinct slice once
                    wanted, where = np.unique(slices[idx], return_inverse=True)
                    data = ds[wanted]
            except (OSError, KeyError) as exc:
                raise DataError(f"{path}: cannot read 'kspace' ({exc})") from None
            if kspace is None:
                kspace = np.zeros((n, data.shape[1], self.pad_width), dtype=np.complex64)
                signed = data.shape[1] % 2 == 0 and self.pad_width % 2 == 0
            finite = np.isfinite(data).reshape(len(data), -1).all(axis=1)
            if not finite.all():
                raise DataError(f"{path}: 'kspace' holds NaN or inf values in slice {int(wanted[~finite][0])}")
            h, w = data.shape[-2:]
            if h != kspace.shape[1] or w > self.pad_width:
                raise DataError(
                    f"{path}: 'kspace' slices are {h}x{w}; this batch needs height {kspace.shape[1]} "
                    f"and width <= {self.pad_width} (the volume changed after it was indexed?)"
                )
            left = (self.pad_width - w) // 2
            if signed:  # zero-fill and the centring signs in one pass (see kspace_to_image)
                data = data * kspace_signs(h, w, left)
            kspace[idx, :, left : left + w] = data[where]
        assert kspace is not None
        out = image_to_modalities(kspace_to_image(kspace, self.pad_width, self.crop, signed=signed))
        for head in LABELS:
            if label_column(head) in batch:
                out[label_column(head)] = batch[label_column(head)].astype(np.int64)
        out.update({k: batch[k] for k in self.keep})
        return out


def build_index(
    cfg: ExperimentConfig, data_dir: Path, annotations_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per slice of every reviewed, present volume of acceptable width."""
    ann = read_annotations(annotations_dir)
    volumes = find_volumes(data_dir)
    opts = options(cfg)
    absent = [v for v in ann.reviewed if v not in volumes]
    if absent and not opts.get("skip_absent_volumes", False):
        raise DataError(
            f"{Path(annotations_dir) / 'knee_file_list.csv'}: {len(absent)} listed volume(s) not found "
            f"under {data_dir}, e.g. {absent[:3]} (expected <name>.h5; set "
            "data.options.skip_absent_volumes=true to skip them)"
        )
    rows: list[dict[str, Any]] = []
    info: Counter[str] = Counter(absent_volumes=len(absent), study_level_rows=ann.study_level_rows)
    names = [v for v in ann.reviewed if v in volumes]
    first_height: tuple[str, int] | None = None
    for name in names:
        if cfg.data.max_volumes is not None and info["volumes"] >= cfg.data.max_volumes:
            break  # the first max_volumes usable volumes (a quick run on real data)
        n_slices, height, width = inspect_volume(volumes[name])
        if width > cfg.data.pad_width:
            info["skipped_wide_volumes"] += 1
            continue
        if cfg.data.crop_size > min(height, cfg.data.pad_width):
            raise DataError(
                f"{volumes[name]}: 'kspace' is {height}x{width}; data.crop_size={cfg.data.crop_size} "
                f"needs height and data.pad_width >= the crop"
            )
        if first_height is None:
            first_height = (name, height)
        elif height != first_height[1]:
            raise DataError(
                f"{volumes[name]}: 'kspace' has height {height}, but {first_height[0]} has {first_height[1]}; "
                "every volume must have the same height (slices of several volumes share a batch)"
            )
        info["volumes"] += 1
        for s in range(n_slices):
            found = ann.positives.get((name, s), set())
            row: dict[str, Any] = {"path": str(volumes[name]), "volume": name, "slice": s}
            row.update({label_column(h): int(h in found) for h in LABELS})
            rows.append(row)
        for vol, s in ann.positives:
            if vol == name and s >= n_slices:
                raise DataError(f"knee.csv labels slice {s} of {name}, which has {n_slices} slices")
    if not rows:
        raise DataError(f"{data_dir}: no usable volumes (reviewed and present with width <= {cfg.data.pad_width})")
    return rows, dict(info)


SPLIT_SEED = 0  # the public code's random_state


def volume_split(volumes: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """The public code's volume split, on the sorted names so it no longer depends on
    ``PYTHONHASHSEED`` (the public code splits ``list(set(...))``, whose order does).

    ``train_test_split(test_size=1 - train, random_state=seed)`` keeps the training volumes;
    the rest is split again with ``test_size = val / (val + test)``, whose first part is the
    test set and whose second the validation set (recipes.md §3: 70 / 15 / 15).
    """
    from sklearn.model_selection import train_test_split

    names = sorted(volumes)
    _, val_frac, test_frac = fractions
    # rounded: 1 - 0.7 is 0.30000000000000004 in floating point, and sklearn takes the
    # ceiling of test_size x n, which would then move a volume when 0.3 n is whole
    held_out = round(val_frac + test_frac, 12)
    train, rest = train_test_split(names, test_size=held_out, random_state=seed)
    if len(rest) < 2:
        raise ValueError(f"{len(names)} volumes leave {len(rest)} for validation and test; need at least 2")
    test, val = train_test_split(rest, test_size=round(val_frac / held_out, 12), random_state=seed)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


SLICE_BATCH_BYTES = 8 << 20  # output bytes per preprocessing batch (magnitude + phase, float32)


def slice_batch_size(crop: int) -> int:
    """Slices per Ray Data batch: about ``SLICE_BATCH_BYTES`` of float32 magnitude and phase."""
    return max(16, min(512, SLICE_BATCH_BYTES // (crop * crop * 8)))


def slice_dataset(
    rows: list[dict[str, Any]], pad_width: int, crop: int, shuffle_seed: int | None = None
) -> ray.data.Dataset:
    """Index rows -> a lazy Ray Dataset of modality arrays and labels (read and FFT in
    ``map_batches``); ``shuffle_seed``: shuffled globally every epoch (:func:`index_dataset`).

    A batch holds about 8 MB of output (16 slices at 320x320, 256 at the demo's 64x64):
    each Ray Data task costs tens of milliseconds of scheduling and transfer, which small
    slices would not amortise (benchmarks/README.md, data pipeline).
    """
    batch = slice_batch_size(crop)
    return index_dataset(
        rows,
        SlicePreprocessor(pad_width, crop),
        batch_size=batch,
        blocks=min(len(rows) // batch, 64),
        shuffle_seed=shuffle_seed,
    )


def prepare(cfg: ExperimentConfig, data_dir: str | Path, annotations_dir: str | Path) -> PreparedData:
    """Index, split by volume and build the streaming Ray Datasets."""
    rows, info = build_index(cfg, Path(data_dir), Path(annotations_dir))
    volumes = sorted({r["volume"] for r in rows})
    split_seed = SPLIT_SEED if cfg.data.split_seed is None else cfg.data.split_seed
    try:
        split = volume_split(volumes, cfg.data.split, split_seed)
    except ValueError:
        split = {"val": []}
    for name, vols in split.items():
        if not vols:
            raise DataError(
                f"{data_dir}: the '{name}' split is empty ({len(volumes)} usable volumes split "
                f"{cfg.data.split}); more volumes are needed"
            )
    where = {v: s for s, vols in split.items() for v in vols}
    quiet_data_context(cfg.run.deterministic)
    datasets: dict[str, ray.data.Dataset] = {}
    sizes: dict[str, int] = {}
    for name in split:
        part = capped([r for r in rows if where[r["volume"]] == name], cfg.data.max_samples)
        sizes[name] = len(part)
        seed = shuffle_seed(cfg) if name == "train" else None
        datasets[name] = slice_dataset(part, cfg.data.pad_width, cfg.data.crop_size, seed)
    train = capped([r for r in rows if where[r["volume"]] == "train"], cfg.data.max_samples)
    counts = {h: [sum(1 for r in train if r[label_column(h)] == c) for c in (0, 1)] for h in LABELS}
    info.update({f"{k}_volumes": len(v) for k, v in split.items()})
    info["split_seed"] = split_seed
    info["inputs"] = {m: [1, cfg.data.crop_size, cfg.data.crop_size] for m in MODALITIES}
    log.info("fastMRI index: %s", info)
    return PreparedData(
        spec=TaskSpec(MODALITIES, {h: 2 for h in LABELS}),
        datasets=datasets,
        class_counts=counts,
        sizes=sizes,
        info=info,
        state={"pad_width": int(cfg.data.pad_width), "crop": int(cfg.data.crop_size)},
        classes={h: ["absent", "present"] for h in LABELS},
    )


def predict_data(source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
    """Every slice of every ``*.h5`` volume under ``source.data_dir`` (magnitude and phase
    both come from its k-space), with the training's pad width and crop (``state``).
    Volumes wider than the pad width are left out (named in ``notes``), as training leaves
    them out. With ``source.annotations`` (a fastMRI+ folder) the reviewed volumes get their
    slice labels and the others are left out."""
    missing_state = [k for k in ("pad_width", "crop") if k not in state]
    if missing_state:
        raise DataError(f"the checkpoint's preprocessing state has no {missing_state} (fastMRI)")
    pad_width, crop = int(state["pad_width"]), int(state["crop"])
    quiet_data_context(True)
    volumes = find_volumes(source.data_dir)
    if not volumes:
        raise DataError(f"{source.data_dir}: no *.h5 volumes found")
    ann = read_annotations(source.annotations) if source.annotations is not None else None
    notes: list[str] = []
    if ann is not None:
        unlisted = sorted(set(volumes) - set(ann.reviewed))
        if unlisted:
            notes.append(f"{len(unlisted)} volume(s) not listed in knee_file_list.csv left out, e.g. {unlisted[:3]}")
        volumes = {v: p for v, p in volumes.items() if v in set(ann.reviewed)}
    rows: list[dict[str, Any]] = []
    height: tuple[str, int] | None = None
    wide: list[str] = []
    for name, path in volumes.items():
        n_slices, h, w = inspect_volume(path)
        if w > pad_width:
            wide.append(name)
            continue
        if crop > h:
            raise DataError(f"{path}: 'kspace' is {h}x{w}; the model was trained on {crop}x{crop} crops")
        if height is not None and h != height[1]:
            raise DataError(
                f"{path}: 'kspace' has height {h}, but {height[0]} has {height[1]}; "
                "every volume must have the same height (slices of several volumes share a batch)"
            )
        height = height or (name, h)
        for s in range(n_slices):
            row: dict[str, Any] = {"path": str(path), "volume": name, "slice": s}
            if ann is not None:
                found = ann.positives.get((name, s), set())
                row.update({label_column(t): int(t in found) for t in LABELS})
            rows.append(row)
    if wide:
        notes.append(f"{len(wide)} volume(s) wider than the pad width {pad_width} left out, e.g. {wide[:3]}")
    if not rows:
        raise DataError(f"{source.data_dir}: no usable volumes (width <= {pad_width})")
    batch = slice_batch_size(crop)
    ds = index_dataset(
        rows, SlicePreprocessor(pad_width, crop, keep=("volume", "slice")), batch_size=batch,
        blocks=min(len(rows) // batch, 64),
    )  # fmt: skip
    return PredictInput(dataset=ds, ids=("volume", "slice"), labelled=ann is not None, rows=len(rows), notes=notes)


def options(cfg: ExperimentConfig) -> dict[str, Any]:
    """``data.options`` with defaults; an unknown key or a bad value is an error."""
    unknown = sorted(set(cfg.data.options) - set(OPTIONS))
    if unknown:
        raise DataError(f"unknown data.options key(s) {unknown} for fastmri; known: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **cfg.data.options}
    if not isinstance(opts["skip_absent_volumes"], bool):
        raise DataError(f"data.options.skip_absent_volumes must be true or false, got {opts['skip_absent_volumes']!r}")
    return opts


def check_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``data`` settings this dataset reads, checked without reading any file: the
    options, and for the generated sample (no ``data.data_dir``) its settings against the
    crop and pad width. Returns the sample's settings."""
    options(cfg)
    s = sample_settings(cfg, SAMPLE, "fastmri")
    if cfg.data.data_dir is None:
        if s["width"] > cfg.data.pad_width:
            raise ConfigError(
                f"data.sample.width ({s['width']}) must be <= data.pad_width ({cfg.data.pad_width}): "
                "every generated volume would be skipped as too wide"
            )
        if cfg.data.crop_size > s["height"]:
            raise ConfigError(
                f"data.crop_size ({cfg.data.crop_size}) must be <= data.sample.height ({s['height']}), "
                "the generated sample's k-space height"
            )
    return s


SAMPLE_VERSION = 5  # bump when the generator changes, so stale samples are rewritten


@register_dataset("fastmri")
class FastMRI(Dataset):
    """fastMRI knee volumes in ``data.data_dir`` with the fastMRI+ ``data.annotations``
    folder, or the generated sample."""

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData:
        """Prepare real data, or write (once) and prepare the generated sample."""
        import json

        from i2m2_ray.data.fastmri_sample import write_sample

        s = self.check_config(cfg)
        data_dir, annotations = cfg.data.data_dir, cfg.data.annotations
        if data_dir is None:
            sample_dir = Path(work_dir) / "sample_data"
            marker = sample_dir / "sample.json"
            wanted = {**cfg.data.sample, "pad_width": cfg.data.pad_width, "crop": cfg.data.crop_size}
            wanted["generator"] = SAMPLE_VERSION
            if not marker.is_file() or json.loads(marker.read_text()) != wanted:
                write_sample(sample_dir, **s, pad_width=cfg.data.pad_width, crop=cfg.data.crop_size)
                marker.write_text(json.dumps(wanted))
            data_dir, annotations = str(sample_dir / "knee"), str(sample_dir / "Annotations")
        if annotations is None:
            raise DataError("--annotations is required with --data-dir (the fastMRI+ Annotations folder)")
        return prepare(cfg, data_dir, annotations)

    def check_config(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Cheap checks of the ``data`` settings, before Ray starts (:func:`check_config`)."""
        return check_config(cfg)

    def predict_data(self, cfg: ExperimentConfig, source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
        """New files for a trained model (:func:`predict_data`)."""
        return predict_data(source, state)
