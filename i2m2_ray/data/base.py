"""The dataset contract: what a dataset is (:class:`Dataset`), the command-line flags it
declares (:class:`Flag`), what it hands the training code (:class:`PreparedData`: a task
spec, Ray Datasets and the input facts the encoders are built from), and helpers every
dataset shares (an index read in ``map_batches``, the per-epoch shuffle).

A dataset never builds a model: it says what its inputs are (``PreparedData.info``, see
:data:`FACTS`), and :mod:`i2m2_ray.models.registry` builds the encoder ``model.encoder``
names from those facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from i2m2_ray.spec import TaskSpec, label_column

__all__ = [
    "FACTS",
    "DataError",
    "Dataset",
    "Flag",
    "PreparedData",
    "index_dataset",
    "label_column",
    "quiet_data_context",
    "shuffle_seed",
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
    """Bad input data; the message names the file, the field and what was expected."""


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
    """

    spec: TaskSpec
    datasets: dict[str, ray.data.Dataset]
    class_counts: dict[str, list[int]]
    sizes: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)


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
    ds: ray.data.Dataset = index.map_batches(reader, batch_size=batch_size, batch_format="numpy")
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
