"""Bootstrap intervals: coverage of a known case, determinism, undefined resamples, speed."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np
import pytest

from i2m2_ray.evaluation.bootstrap import (
    bootstrap_intervals,
    percentile_interval,
    resample_values,
    with_intervals,
)
from i2m2_ray.training.metrics import compute_metrics

from .test_resampled import make_task


def bernoulli_head(n: int, accuracy: float, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A binary head whose prediction is right with probability ``accuracy``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.random(n) < accuracy
    pred = np.where(right, y, 1 - y)
    return {"y": y}, {"y": np.eye(2)[pred] * 0.8 + 0.1}


def test_accuracy_interval_matches_the_normal_approximation() -> None:
    labels, probs = bernoulli_head(1000, 0.7, seed=0)
    acc = compute_metrics(labels, probs)["accuracy"]
    half = 1.959964 * math.sqrt(acc * (1 - acc) / 1000)  # about 0.028
    low, high = bootstrap_intervals(labels, probs, n_resamples=2000, seed=1)["accuracy"]
    assert low == pytest.approx(acc - half, abs=0.004)
    assert high == pytest.approx(acc + half, abs=0.004)


def test_a_seed_fixes_the_intervals() -> None:
    labels, probs = make_task(100, {"a": 2, "b": 2}, seed=0)
    first = bootstrap_intervals(labels, probs, n_resamples=200, seed=3)
    assert bootstrap_intervals(labels, probs, n_resamples=200, seed=3) == first
    assert bootstrap_intervals(labels, probs, n_resamples=200, seed=4) != first


def test_vectorised_path_equals_calling_compute_metrics_per_resample() -> None:
    labels, probs = make_task(40, {"a": 2, "b": 2, "answer": -5}, seed=1)

    def per_resample(lab: Mapping[str, np.ndarray], pr: Mapping[str, np.ndarray]) -> dict[str, float]:
        return compute_metrics(lab, pr)  # not compute_metrics itself: takes the slow path

    fast = resample_values(labels, probs, n_resamples=30, seed=2)
    slow = resample_values(labels, probs, metric_fn=per_resample, n_resamples=30, seed=2)
    assert list(fast) == list(slow)
    for name in fast:
        np.testing.assert_allclose(fast[name], slow[name], atol=1e-12, err_msg=name)


def test_resamples_without_a_positive_are_left_out_of_auroc_only() -> None:
    # one positive in six rows: (5/6)^6, about a third, of the resamples lack it
    labels = {"y": np.array([1, 0, 0, 0, 0, 0])}
    probs = {"y": np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.7, 0.3]])}
    values = resample_values(labels, probs, n_resamples=600, seed=0)
    missing = np.isnan(values["auroc"])
    assert 0.25 < missing.mean() < 0.42
    assert not np.isnan(values["accuracy"]).any()
    low, high = bootstrap_intervals(labels, probs, n_resamples=600, seed=0)["auroc"]
    assert (low, high) == tuple(np.percentile(values["auroc"][~missing], [2.5, 97.5]))


def test_no_finite_resample_gives_nan_interval() -> None:
    low, high = percentile_interval(np.array([math.nan, math.nan]))
    assert math.isnan(low) and math.isnan(high)
    assert percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))
    with pytest.raises(ValueError, match="level"):
        percentile_interval(np.arange(3.0), level=95)


def test_with_intervals_adds_bounds_after_each_metric() -> None:
    out = with_intervals({"auroc": 0.8, "loss": 0.3}, {"auroc": (0.7, 0.9)})
    assert out == {"auroc": 0.8, "auroc_ci_low": 0.7, "auroc_ci_high": 0.9, "loss": 0.3}
    assert list(out) == ["auroc", "auroc_ci_low", "auroc_ci_high", "loss"]


def test_mismatched_rows_raise() -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        bootstrap_intervals({"a": np.zeros(3, int)}, {"a": np.full((4, 2), 0.5)})
    with pytest.raises(ValueError, match="same, non-empty heads"):
        bootstrap_intervals({"a": np.zeros(3, int)}, {"b": np.full((3, 2), 0.5)})


@pytest.mark.parametrize(("heads", "budget_s"), [({"a": 2, "b": 2, "c": 2, "d": 2}, 5.0), ({"digit": 10}, 10.0)])
def test_a_thousand_resamples_of_a_thousand_rows_are_fast(heads: dict[str, int], budget_s: float) -> None:
    labels, probs = make_task(1000, heads, seed=0)
    start = time.perf_counter()
    intervals = bootstrap_intervals(labels, probs, n_resamples=1000)
    assert time.perf_counter() - start < budget_s
    assert all(low <= high for low, high in intervals.values())
