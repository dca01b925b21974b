"""A split small enough to keep: read through Ray Data once, then served from the training
worker's memory (``train.in_memory_mb``).

Streaming a small split every epoch costs more than the model: for AV-MNIST's LeNets or
MIMIC's GRU, re-reading the files, re-running the preprocessing and re-shuffling the index in
Ray Data, then re-batching Arrow blocks in the worker, took a third to half of the training
process's CPU (benchmarks/README.md, "Ray overhead"). A :class:`HeldSplit` keeps the batches
of the first pass when their tensors fit in the budget; later passes replay them (validation:
same batches, same order, same metrics) or draw one seeded permutation of all their rows
(training: a global shuffle per epoch, as the streamed split's, without touching Ray).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor

MB = 2**20


def nbytes(batch: Mapping[str, object]) -> int | None:
    """The bytes of a batch's tensors; None when a value is not a tensor (not kept)."""
    total = 0
    for value in batch.values():
        if not isinstance(value, Tensor):
            return None
        total += value.numel() * value.element_size()
    return total


class HeldSplit:
    """One split's batches, kept after a complete first pass if they take at most
    ``limit_mb`` MB (0: never kept, every pass streams)."""

    def __init__(self, limit_mb: float) -> None:
        self.limit = int(limit_mb * MB)
        self.batches: list[dict[str, Tensor]] | None = None
        self.rows: dict[str, Tensor] | None = None  # the batches concatenated, for shuffling
        self.size = 0

    @property
    def held(self) -> bool:
        return self.batches is not None or self.rows is not None

    def first_pass(self, batches: Iterable[Mapping[str, Tensor]]) -> Iterator[Mapping[str, Tensor]]:
        """Yield ``batches`` as they come, keeping them while they fit; they are held only
        once the pass has ended (an interrupted pass keeps nothing)."""
        kept: list[dict[str, Tensor]] | None = [] if self.limit > 0 else None
        size = 0
        for batch in batches:
            if kept is not None:
                n = nbytes(batch)
                size += n if n is not None else self.limit + 1
                if size <= self.limit:
                    kept.append(dict(batch))
                else:
                    kept = None  # over the budget: this split streams every pass
            yield batch
        if kept:
            self.batches, self.size = kept, size

    def replay(self) -> Iterator[dict[str, Tensor]]:
        """The held batches, in the order of the first pass."""
        if self.batches is None:
            raise RuntimeError("nothing held: call first_pass (within the budget) first")
        yield from self.batches

    def shuffled(self, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """Every held row once, in the order of one permutation drawn from ``seed``, in
        batches of ``batch_size`` (the last one shorter)."""
        if self.rows is None:
            if self.batches is None:
                raise RuntimeError("nothing held: call first_pass (within the budget) first")
            keys = list(self.batches[0])
            self.rows = {k: torch.cat([b[k] for b in self.batches]) for k in keys}
            self.batches = None  # one copy is enough: replay is for splits never shuffled
        n = next(iter(self.rows.values())).shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        for start in range(0, n, batch_size):
            take = order[start : start + batch_size]
            yield {k: v[take.to(v.device)] for k, v in self.rows.items()}
