"""The dataset contract: what a dataset is (:class:`Dataset`), the command-line flags it
declares (:class:`Flag`), what it hands the training code (:class:`PreparedData`: a task
spec, Ray Datasets and the input facts the encoders are built from), and helpers every
dataset shares (an index read in ``map_batches``, the per-epoch shuffle).

A dataset never builds a model: it says what its inputs are (``PreparedData.info``, see
:data:`FACTS`), and :mod:`i2m2_ray.models.registry` builds the encoder ``model.encoder``
names from those facts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from i2m2_ray.config import ConfigError
from i2m2_ray.spec import TaskSpec, label_column

__all__ = [
    "FACTS",
    "DataError",
    "Dataset",
    "Flag",
    "PreparedData",
    "PredictInput",
    "PredictSource",
    "GuardedReader",
    "capped",
    "data_error_from",
    "index_dataset",
    "label_column",
    "quiet_data_context",
    "sample_settings",
    "shuffle_seed",
    "spaced",
]

if TYPE_CHECKING:
    import ray.data

    from i2m2_ray.config import ExperimentConfig

SPLITS = ("train", "val", "test")

# Keys of ``PreparedData.info`` that the encoders are built from (the rest is for logging).
FACTS = {
    "inputs": "modality -> the shape of one sample's array, e.g. {'image': [1, 28, 28], 'text': [40]} (required)",
    "encoders": "the model.encoder names the dataset is meant for; others are refused (absent: any that fits)",
    "vocab_size": "text: the tokeniser's vocabulary size (the transformers encoder)",
    "pad_token_id": "text: the padding token id, masked out (the transformers encoder)",
}


class DataError(ValueError):
    """Bad input data; the message names the file, the field and what was expected.

    Messages are one line. Raised inside a Ray Data transform, it reaches the driver wrapped
    in Ray's errors; :func:`data_error_from` digs it out again.
    """


@dataclass
class PreparedData:
    """A dataset ready for training.

    Attributes:
        spec: modality names and label heads.
        datasets: ``train``/``val``/``test`` Ray Datasets (plus any ``test_<name>`` set,
            scored like ``test``); each row holds one array per modality and one
            ``y_<head>`` label per head. Lazy: nothing is read until a trainer iterates them.
        class_counts: head -> per-class counts on the training split (for loss weights).
        sizes: split -> number of samples.
        info: the input facts the encoders are built from (:data:`FACTS`: ``inputs``, and
            ``encoders``, ``vocab_size``, ``pad_token_id`` where they apply) and counts
            worth logging (skipped volumes, ...); small, JSON-like values only.
        state: the preprocessing state that reading new files as training read them needs
            (MIMIC's z-score statistics, VQA's answer vocabulary and tokeniser, ...), handed
            back to :meth:`Dataset.predict_data`; saved in every checkpoint, so JSON-like
            values only (lists, not arrays).
        classes: head -> its class names (absent: ``"0"``, ``"1"``, ...), for predictions.
    """

    spec: TaskSpec
    datasets: dict[str, ray.data.Dataset]
    class_counts: dict[str, list[int]]
    sizes: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)

    def class_names(self) -> dict[str, list[str]]:
        """Every head's class names: ``classes``, else the class numbers as text."""
        return {h: list(self.classes.get(h) or [str(c) for c in range(n)]) for h, n in self.spec.heads.items()}


@dataclass(frozen=True)
class PredictSource:
    """New files to predict on, as the user named them (``experiments/predict.py``).

    Attributes:
        data_dir: the dataset's real files (the folder or file ``--data-dir`` names for training).
        annotations: where labels live apart (fastMRI+ ``Annotations``), or None.
        modalities: the modalities to read; the others' files need not exist.
        split: which split's files, where a dataset has one file per split (AV-MNIST
            ``<split>_data.npy``); the others read every file or row they are given.
        work_dir: a folder the dataset may write cleaned copies to.
    """

    data_dir: Path
    annotations: Path | None
    modalities: tuple[str, ...]
    split: str = "test"
    work_dir: Path = Path(".")


@dataclass
class PredictInput:
    """New files read for prediction (:meth:`Dataset.predict_data`).

    Attributes:
        dataset: a lazy Ray Dataset, one row per sample, in the files' order: the ``ids``
            columns, one array per modality of ``PredictSource.modalities``, and a
            ``y_<head>`` label per head when the files hold labels.
        ids: the columns that name a sample (``row``; ``volume`` and ``slice``; ...).
        labelled: whether ``y_<head>`` columns are there.
        rows: the number of samples.
        notes: what was left out and why (e.g. volumes too wide), for the user.
    """

    dataset: ray.data.Dataset
    ids: tuple[str, ...]
    labelled: bool
    rows: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Flag:
    """A dataset-specific command-line option, declared as data: the experiment scripts turn
    it into an ``argparse`` option that sets one config key.

    Attributes:
        name: the option, e.g. ``"--task"``.
        config_key: the key it sets, e.g. ``"data.options.task"``.
        choices: the values it takes (``None``: any value, read as YAML like ``--set``).
        help: the option's help text.
        implies: value -> more ``key=value`` overrides that value brings, e.g.
            ``{"icd9_1": ["train.monitor=auprc"]}``.
        switch: an option without a value (``--trust-pickle``) that sets ``config_key`` to true.
    """

    name: str
    config_key: str
    choices: tuple[str, ...] | None = None
    help: str = ""
    implies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    switch: bool = False

    def overrides(self, value: Any) -> list[str]:
        """The config overrides for the value given on the command line (``None``: not given)."""
        if value is None or value is False:
            return []
        if self.switch:
            return [f"{self.config_key}=true"]
        return [f"{self.config_key}={value}", *self.implies.get(str(value), ())]


@runtime_checkable
class Dataset(Protocol):
    """What a dataset implements: one class per dataset, registered under its experiment name
    with :func:`i2m2_ray.data.register_dataset`.

    ``load`` reads real data from ``cfg.data.data_dir`` (and ``cfg.data.annotations`` where
    labels live apart), or, when ``data_dir`` is None, writes a generated sample once under
    ``work_dir`` and reads that. It checks the files and ``data.*`` settings (raising
    :class:`DataError` naming file, field and expectation), builds the lazy Ray Datasets and
    puts the input facts (:data:`FACTS`) in ``info``. It builds no model.

    ``flags`` are the dataset's own command-line options (:class:`Flag`).

    Optionally, ``predict_data(cfg, source, state)`` reads new files in the same format for a
    trained model (:class:`PredictSource` -> :class:`PredictInput`), with the readers ``load``
    uses and the preprocessing ``state`` ``load`` put in ``PreparedData.state`` (the
    checkpoint's copy); labels in the files are read when present, never required.

    Optionally, ``check_config(cfg)`` checks the ``data`` settings the dataset reads without
    reading a file (:func:`i2m2_ray.data.check_data_config` runs it before Ray starts and for
    every search-space choice); ``load`` honours ``data.max_samples`` (samples per split).
    """

    name: ClassVar[str] = ""
    flags: ClassVar[tuple[Flag, ...]] = ()

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData: ...


def quiet_data_context(deterministic: bool = True) -> None:
    """Turn off Ray Data's progress bars and start-of-execution prints for datasets built
    from here on (they are captured in each Dataset's context); training logs one line per
    epoch instead. ``deterministic`` keeps blocks in the dataset's order (also when a split
    is materialised), so that one seed gives one model (``run.deterministic``)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = deterministic
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    # a reader's DataError leaves the task as itself, not as "UDF failed to process a data
    # block" with the message two causes down (data_error_from finds it either way)
    ctx.raise_original_map_exception = True


def index_dataset(
    items: list[dict[str, Any]],
    reader: Any,
    *,
    batch_size: int,
    blocks: int,
    shuffle_seed: int | None = None,
    cache: bool = False,
) -> ray.data.Dataset:
    """A split as a Ray Dataset: a small index (one row per sample: row numbers, paths,
    labels) turned into modality arrays by ``reader`` in ``map_batches``.

    ``shuffle_seed`` (the training split): the order is shuffled globally, anew at every
    execution, i.e. every epoch, from this seed and the execution's number, so one seed
    gives one sequence of epochs. The index is shuffled before it is read, so only row
    numbers move; with ``cache`` the read split is kept in the object store
    (``materialize``) and its rows are shuffled instead.
    """
    import ray.data

    index: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=max(1, blocks))
    if shuffle_seed is not None and not cache:
        index = index.random_shuffle(seed=_reseeded(shuffle_seed))
    ds: ray.data.Dataset = index.map_batches(GuardedReader(reader), batch_size=batch_size, batch_format="numpy")
    if cache:
        ds = ds.materialize()
        if shuffle_seed is not None:
            ds = ds.random_shuffle(seed=_reseeded(shuffle_seed))
    return ds


def _reseeded(seed: int) -> Any:
    from ray.data import RandomSeedConfig

    return RandomSeedConfig(seed=seed, reseed_after_execution=True)


def shuffle_seed(cfg: Any) -> int | None:
    """The training split's shuffle seed: ``run.seed`` when ``train.shuffle`` is on."""
    return int(cfg.run.seed) if cfg.train.shuffle else None


class GuardedReader:
    """A reader UDF whose unexpected errors become :class:`DataError` naming the reader, the
    files and the rows of the batch (a reader raises DataError itself for what it checks).
    Errors of the machine rather than the rows (memory, a lost connection) pass as they are."""

    PASSED_ON = (DataError, MemoryError, ConnectionError, TimeoutError)

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out: dict[str, np.ndarray] = self.reader(batch)
        except self.PASSED_ON:
            raise
        except Exception as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            raise DataError(
                f"{_batch_files(self.reader, batch)}, {_batch_rows(batch)}: {type(self.reader).__name__} failed "
                f"({type(exc).__name__}: {first_line})"
            ) from exc
        return out


def _batch_files(reader: Any, batch: Mapping[str, np.ndarray]) -> str:
    if "path" in batch:
        files = list(dict.fromkeys(str(p) for p in np.asarray(batch["path"]).tolist()))
    else:
        files = [str(p) for p in dict(getattr(reader, "paths", {}) or {}).values()]
    return ", ".join(files) if files else "(no file)"


def _batch_rows(batch: Mapping[str, np.ndarray]) -> str:
    for key in ("row", "slice"):
        if key in batch:
            rows = [int(r) for r in np.asarray(batch[key]).tolist()]
            shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
            return f"{key}s {shown}"
    return "a batch"


# what Ray Data appends to the message of an exception it passes on from a UDF
_RAY_NOTE = re.compile(r"\s*Failed to apply UDF transform after .*", re.DOTALL)
_MESSAGE_LINE = re.compile(r"(?:^|\n)[\w.]*DataError: ([^\n]+)")


def data_error_from(exc: BaseException) -> DataError | None:
    """The :class:`DataError` behind an error raised while Ray ran a reader, or None.

    A DataError raised in a ``map_batches`` reader reaches the driver wrapped: as
    ``RayTaskError(DataError)`` from ``iter_batches``, inside a Ray Train
    ``WorkerGroupError.worker_failures``, inside a ``RayTaskError`` of the task that ran the
    trainer, as the ``__cause__`` of Ray Data's ``UserCodeException``, or only as text (a
    traceback in a message). The wrappers are searched breadth first; when no DataError
    object is found, the last ``DataError: <message>`` line of their text is used.
    """
    text_match: str | None = None
    for e in _wrapped(exc):
        if isinstance(e, DataError) and not _is_ray_wrapper(e):
            message = _RAY_NOTE.sub("", str(e.args[0]) if e.args else str(e)).strip()
            return DataError(message.splitlines()[0] if message else message)
        if text_match is None:
            found = _MESSAGE_LINE.findall(str(e))
            if found:
                text_match = found[-1].strip()
    return DataError(text_match) if text_match else None


def _wrapped(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, breadth first, each once."""
    queue: list[Any] = [exc]
    seen: set[int] = set()
    while queue:
        e = queue.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        queue += [getattr(e, "cause", None), getattr(e, "controller_failure", None), e.__cause__, e.__context__]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, Mapping):
            queue += list(failures.values())
        queue += list(getattr(e, "exceptions", None) or ())  # an ExceptionGroup's


def _is_ray_wrapper(e: BaseException) -> bool:
    """A ``RayTaskError(DataError)``: Ray's copy of the error, whose text is the remote traceback."""
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover - Ray is a dependency
        return False
    return isinstance(e, RayError)


T = TypeVar("T")


def spaced(n: int, limit: int | None) -> np.ndarray:
    """Positions of at most ``limit`` of ``n`` items, evenly spaced and in order (all when
    ``limit`` is None): a quick run (``data.max_samples``) sees rows from the whole split,
    not only its start, which may be sorted by class."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def capped(items: Sequence[T], limit: int | None) -> list[T]:
    """At most ``limit`` of ``items`` (:func:`spaced`)."""
    return [items[int(i)] for i in spaced(len(items), limit)]


def sample_settings(cfg: Any, defaults: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """``data.sample`` (the generated sample's settings) over ``defaults``; an unknown key or
    a value of the wrong kind is a :class:`ConfigError` naming ``data.sample.<key>``.

    Integers must be whole numbers >= 1 (``seed`` >= 0), floats finite numbers in [0, 1];
    a default of None or a mapping takes any value of that kind.
    """
    given = dict(cfg.data.sample)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown data.sample key(s) {unknown} for {dataset}; known: {sorted(defaults)}")
    out = {**defaults, **given}
    for key, value in given.items():
        default = defaults[key]
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            low = 0 if key == "seed" else 1
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
            want = f"a whole number >= {low}"
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            ok, want = ok and 0.0 <= value <= 1.0, "a number in [0, 1]"
        elif isinstance(default, Mapping) or default is None:
            ok, want = value is None or isinstance(value, Mapping), "a mapping"
        else:
            ok, want = True, ""
        if not ok:
            raise ConfigError(f"data.sample.{key} must be {want}, got {value!r}")
    return out
