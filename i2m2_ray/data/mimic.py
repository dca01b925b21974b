"""MIMIC-III as preprocessed by MultiBench (``im.pk``): static features + hourly series.

Real layout (see ../shared/reference/method.md): one pickle holding a dict

* ``ep_tdata`` ``(N, 24, 12)``: 24 hourly measurements of 12 variables;
* ``adm_features_all`` ``(N, 5)``: static admission features;
* ``adm_labels_all`` ``(N, 6)``: mortality flags [in-hospital, 1 day, 2 days, 3 days,
  30 days, 1 year];
* ``y_icd9`` ``(N, 20)``: ICD-9 group flags.

Flags may be bool, int or float (0./1.). **A pickle runs code when it is loaded**: it is read
only with ``--trust-pickle`` (``data.options.trust_pickle: true``), for files you trust.
Convert it once to a plain ``.npz`` and use that instead (read with ``allow_pickle=False``)::

    python -m i2m2_ray.data.mimic convert im.pk im.npz --trust-pickle

``--data-dir`` may name the ``.pk`` or ``.npz`` file, or a folder holding ``im.npz`` (used
first) or ``im.pk``.

Preprocessing, as the public code: NaN and inf -> 0, then z-scores (per static feature;
per series variable over all hours). ``data.options.zscore`` says whose statistics: ``all``
(the public code: every row, before the split) or ``train`` (the training split only, so
nothing of the test rows reaches the model; our choice for new work). A constant feature gets
standard deviation 1 (it becomes 0; the public code divides by 0 there). Tasks
(``data.options.task`` / ``--task``):

* ``mortality``: 6 classes -- the first positive flag among columns 1..5 of
  ``adm_labels_all`` (1 day ... 1 year) gives class 1..5, no positive flag gives 0; column 0
  (in-hospital) is not used;
* ``icd9_1``: ``y_icd9[:, 1]`` (group 1, codes 140-239), binary;
* ``icd9_7``: ``y_icd9[:, 7]`` (group 7, codes 460-519), binary.

Split, the public code's exactly and independent of ``run.seed`` (``data.split`` is not
used): Python's ``random.seed(10)`` then ``random.shuffle`` of the N rows; validation = the
first ``N // 10`` of that order, test = the next ones up to ``N // 5``, train = the rest
(``data.split_seed`` changes the 10).

Modalities: ``static`` ``(5,)`` and ``timeseries`` ``(24, 12)`` (``info["inputs"]``), for
the recipe's encoders (``info["encoders"]`` = ``["mlp_gru"]``): an MLP ``5 -> model.hidden``
(the last layer linear) and a GRU with ``model.width`` hidden units, read out by
``model.options.series_readout`` (``linear`` = a per-step ``Linear(width,
readout_features)`` flattened, the public unimodal expert; ``flatten`` = every step's state,
its inter expert; ``last`` = the last state); the inter expert fuses late (``concat`` or
``lrtf``). ``--task`` and ``--trust-pickle`` are this dataset's command-line flags
(:attr:`MIMIC.flags`).
The cleaned arrays are written once as ``.npy`` files under ``<output-dir>/cache/mimic``;
Ray Data reads rows from them (memory-mapped) and applies the z-scores in ``map_batches``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.data.arrays import (
    FLAG_KINDS,
    NUMERIC_KINDS,
    binary_flags,
    check_array,
    check_counts,
    file_fingerprint,
    is_zip,
    marker_matches,
    read_rows,
    save_npy_atomic,
    write_marker,
)
from i2m2_ray.data.base import (
    DataError,
    Dataset,
    Flag,
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

MODALITIES = ("static", "timeseries")
STATIC_FEATURES = 5
HOURS, SERIES_FEATURES = 24, 12
# key -> (expected shape with N for the sample count, dtype kinds accepted)
KEYS: dict[str, tuple[tuple[int | None, ...], str]] = {
    "ep_tdata": ((None, HOURS, SERIES_FEATURES), NUMERIC_KINDS),
    "adm_features_all": ((None, STATIC_FEATURES), NUMERIC_KINDS),
    "adm_labels_all": ((None, 6), FLAG_KINDS),
    "y_icd9": ((None, 20), FLAG_KINDS),
}
TASKS = {"mortality": 6, "icd9_1": 2, "icd9_7": 2}  # task -> classes (the head has its name)
# the recipe's model selection: validation accuracy for mortality, AUPRC for the ICD-9 tasks
MONITOR = {"mortality": "accuracy", "icd9_1": "auprc", "icd9_7": "auprc"}
OPTIONS: dict[str, Any] = {"task": "mortality", "trust_pickle": False, "zscore": "all"}
SAMPLE = {"samples": 10000, "seed": 0}  # data.sample: mimic_sample.write_sample's settings
ZSCORE = ("all", "train")
SPLIT_SEED = 10
SOURCE_NAMES = ("im.npz", "im.pk")
CACHE_VERSION = 1
ROWS_PER_BLOCK = 1000


# ---- reading -----------------------------------------------------------------------


def resolve_source(data_dir: str | Path) -> Path:
    """The file to read: ``data_dir`` itself, or ``im.npz`` / ``im.pk`` inside it."""
    p = Path(data_dir)
    if p.is_file():
        return p
    if p.is_dir():
        for name in SOURCE_NAMES:
            if (p / name).is_file():
                return p / name
        raise DataError(f"{p}: neither {' nor '.join(SOURCE_NAMES)} found (expected the MultiBench MIMIC pickle)")
    raise DataError(f"{p}: file or folder not found (expected im.pk, or an .npz made by 'convert')")


def _unpickle(path: Path) -> Any:
    with path.open("rb") as fh:
        try:
            return pickle.load(fh)
        except UnicodeDecodeError:  # NumPy arrays pickled by Python 2
            fh.seek(0)
            return pickle.load(fh, encoding="latin1")


def read_source(path: str | Path, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """Read the four arrays from an ``.npz`` (no pickles allowed) or, if trusted, a pickle.

    Raises:
        DataError: an untrusted pickle, an unreadable file, a missing key, or a value that
            is not a numeric array; the message names the file and the key.
    """
    p = Path(path)
    if is_zip(p):
        try:
            with np.load(p, allow_pickle=False) as npz:
                missing = [k for k in KEYS if k not in npz.files]
                if missing:
                    raise DataError(f"{p}: missing key(s) {missing}; expected {list(KEYS)} (found {npz.files})")
                out: dict[str, Any] = {}
                for k in KEYS:
                    try:
                        out[k] = npz[k]
                    except ValueError:
                        raise DataError(f"{p}: key '{k}' holds Python objects; expected a numeric array") from None
                return out
        except DataError:
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: cannot be read as .npz ({exc})") from None
    if not trust_pickle:
        raise DataError(
            f"{p}: not an .npz archive, so it is read as a pickle, and a pickle can run arbitrary code when "
            "loaded. Pass --trust-pickle (data.options.trust_pickle=true) only for a file you trust, or "
            f"convert it once: python -m i2m2_ray.data.mimic convert {p} {p.with_suffix('.npz')} --trust-pickle"
        )
    try:
        data = _unpickle(p)
    except Exception as exc:  # a broken pickle can raise almost anything
        raise DataError(f"{p}: cannot be unpickled ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, Mapping):
        raise DataError(f"{p}: the pickle holds a {type(data).__name__}; expected a dict with keys {list(KEYS)}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise DataError(f"{p}: missing key(s) {missing}; expected {list(KEYS)} (found {sorted(map(str, data))})")
    out = {}
    for k in KEYS:
        try:
            out[k] = np.asarray(data[k])
        except Exception:
            raise DataError(f"{p}: key '{k}' is not an array ({type(data[k]).__name__})") from None
    return out


def validate(arrays: Mapping[str, np.ndarray], where: str) -> int:
    """Check shapes, dtypes and equal sample counts; return N."""
    for key, (shape, kinds) in KEYS.items():
        arr = arrays[key]
        if arr.dtype.kind == "O":
            raise DataError(f"{where}: '{key}' holds Python objects (dtype object); expected numbers")
        check_array(arr, where, key, shape, kinds)
    return check_counts({k: int(arrays[k].shape[0]) for k in KEYS}, where)


def clean(x: np.ndarray) -> np.ndarray:
    """NaN and +-inf -> 0, as float32."""
    out = np.asarray(x, dtype=np.float32).copy()
    out[~np.isfinite(out)] = 0.0
    return out


def mortality_class(adm_labels: np.ndarray) -> np.ndarray:
    """``(N, 6)`` flags -> ``(N,)`` int64: 1..5 = the first positive among columns 1..5
    (1 day, 2 days, 3 days, 30 days, 1 year); 0 = none of them (column 0, in-hospital
    death, is not used). Positive means > 0, so 1 and 1.0 both count."""
    flags = np.asarray(adm_labels)[:, 1:6] > 0
    return np.where(flags.any(axis=1), flags.argmax(axis=1) + 1, 0).astype(np.int64)


def task_labels(arrays: Mapping[str, np.ndarray], task: str, where: str) -> np.ndarray:
    """``(N,)`` int64 class of every sample for ``task`` (flags must be 0 or 1)."""
    if task == "mortality":
        flags = binary_flags(np.asarray(arrays["adm_labels_all"])[:, 1:6], where, "adm_labels_all[:, 1:6]")
        return mortality_class(np.concatenate([np.zeros((len(flags), 1), bool), flags], axis=1))
    if task in TASKS:
        col = int(task.split("_")[1])
        return binary_flags(np.asarray(arrays["y_icd9"])[:, col], where, f"y_icd9[:, {col}]").astype(np.int64)
    raise DataError(f"data.options.task: unknown task {task!r}; expected one of {sorted(TASKS)}")


def split_rows(n: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Rows of each split, as the public code cuts them: Python's ``random.seed(seed)`` and
    ``random.shuffle`` of the ``n`` rows (``random.Random(seed)`` is the same generator);
    val = the first ``n // 10``, test = the next up to ``n // 5``, train = the rest."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    perm = np.asarray(order, dtype=np.int64)
    return {"train": perm[n // 5 :], "val": perm[: n // 10], "test": perm[n // 10 : n // 5]}


def zscore_stats(static: np.ndarray, series: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Means and standard deviations of the given rows (all, or the training split's): ``static`` per feature
    ``(5,)``, ``series`` per variable over samples and hours ``(12,)``. A constant feature
    gets sd 1 (it becomes 0, not NaN)."""
    s = static[rows].astype(np.float64)
    t = series[rows].astype(np.float64)
    out = {
        "static_mean": s.mean(axis=0),
        "static_std": s.std(axis=0),
        "series_mean": t.mean(axis=(0, 1)),
        "series_std": t.std(axis=(0, 1)),
    }
    for k in ("static_std", "series_std"):
        out[k] = np.where(out[k] > 1e-12, out[k], 1.0)
    return {k: v.astype(np.float32) for k, v in out.items()}


def convert(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> Path:
    """Write the four arrays of a (trusted) pickle to an ``.npz`` that loads without pickle."""
    src, dst = Path(src), Path(dst)
    arrays = read_source(src, trust_pickle=trust_pickle)
    validate(arrays, str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp.npz")
    with tmp.open("wb") as fh:
        np.savez(fh, **{k: np.ascontiguousarray(arrays[k]) for k in KEYS})  # type: ignore[arg-type]
    tmp.replace(dst)
    return dst


# ---- Ray Data ----------------------------------------------------------------------


class MIMICReader:
    """Ray Data batch UDF: index rows (``row``, ``y_<task>``) -> z-scored modality arrays.

    Output batch: ``static`` ``(B, 5)``, ``timeseries`` ``(B, 24, 12)`` float32, the label
    column ``(B,)`` int64 when the index has it, and the index columns named in ``keep``. A
    modality whose path is None (prediction without it) is not read.
    """

    def __init__(
        self,
        static_path: str | None,
        series_path: str | None,
        stats: Mapping[str, Any],
        head: str,
        keep: tuple[str, ...] = (),
    ) -> None:
        self.paths = {k: v for k, v in {"static": static_path, "timeseries": series_path}.items() if v is not None}
        self.stats = {k: np.asarray(v, dtype=np.float32) for k, v in stats.items()}
        self.head = head
        self.keep = keep
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}  # memory maps are reopened where it runs

    def _rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.paths[name], mmap_mode="r", allow_pickle=False)
        return read_rows(self._arrays[name], rows)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["row"].astype(np.int64)
        st = self.stats
        out = {k: batch[k] for k in self.keep}
        if "static" in self.paths:
            out["static"] = ((self._rows("static", rows) - st["static_mean"]) / st["static_std"]).astype(np.float32)
        if "timeseries" in self.paths:
            series = (self._rows("timeseries", rows) - st["series_mean"]) / st["series_std"]
            out["timeseries"] = series.astype(np.float32)
        col = label_column(self.head)
        if col in batch:
            out[col] = batch[col].astype(np.int64)
        return out


def options(cfg: ExperimentConfig) -> dict[str, Any]:
    """``data.options`` with defaults; unknown keys and bad values are errors."""
    unknown = sorted(set(cfg.data.options) - set(OPTIONS))
    if unknown:
        raise DataError(f"unknown data.options key(s) {unknown} for mimic; known: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **cfg.data.options}
    if opts["task"] not in TASKS:
        raise DataError(f"data.options.task: unknown task {opts['task']!r}; expected one of {sorted(TASKS)}")
    if not isinstance(opts["trust_pickle"], bool):
        raise DataError(f"data.options.trust_pickle must be true or false, got {opts['trust_pickle']!r}")
    if opts["zscore"] not in ZSCORE:
        raise DataError(f"data.options.zscore must be one of {', '.join(ZSCORE)}, got {opts['zscore']!r}")
    return opts


def write_cache(source: Path, cache_dir: Path, trust_pickle: bool) -> dict[str, Any]:
    """Read and check the source once; keep cleaned ``static.npy`` / ``timeseries.npy`` and
    the label arrays under ``cache_dir``. Returns the arrays' paths (reused while the source
    file is unchanged)."""
    marker = cache_dir / "cache.json"
    wanted = {"source": file_fingerprint([source]), "version": CACHE_VERSION}
    files = {k: cache_dir / f"{k}.npy" for k in ("static", "timeseries", "adm_labels_all", "y_icd9")}
    if marker_matches(marker, wanted) and all(p.is_file() for p in files.values()):
        return files
    arrays = read_source(source, trust_pickle=trust_pickle)
    n = validate(arrays, str(source))
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    save_npy_atomic(files["static"], clean(arrays["adm_features_all"]))
    save_npy_atomic(files["timeseries"], clean(arrays["ep_tdata"]))
    save_npy_atomic(files["adm_labels_all"], np.asarray(arrays["adm_labels_all"]))
    save_npy_atomic(files["y_icd9"], np.asarray(arrays["y_icd9"]))
    write_marker(marker, wanted)
    log.info("MIMIC: cached %d samples from %s in %s", n, source, cache_dir)
    return files


def prepare(cfg: ExperimentConfig, data_dir: str | Path, work_dir: str | Path) -> PreparedData:
    """Read (once) and check the source, split, compute z-score statistics on the training
    split and build the Ray Datasets."""
    import ray.data

    opts = options(cfg)
    task = str(opts["task"])
    source = resolve_source(data_dir)
    files = write_cache(source, Path(work_dir) / "cache" / "mimic", bool(opts["trust_pickle"]))
    static = np.load(files["static"], mmap_mode="r")
    series = np.load(files["timeseries"], mmap_mode="r")
    labels = task_labels({k: np.load(files[k], mmap_mode="r") for k in ("adm_labels_all", "y_icd9")}, task, str(source))
    split_seed = SPLIT_SEED if cfg.data.split_seed is None else cfg.data.split_seed
    rows = split_rows(len(labels), split_seed)
    for name, r in rows.items():
        if len(r) == 0:
            raise DataError(f"{source}: the '{name}' split is empty ({len(labels)} samples; at least 10 are needed)")
    stat_rows = np.sort(rows["train"]) if opts["zscore"] == "train" else np.arange(len(labels))
    stats = zscore_stats(static, series, stat_rows)
    rows = {name: r[spaced(len(r), cfg.data.max_samples)] for name, r in rows.items()}  # a quick run: fewer
    quiet_data_context(cfg.run.deterministic)
    reader = MIMICReader(str(files["static"]), str(files["timeseries"]), stats, task)
    datasets: dict[str, ray.data.Dataset] = {}
    for name, r in rows.items():
        datasets[name] = index_dataset(
            [{"row": int(i), label_column(task): int(labels[i])} for i in r],
            reader,
            batch_size=512,
            blocks=min(len(r) // ROWS_PER_BLOCK, 32),
            shuffle_seed=shuffle_seed(cfg) if name == "train" else None,
        )
    counts = np.bincount(labels[rows["train"]], minlength=TASKS[task])
    info = {
        "task": task,
        "source": str(source),
        "samples": len(labels),
        "split_seed": split_seed,
        "zscore": opts["zscore"],
        "inputs": {"static": [STATIC_FEATURES], "timeseries": [HOURS, SERIES_FEATURES]},
        "encoders": ["mlp_gru"],
    }
    log.info("MIMIC: %s", info)
    return PreparedData(
        spec=TaskSpec(MODALITIES, {task: TASKS[task]}),
        datasets=datasets,
        class_counts={task: [int(c) for c in counts]},
        sizes={name: len(r) for name, r in rows.items()},
        info=info,
        state={"task": task, "zscore": {k: v.tolist() for k, v in stats.items()}},
        classes={task: MORTALITY_CLASSES if task == "mortality" else ["negative", "positive"]},
    )


# class names of the mortality task: the first of these horizons with a death, or none
MORTALITY_CLASSES = ["none", "1 day", "2 days", "3 days", "30 days", "1 year"]
MODALITY_KEYS = {"static": "adm_features_all", "timeseries": "ep_tdata"}
LABEL_KEYS = {"mortality": "adm_labels_all", "icd9_1": "y_icd9", "icd9_7": "y_icd9"}


def predict_data(source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
    """Every row of an ``.npz`` in the MultiBench layout (``source.data_dir``: the file, or a
    folder holding ``im.npz``), cleaned and z-scored with the training statistics in
    ``state``. Only the keys of the modalities asked for are needed; the task's label key
    (``adm_labels_all`` or ``y_icd9``) is read when present. A pickle is refused (convert it
    first: it could run code)."""
    import ray.data

    quiet_data_context(True)
    missing_state = [k for k in ("task", "zscore") if k not in state]
    if missing_state:
        raise DataError(f"the checkpoint's preprocessing state has no {missing_state} (MIMIC)")
    task = str(state["task"])
    path = resolve_source(source.data_dir)
    if not is_zip(path):
        raise DataError(
            f"{path}: not an .npz archive; prediction reads no pickles (they can run code): convert it once with "
            f"python -m i2m2_ray.data.mimic convert {path} {path.with_suffix('.npz')} --trust-pickle"
        )
    wanted = [MODALITY_KEYS[m] for m in source.modalities]
    try:
        with np.load(path, allow_pickle=False) as npz:
            absent = [k for k in wanted if k not in npz.files]
            if absent:
                raise DataError(f"{path}: missing key(s) {absent} for modalities {list(source.modalities)} "
                                f"(found {npz.files})")  # fmt: skip
            arrays = {k: npz[k] for k in wanted}
            label_key = LABEL_KEYS[task]
            if label_key in npz.files:
                arrays[label_key] = npz[label_key]
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as .npz without pickles ({exc})") from None
    for key, arr in arrays.items():
        shape, kinds = KEYS[key]
        check_array(arr, str(path), key, shape, kinds)
    n = check_counts({k: int(a.shape[0]) for k, a in arrays.items()}, str(path))
    if n < 1:
        raise DataError(f"{path}: no rows")
    labels = task_labels(arrays, task, str(path)) if LABEL_KEYS[task] in arrays else None
    work = Path(source.work_dir) / "mimic"
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | None] = {"static": None, "timeseries": None}
    for m in source.modalities:
        save_npy_atomic(work / f"{m}.npy", clean(arrays[MODALITY_KEYS[m]]))
        files[m] = str(work / f"{m}.npy")
    items: list[dict[str, Any]] = [{"row": r} for r in range(n)]
    if labels is not None:
        items = [{"row": r, label_column(task): int(labels[r])} for r in range(n)]
    reader = MIMICReader(files["static"], files["timeseries"], state["zscore"], task, keep=("row",))
    ds: ray.data.Dataset = index_dataset(items, reader, batch_size=512, blocks=min(n // ROWS_PER_BLOCK, 32))
    return PredictInput(dataset=ds, ids=("row",), labelled=labels is not None, rows=n)


def check_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``data`` settings this dataset reads, checked without reading any file; returns
    the generated sample's settings."""
    if cfg.data.annotations is not None:
        raise DataError("--annotations is not used by mimic (the labels are inside im.pk)")
    options(cfg)
    s = sample_settings(cfg, SAMPLE, "mimic")
    if s["samples"] < 10:
        raise ConfigError(
            f"data.sample.samples must be >= 10 (validation and test take N // 10 each), got {s['samples']}"
        )
    return s


# ---- the dataset ---------------------------------------------------------------------

SAMPLE_VERSION = 1  # bump when the generator changes, so stale samples are rewritten


@register_dataset("mimic")
class MIMIC(Dataset):
    """MIMIC-III: ``im.npz`` / ``im.pk`` in ``data.data_dir``, or the generated sample."""

    flags = (
        Flag(
            "--task",
            "data.options.task",
            choices=tuple(sorted(TASKS)),
            help="mortality (6 classes), icd9_1 or icd9_7 (binary); default: the config's data.options.task",
            # the recipe's model selection goes with the task
            implies={task: (f"train.monitor={metric}",) for task, metric in MONITOR.items()},
        ),
        Flag(
            "--trust-pickle",
            "data.options.trust_pickle",
            switch=True,
            help="allow reading a pickle (im.pk): loading a pickle can run code, use only files you trust",
        ),
    )

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData:
        """Prepare real data from ``data.data_dir``, or write (once) the generated sample under
        ``work_dir/sample_data`` (an ``im.pk`` in the real format, converted to ``im.npz``)
        and prepare that."""
        from i2m2_ray.data.mimic_sample import write_sample

        s = self.check_config(cfg)
        data_dir = cfg.data.data_dir
        if data_dir is None:
            sample_dir = Path(work_dir) / "sample_data"
            marker = sample_dir / "sample.json"
            wanted = {**cfg.data.sample, "generator": SAMPLE_VERSION}
            if not marker_matches(marker, wanted):
                sample_dir.mkdir(parents=True, exist_ok=True)
                marker.unlink(missing_ok=True)
                pk = write_sample(sample_dir / "im.pk", **s)
                convert(pk, sample_dir / "im.npz", trust_pickle=True)  # written just now, by us
                write_marker(marker, wanted)
            data_dir = str(sample_dir / "im.npz")
        return prepare(cfg, data_dir, work_dir)

    def check_config(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Cheap checks of the ``data`` settings, before Ray starts (:func:`check_config`)."""
        return check_config(cfg)

    def predict_data(self, cfg: ExperimentConfig, source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
        """New files for a trained model (:func:`predict_data`)."""
        return predict_data(source, state)


def main(argv: list[str] | None = None) -> int:
    """``python -m i2m2_ray.data.mimic convert SRC DST --trust-pickle``."""
    p = argparse.ArgumentParser(prog="python -m i2m2_ray.data.mimic", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a trusted im.pk to an .npz that loads without pickle")
    c.add_argument("src", help="the MultiBench im.pk")
    c.add_argument("dst", help="the .npz to write")
    c.add_argument("--trust-pickle", action="store_true", help="confirm that the pickle comes from a trusted source")
    args = p.parse_args(argv)
    try:
        out = convert(args.src, args.dst, trust_pickle=args.trust_pickle)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
