"""The split contract shared by every dataset: an index read in map_batches, the training
split shuffled globally every epoch from the run's seed."""

from __future__ import annotations

from typing import Any

import numpy as np

from i2m2_ray.data.base import index_dataset


class Double:
    """A reader: row numbers -> a value column (``2 * row``), as a dataset's UDF would."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"row": batch["row"], "x": 2 * batch["row"]}


def epochs(ds: Any, n: int) -> list[list[int]]:
    it = ds.iterator()  # what a Ray Train worker iterates: one execution per epoch
    return [[int(r) for b in it.iter_batches(batch_size=7) for r in b["row"]] for _ in range(n)]


def test_training_order_is_a_new_global_shuffle_every_epoch(ray_local: None) -> None:
    items = [{"row": i} for i in range(60)]
    ds = index_dataset(items, Double(), batch_size=16, blocks=4, shuffle_seed=3)
    first = epochs(ds, 3)
    assert all(sorted(e) == list(range(60)) for e in first)  # every row once per epoch
    assert first[0] != first[1] != first[2]  # a new order every epoch...
    # ...across blocks: rows of the last block reach the first batch (a local buffer could not)
    assert any(r >= 45 for r in first[0][:7]) or any(r >= 45 for r in first[1][:7])
    again = index_dataset(items, Double(), batch_size=16, blocks=4, shuffle_seed=3)
    assert epochs(again, 3) == first  # one seed, one sequence of epochs
    other = index_dataset(items, Double(), batch_size=16, blocks=4, shuffle_seed=4)
    assert epochs(other, 1)[0] != first[0]
    rows = [{"row": int(b["row"][i]), "x": int(b["x"][i])} for b in ds.iter_batches(batch_size=60) for i in range(60)]
    assert all(r["x"] == 2 * r["row"] for r in rows)  # the reader ran after the shuffle, row by row


def test_evaluation_splits_keep_their_order_and_a_cached_split_shuffles_its_rows(ray_local: None) -> None:
    items = [{"row": i} for i in range(40)]
    plain = index_dataset(items, Double(), batch_size=16, blocks=4)
    assert epochs(plain, 2) == [list(range(40))] * 2
    cached = index_dataset(items, Double(), batch_size=16, blocks=4, shuffle_seed=1, cache=True)
    orders = epochs(cached, 2)
    assert orders[0] != orders[1] and all(sorted(o) == list(range(40)) for o in orders)
