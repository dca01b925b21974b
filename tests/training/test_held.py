"""A split held in memory after its first pass (train.in_memory_mb): what is held, what is
not, and that later passes see every row once."""

from __future__ import annotations

import pytest
import torch

from i2m2_ray.training.held import MB, HeldSplit, nbytes


def batches(n: int, size: int) -> list[dict[str, torch.Tensor]]:
    """Rows 0..n-1 in batches of ``size``: an image-like float column and the row's number."""
    rows = torch.arange(n)
    return [
        {"x": rows[i : i + size, None].float().repeat(1, 4), "label": rows[i : i + size]} for i in range(0, n, size)
    ]


def test_the_first_pass_is_the_stream_and_a_complete_one_is_held() -> None:
    source = batches(10, 4)
    held = HeldSplit(1)
    seen = list(held.first_pass(source))
    assert [b["label"].tolist() for b in seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert held.held and held.size == 10 * (4 * 4 + 8)  # float32 x 4 + int64
    replayed = list(held.replay())
    for a, b in zip(replayed, source, strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["label"], b["label"])


def test_over_the_budget_off_or_interrupted_nothing_is_held() -> None:
    one_batch = nbytes(batches(4, 4)[0])
    assert one_batch == 4 * 4 * 4 + 4 * 8
    over = HeldSplit((2 * one_batch - 1) / MB)  # room for one batch of 4, not two
    assert len(list(over.first_pass(batches(8, 4)))) == 2 and not over.held
    off = HeldSplit(0)
    assert len(list(off.first_pass(batches(8, 4)))) == 2 and not off.held
    cut = HeldSplit(1)
    stream = cut.first_pass(batches(8, 4))
    next(stream)
    stream.close()  # the consumer stopped after one batch
    assert not cut.held
    text = HeldSplit(1)
    list(text.first_pass([{"x": torch.zeros(2), "id": ["a", "b"]}]))  # type: ignore[list-item]
    assert not text.held  # a value that is not a tensor: streamed every pass
    with pytest.raises(RuntimeError, match="nothing held"):
        next(text.replay())


def test_each_shuffled_pass_is_every_row_once_in_a_seeded_order() -> None:
    held = HeldSplit(1)
    list(held.first_pass(batches(10, 4)))
    one = list(held.shuffled(3, seed=7))
    assert [len(b["label"]) for b in one] == [3, 3, 3, 1]
    order = torch.cat([b["label"] for b in one])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    for b in one:  # rows stay whole: x's row is its label's
        assert torch.equal(b["x"][:, 0].long(), b["label"])
    again = torch.cat([b["label"] for b in held.shuffled(3, seed=7)])
    other = torch.cat([b["label"] for b in held.shuffled(3, seed=8)])
    assert torch.equal(order, again) and not torch.equal(order, other)
