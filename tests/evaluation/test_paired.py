"""Mean and spread over seeds; the paired difference against scipy and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from i2m2_ray.evaluation.paired import mean_std, paired_difference

A = [0.80, 0.85, 0.83, 0.90]  # e.g. I2M2's AUROC over four seeds
B = [0.78, 0.80, 0.84, 0.85]  # and the intra model's, seed by seed


def test_mean_std_uses_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    mean, std = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))


def test_paired_difference_by_hand() -> None:
    # d = 0.02, 0.05, -0.01, 0.05: mean 0.0275, squared deviations sum to 0.002475
    sd = math.sqrt(0.002475 / 3)
    se = sd / 2
    t_975_3 = 3.182446305284263  # the 97.5% quantile of Student's t with 3 degrees of freedom
    out = paired_difference(A, B)
    assert out["n"] == 4 and out["note"] == ""
    assert out["mean_difference"] == pytest.approx(0.0275)
    assert out["ci_low"] == pytest.approx(0.0275 - t_975_3 * se)
    assert out["ci_high"] == pytest.approx(0.0275 + t_975_3 * se)
    assert out["statistic"] == pytest.approx(0.0275 / se)
    assert "ttest_rel" in out["test"]


def test_paired_difference_agrees_with_scipy() -> None:
    out = paired_difference(A, B, level=0.9)
    ref = stats.ttest_rel(A, B)
    assert out["statistic"] == pytest.approx(ref.statistic)
    assert out["p_value"] == pytest.approx(ref.pvalue)
    low, high = ref.confidence_interval(confidence_level=0.9)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((low, high))


def test_one_pair_gives_nan_with_a_note() -> None:
    out = paired_difference([0.9], [0.8])
    assert out["mean_difference"] == pytest.approx(0.1) and out["n"] == 1
    assert math.isnan(out["ci_low"]) and math.isnan(out["ci_high"]) and math.isnan(out["p_value"])
    assert "at least 2" in out["note"]


def test_equal_differences_give_a_zero_width_interval() -> None:
    out = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert out["ci_low"] == pytest.approx(0.1) and out["ci_high"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference(np.arange(3.0), np.arange(2.0))
