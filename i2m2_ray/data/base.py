"""What every dataset module hands the training code: a task spec and Ray Datasets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from i2m2_ray.spec import TaskSpec

if TYPE_CHECKING:
    import ray.data

    from i2m2_ray.models.build import EncoderFactory

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data; the message names the file, the field and what was expected."""


def label_column(head: str) -> str:
    """Batch column that holds the integer class of one label head."""
    return f"y_{head}"


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


def split_counts(n: int, fractions: Mapping[str, float] | list[float]) -> list[int]:
    """Sizes of train/val/test for ``n`` items; the remainder goes to train."""
    fr = list(fractions.values()) if isinstance(fractions, Mapping) else list(fractions)
    val = int(round(n * fr[1]))
    test = int(round(n * fr[2]))
    return [n - val - test, val, test]


def seeded_split(ids: list[str], fractions: list[float], seed: int) -> dict[str, list[str]]:
    """Shuffle ``ids`` (sorted first, so the result depends on the seed only) and cut them."""
    order = sorted(ids)
    rng = np.random.default_rng(seed)
    perm = [order[i] for i in rng.permutation(len(order))]
    n_train, n_val, _ = split_counts(len(perm), fractions)
    return {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
