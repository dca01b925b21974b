"""Percentile bootstrap intervals of evaluation metrics (NumPy in, floats out).

Rows (samples) are resampled with replacement, the same rows for every label head, so
the interval of a mean over heads respects that heads share their inputs. With the default
``metric_fn`` (:func:`~i2m2_ray.training.metrics.compute_metrics`) every resample is scored
at once by :mod:`i2m2_ray.evaluation.resampled`; any other ``metric_fn`` is called once per
resample on the resampled rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from i2m2_ray.evaluation.resampled import draw_counts, resampled_metrics
from i2m2_ray.training.metrics import compute_metrics

MetricFn = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], Mapping[str, float]]
Interval = tuple[float, float]

# resamples scored per pass: keeps the (chunk, N) arrays of the vectorised path near 16 MB
_CELLS_PER_CHUNK = 2_000_000


def _rows(labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray]) -> int:
    """The number of samples, checked to be the same for every head's labels and probabilities."""
    if not labels or set(labels) != set(probs):
        raise ValueError(f"labels and probs must name the same, non-empty heads; got {sorted(labels)}, {sorted(probs)}")
    sizes = {len(a) for a in (*labels.values(), *probs.values())}
    if len(sizes) != 1:
        raise ValueError(f"every head needs the same number of rows; got sizes {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    return n


def _draws(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of the resamples, ``(chunk, n)`` at a time, from one seeded Generator."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // n)  # depends on n only, so a seed always draws the same rows
    for start in range(0, n_resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_resamples - start), n))


def _stacked(results: list[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """Per-resample dicts -> metric name -> ``(B,)``; a metric missing from a resample counts as NaN."""
    names = list(dict.fromkeys(name for r in results for name in r))
    return {name: np.array([r.get(name, math.nan) for r in results], dtype=np.float64) for name in names}


def resample_values(
    labels: Mapping[str, np.ndarray],
    probs: Mapping[str, np.ndarray],
    metric_fn: MetricFn = compute_metrics,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Every metric of every bootstrap resample.

    Args:
        labels: head -> ``(N,)`` classes, or ``(N, C)`` soft scores of a multi-label head.
        probs: head -> ``(N, C)`` probabilities.
        metric_fn: ``(labels, probs) -> {name: value}``; ``compute_metrics`` takes the fast path.
        n_resamples: number of resamples ``B``.
        seed: seeds the ``numpy`` Generator that draws the rows.
    Returns:
        metric name -> ``(B,)`` values (NaN where undefined for a resample).
    """
    labels = {h: np.asarray(a) for h, a in labels.items()}
    probs = {h: np.asarray(a) for h, a in probs.items()}
    n = _rows(labels, probs)
    if metric_fn is compute_metrics:
        parts = [resampled_metrics(labels, probs, draw_counts(rows, n)) for rows in _draws(n, n_resamples, seed)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    results = [
        metric_fn({h: a[i] for h, a in labels.items()}, {h: a[i] for h, a in probs.items()})
        for rows in _draws(n, n_resamples, seed)
        for i in rows
    ]
    return _stacked(results)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """The central ``level`` percentile interval of the finite values; ``(nan, nan)`` if none are.

    Args:
        values: ``(B,)`` one metric over the resamples.
        level: coverage, in ``(0, 1)``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def bootstrap_intervals(
    labels: Mapping[str, np.ndarray],
    probs: Mapping[str, np.ndarray],
    metric_fn: MetricFn = compute_metrics,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """Percentile bootstrap interval of every metric ``metric_fn`` reports.

    Each resample draws ``N`` rows with replacement (the same rows for every head). A metric's
    interval uses only the resamples where it is finite: a resample without positives, where
    AUROC is undefined, is left out of the AUROC interval alone.

    Args:
        labels: head -> ``(N,)`` classes, or ``(N, C)`` soft scores of a multi-label head.
        probs: head -> ``(N, C)`` probabilities.
        metric_fn: ``(labels, probs) -> {name: value}``. The default, ``compute_metrics``, is
            computed for all resamples at once (vectorised); any other is called per resample.
        n_resamples: number of resamples.
        seed: seeds the draws (``numpy.random.default_rng``); same seed, same intervals.
        level: coverage of the intervals.
    Returns:
        metric name -> ``(low, high)``; ``(nan, nan)`` where no resample gave a finite value.
    """
    values = resample_values(labels, probs, metric_fn, n_resamples, seed)
    return {name: percentile_interval(v, level) for name, v in values.items()}


def with_intervals(metrics: Mapping[str, float], intervals: Mapping[str, Interval]) -> dict[str, float]:
    """``metrics`` with ``<metric>_ci_low`` and ``<metric>_ci_high`` after every metric that has an interval."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        out[name] = value
        if name in intervals:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = intervals[name]
    return out
