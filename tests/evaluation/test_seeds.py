"""Seeds' summaries -> one comparison, with known numbers."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from i2m2_ray.evaluation.seeds import compare_seeds, comparison_markdown


def _seed(inter: float, intra: float, i2m2: float, inter_acc: float) -> dict[str, dict[str, float]]:
    return {
        "inter": {"auroc_mean": inter, "acc": inter_acc},
        "intra": {"auroc_mean": intra, "acc": 0.8},
        "i2m2": {"auroc_mean": i2m2, "acc": 0.9},
    }


SUMMARIES = {0: _seed(0.80, 0.85, 0.90, 0.7), 1: _seed(0.70, 0.86, 0.93, 0.6), 2: _seed(0.75, 0.84, 0.96, 0.7)}


def test_means_spreads_and_paired_differences() -> None:
    c = compare_seeds(SUMMARIES, ["auroc_mean", "acc"])
    assert c["seeds"] == [0, 1, 2] and c["models"] == ["inter", "intra", "i2m2"]
    assert c["mean"]["i2m2"]["auroc_mean"] == pytest.approx(0.93)
    assert c["std"]["i2m2"]["auroc_mean"] == pytest.approx(0.03)  # sample std of .90 .93 .96
    d = c["paired"]["inter"]["auroc_mean"]  # differences .10 .23 .21
    assert d["mean_difference"] == pytest.approx(0.18)
    sd = math.sqrt(((0.10 - 0.18) ** 2 + (0.05) ** 2 + (0.03) ** 2) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.18 - half, 0.18 + half))
    assert d["p_value"] == pytest.approx(stats.ttest_rel([0.90, 0.93, 0.96], [0.80, 0.70, 0.75]).pvalue)
    assert "i2m2" not in c["paired"]
    text = comparison_markdown(c)
    assert "| i2m2 | 0.900 | 0.930 | 0.960 | 0.930 ± 0.030 |" in text
    assert "| inter | +0.180 [" in text and "paired two-sided t-test" in text


def test_a_missing_value_is_nan_and_one_seed_has_no_spread() -> None:
    c = compare_seeds({0: SUMMARIES[0], 1: {"inter": {}, "intra": {}, "i2m2": {}}}, ["acc"])
    assert math.isnan(c["per_seed"]["inter"]["acc"][1])
    one = compare_seeds({3: SUMMARIES[0]}, ["acc"])
    assert math.isnan(one["std"]["i2m2"]["acc"]) and math.isnan(one["paired"]["intra"]["acc"]["p_value"])
    with pytest.raises(ValueError, match="no seeds"):
        compare_seeds({}, ["acc"])
