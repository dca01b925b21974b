"""ECE, Brier score and reliability curves of hand-made probabilities, computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from i2m2_ray.evaluation.calibration import (
    bin_index,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    reliability_curve,
)

# binary head: P(class 1) per sample. Top-label confidences 0.9, 0.8, 0.7, 0.6, 0.55;
# predictions 1, 1, 0, 1, 1 against labels 1, 0, 0, 1, 0 -> correct 1, 0, 1, 1, 0
BINARY_P1 = np.array([0.9, 0.8, 0.3, 0.6, 0.55])
BINARY_Y = np.array([1, 0, 0, 1, 0])
BINARY_P = np.stack([1 - BINARY_P1, BINARY_P1], axis=1)

# 3-class head: confidences 0.7, 0.5, 0.8, 0.4; predictions 0, 1, 2, 0 -> correct 1, 0, 1, 0
MULTI_P = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]])
MULTI_Y = np.array([0, 2, 2, 1])

# multi-label head (VQA-like soft scores): top classes 0, 1, 2 with confidences 0.9, 0.7, 0.3
# and soft scores 1, 0.6, 0
ML_S = np.array([[1.0, 0.3, 0.0], [0.0, 0.6, 1.0], [0.0, 0.0, 0.0]])
ML_P = np.array([[0.9, 0.2, 0.1], [0.1, 0.7, 0.4], [0.05, 0.0, 0.3]])


def test_binary_ece_by_hand() -> None:
    # bins of width 1/3: (1/3, 2/3] holds 0.6, 0.55 (conf 0.575, acc 1/2);
    # (2/3, 1] holds 0.9, 0.8, 0.7 (conf 0.8, acc 2/3)
    expected = 2 / 5 * abs(0.5 - 0.575) + 3 / 5 * abs(2 / 3 - 0.8)
    assert expected_calibration_error(BINARY_Y, BINARY_P, bins=3) == pytest.approx(expected)
    assert expected == pytest.approx(0.11)


def test_binary_ece_with_the_default_fifteen_bins() -> None:
    # confidences 0.95, 0.82, 0.7, 0.58, 0.55 (correct 1, 0, 1, 1, 0), none near an edge k/15:
    # bins (14/15, 1], (12/15, 13/15], (10/15, 11/15] hold one each, (8/15, 9/15] holds 0.58 and 0.55
    p1 = np.array([0.95, 0.82, 0.3, 0.58, 0.55])
    expected = (0.05 + 0.82 + 0.3 + 2 * abs(0.5 - 0.565)) / 5
    assert expected_calibration_error(BINARY_Y, np.stack([1 - p1, p1], axis=1)) == pytest.approx(expected)
    assert reliability_curve(BINARY_Y, np.stack([1 - p1, p1], axis=1)).counts[[8, 10, 12, 14]].tolist() == [2, 1, 1, 1]


def test_multiclass_ece_puts_a_confidence_on_an_edge_in_the_bin_below() -> None:
    # bins (0, 0.5] and (0.5, 1]: 0.5 and 0.4 (conf 0.45, acc 0); 0.7 and 0.8 (conf 0.75, acc 1)
    expected = 0.5 * 0.45 + 0.5 * 0.25
    assert expected_calibration_error(MULTI_Y, MULTI_P, bins=2) == pytest.approx(expected)


def test_bin_edges_put_zero_first_and_one_last() -> None:
    assert bin_index(np.array([0.0, 1.0, 0.5, 0.25, 0.26, 1e-9]), 4).tolist() == [0, 3, 1, 0, 1, 0]


def test_perfectly_calibrated_sample_has_zero_ece() -> None:
    # confidence 0.75 everywhere, 3 of 4 right
    p = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(np.array([0, 0, 0, 1]), p) == pytest.approx(0.0)


def test_binary_brier_matches_hand_and_sklearn() -> None:
    expected = (0.1**2 + 0.8**2 + 0.3**2 + 0.4**2 + 0.55**2) / 5
    assert brier_score(BINARY_Y, BINARY_P) == pytest.approx(expected)
    assert brier_score(BINARY_Y, BINARY_P) == pytest.approx(brier_score_loss(BINARY_Y, BINARY_P1))


def test_multiclass_brier_sums_over_classes() -> None:
    rows = [
        0.3**2 + 0.2**2 + 0.1**2,
        0.2**2 + 0.5**2 + 0.7**2,
        0.1**2 + 0.1**2 + 0.2**2,
        0.4**2 + 0.65**2 + 0.25**2,
    ]
    assert brier_score(MULTI_Y, MULTI_P) == pytest.approx(np.mean(rows))
    assert brier_score(MULTI_Y, MULTI_P) == pytest.approx(0.40625)


def test_reliability_curve_counts_and_means() -> None:
    curve = reliability_curve(MULTI_Y, MULTI_P, bins=4)
    # edges 0, .25, .5, .75, 1: 0.4 and 0.5 -> bin 1, 0.7 -> bin 2, 0.8 -> bin 3
    assert curve.counts.tolist() == [0, 2, 1, 1]
    assert curve.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert math.isnan(curve.confidence[0]) and math.isnan(curve.accuracy[0])
    np.testing.assert_allclose(curve.confidence[1:], [0.45, 0.7, 0.8])
    np.testing.assert_allclose(curve.accuracy[1:], [0.0, 1.0, 1.0])
    assert curve.ece == pytest.approx((2 * 0.45 + 0.3 + 0.2) / 4)


def test_multilabel_head_uses_the_soft_score_of_the_top_class() -> None:
    # bins (0, .5]: conf 0.3, score 0; (.5, 1]: conf 0.9 and 0.7 (0.8), scores 1 and 0.6 (0.8)
    assert expected_calibration_error(ML_S, ML_P, bins=2) == pytest.approx(0.3 / 3)
    curve = reliability_curve(ML_S, ML_P, bins=2)
    assert curve.counts.tolist() == [1, 2]
    np.testing.assert_allclose(curve.accuracy, [0.0, 0.8])
    assert brier_score(ML_S, ML_P) == pytest.approx(np.mean((ML_P - ML_S) ** 2))
    assert brier_score(ML_S, ML_P) == pytest.approx((0.03 + 0.38 + 0.0925) / 9)


def test_calibration_metrics_follow_compute_metrics_naming() -> None:
    two = calibration_metrics({"b": BINARY_Y, "a": BINARY_Y}, {"b": BINARY_P, "a": BINARY_P[::-1]}, bins=3)
    assert list(two) == ["ece_a", "brier_a", "ece_b", "brier_b", "ece_mean", "brier_mean"]
    assert two["ece_b"] == pytest.approx(0.11)
    assert two["ece_mean"] == pytest.approx((two["ece_a"] + two["ece_b"]) / 2)
    one = calibration_metrics({"answer": ML_S}, {"answer": ML_P}, bins=2)
    assert one["ece"] == one["ece_answer"] == one["ece_mean"] == pytest.approx(0.1)
    assert one["brier"] == one["brier_answer"]


def test_empty_sample_is_nan_and_bad_shapes_raise() -> None:
    assert math.isnan(expected_calibration_error(np.zeros(0, int), np.zeros((0, 3))))
    assert math.isnan(brier_score(np.zeros(0, int), np.zeros((0, 3))))
    with pytest.raises(ValueError, match="labels for"):
        brier_score(np.array([0, 1]), MULTI_P)
    with pytest.raises(ValueError, match="differ in shape"):
        expected_calibration_error(ML_S[:, :2], ML_P)
    with pytest.raises(KeyError, match="only one"):
        calibration_metrics({"a": BINARY_Y}, {"b": BINARY_P})
