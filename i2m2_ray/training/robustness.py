"""Predicting with a modality missing or noisy, for every paradigm alike (pure torch).

* **Missing.** A product of experts (intra, I2M2) drops every expert that reads a missing
  modality and renormalises the product of the rest (the missing input is never read); a
  single expert (a unimodal baseline, the inter expert) gets the modality filled with its
  training-split mean (or zeros; token ids: padding), so every paradigm is scored under the
  same loss of information.
* **Noisy.** Continuous inputs get Gaussian noise of ``level`` times the modality's
  training-split standard deviation, element by element; token ids are dropped (replaced by
  padding) with probability ``level``, the first ([CLS]) kept. Level 0 changes nothing, so
  it reproduces the clean predictions exactly.

The training-split statistics come from :func:`input_stats` over the training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from i2m2_ray.models.experts import ProductOfExperts
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.loop import predict
from i2m2_ray.training.metrics import compute_metrics

Batches = Iterable[Mapping[str, Tensor]]
FILLS = ("mean", "zeros")


@dataclass(frozen=True)
class InputStats:
    """Per-element mean and standard deviation of each continuous modality over (a sample
    of) the training split; token-id modalities have none.

    Attributes:
        mean: modality -> one sample's shape, float32.
        std: modality -> one sample's shape, float32.
        samples: how many training samples they were computed from.
    """

    mean: dict[str, Tensor]
    std: dict[str, Tensor]
    samples: int


def is_tokens(x: Tensor) -> bool:
    """Integer inputs are token ids (text), float inputs are continuous."""
    return not torch.is_floating_point(x)


def input_stats(batches: Batches, modalities: Sequence[str], max_samples: int = 4096) -> InputStats:
    """Mean and standard deviation per element of every continuous modality over the first
    ``max_samples`` samples of ``batches`` (sums in float64)."""
    sums: dict[str, Tensor] = {}
    squares: dict[str, Tensor] = {}
    n = 0
    for batch in batches:
        take = min(len(next(iter(batch.values()))), max_samples - n)
        if take <= 0:
            break
        for m in modalities:
            x = batch[m][:take]
            if is_tokens(x):
                continue
            x64 = x.detach().to("cpu", torch.float64)
            sums[m] = sums.get(m, torch.zeros(x64.shape[1:], dtype=torch.float64)) + x64.sum(0)
            squares[m] = squares.get(m, torch.zeros(x64.shape[1:], dtype=torch.float64)) + (x64 * x64).sum(0)
        n += take
    if n == 0:
        raise ValueError("input_stats: the training batches are empty")
    mean = {m: (s / n) for m, s in sums.items()}
    var = {m: (squares[m] / n - mean[m] ** 2).clamp_min(0.0) for m in sums}
    return InputStats(
        mean={m: v.float() for m, v in mean.items()}, std={m: v.sqrt().float() for m, v in var.items()}, samples=n
    )


def fill_like(x: Tensor, modality: str, stats: InputStats, fill: str, pad_id: int) -> Tensor:
    """What stands in for a missing modality in a batch shaped like ``x``: its training mean
    (or zeros) for continuous inputs, padding for token ids."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if is_tokens(x):
        return torch.full_like(x, pad_id)
    if fill == "zeros" or modality not in stats.mean:
        return torch.zeros_like(x)
    return stats.mean[modality].to(x.device, x.dtype).expand_as(x).clone()


def corrupt(
    x: Tensor, modality: str, level: float, stats: InputStats, generator: torch.Generator, pad_id: int
) -> Tensor:
    """``x`` with noise of ``level`` (see the module docstring); level 0 returns ``x``."""
    if level < 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    if level == 0:
        return x
    if is_tokens(x):
        if level > 1:
            raise ValueError(f"token dropout level must be in [0, 1], got {level}")
        drop = torch.rand(x.shape, generator=generator).to(x.device) < level
        drop[:, 0] = False  # the first token ([CLS]) stays
        return torch.where(drop & (x != pad_id), torch.full_like(x, pad_id), x)
    std = stats.std[modality].to(x.device, x.dtype) if modality in stats.std else torch.ones((), dtype=x.dtype)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return x + level * std * noise


class Available(nn.Module):
    """A product of experts asked over the available modalities only (a thin wrapper, so
    that :func:`~i2m2_ray.training.loop.predict` serves it like any model)."""

    def __init__(self, model: ProductOfExperts, available: Collection[str]) -> None:
        super().__init__()
        self.model = model
        self.available = list(available)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.model(inputs, available=self.available)


def degraded(
    batches: Batches,
    spec: TaskSpec,
    stats: InputStats,
    *,
    missing: Collection[str] = (),
    noise: tuple[str, float] | None = None,
    fill: str = "mean",
    pad_id: int = 0,
    seed: int = 0,
    product: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """``batches`` with ``noise`` (a modality and a level) applied and the ``missing``
    modalities removed (for a product, which drops their experts) or filled (otherwise)."""
    g = torch.Generator().manual_seed(seed)
    for batch in batches:
        out = dict(batch)
        if noise is not None and noise[1] > 0:
            m, level = noise
            out[m] = corrupt(out[m], m, level, stats, g, pad_id)
        for m in missing:
            if product:
                out.pop(m)
            else:
                out[m] = fill_like(out[m], m, stats, fill, pad_id)
        yield out


def predict_degraded(
    model: nn.Module,
    batches: Batches,
    spec: TaskSpec,
    stats: InputStats,
    *,
    missing: Collection[str] = (),
    noise: tuple[str, float] | None = None,
    fill: str = "mean",
    pad_id: int = 0,
    seed: int = 0,
    precision: str = "fp32",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Labels and class probabilities per head, with ``missing`` modalities and ``noise``."""
    unknown = (set(missing) | ({noise[0]} if noise else set())) - set(spec.modalities)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; the task has {list(spec.modalities)}")
    product = isinstance(model, ProductOfExperts)
    runner: nn.Module = model
    if product and missing:
        runner = Available(model, [m for m in spec.modalities if m not in set(missing)])  # type: ignore[arg-type]
    feed = degraded(
        batches, spec, stats, missing=missing, noise=noise, fill=fill, pad_id=pad_id, seed=seed, product=product
    )
    return predict(runner, feed, spec, precision)


def robustness(
    model: nn.Module,
    test_batches: Callable[[], Batches],
    spec: TaskSpec,
    stats: InputStats,
    levels: Sequence[float],
    *,
    fill: str = "mean",
    pad_id: int = 0,
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, dict[str, object]]:
    """Every modality missing, and every modality noisy at every level: ``{"missing":
    {modality: metrics}, "noise": {modality: {"levels": [...], "metrics": [metrics per
    level]}}}``; ``test_batches()`` gives a fresh pass over the test split each time."""

    def scored(**kw: object) -> dict[str, float]:
        return compute_metrics(
            *predict_degraded(
                model, test_batches(), spec, stats, fill=fill, pad_id=pad_id, precision=precision, **kw  # type: ignore[arg-type]
            )
        )

    clean = scored()
    out: dict[str, dict[str, object]] = {"missing": {}, "noise": {}}
    for i, m in enumerate(spec.modalities):
        if len(spec.modalities) > 1:
            out["missing"][m] = scored(missing=[m])
        curve = [clean if level == 0 else scored(noise=(m, float(level)), seed=seed * 1000 + i) for level in levels]
        out["noise"][m] = {"levels": [float(v) for v in levels], "metrics": curve}
    return out
