"""What every dataset module hands the training code: a task spec and Ray Datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from i2m2_ray.spec import TaskSpec, label_column

__all__ = ["DataError", "PreparedData", "index_dataset", "label_column", "quiet_data_context", "shuffle_seed"]

if TYPE_CHECKING:
    import ray.data

    from i2m2_ray.models.build import EncoderFactory

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data; the message names the file, the field and what was expected."""


@dataclass
class PreparedData:
    """A dataset ready for training.

    Attributes:
        spec: modality names and label heads.
        datasets: ``train``/``val``/``test`` Ray Datasets; each row holds one array per
            modality and one ``y_<head>`` integer per head. Lazy: nothing is read until a
            trainer iterates them.
        encoders: builds the dataset's encoder for a list of modalities.
        class_counts: head -> per-class counts on the training split (for loss weights).
        sizes: split -> number of samples.
        info: counts worth logging (skipped volumes, ...).
    """

    spec: TaskSpec
    datasets: dict[str, ray.data.Dataset]
    encoders: EncoderFactory
    class_counts: dict[str, list[int]]
    sizes: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)


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
