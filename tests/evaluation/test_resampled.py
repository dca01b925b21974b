"""The vectorised bootstrap metrics equal compute_metrics, on the full sample and on resamples."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from i2m2_ray.evaluation.resampled import draw_counts, multiclass_auroc, resampled_metrics
from i2m2_ray.training.metrics import compute_metrics

Arrays = dict[str, np.ndarray]


def make_task(n: int, heads: dict[str, int], seed: int) -> tuple[Arrays, Arrays]:
    """Random labels and probabilities; a negative class count makes a multi-label head.

    Probabilities are small integers over their row sum, so scores tie often (as rounded
    model outputs do) and still sum to 1.
    """
    rng = np.random.default_rng(seed)
    labels, probs = {}, {}
    for head, classes in heads.items():
        if classes < 0:
            k = -classes
            labels[head] = rng.choice([0.0, 0.3, 0.6, 0.9, 1.0], size=(n, k), p=[0.8, 0.05, 0.05, 0.05, 0.05])
            probs[head] = rng.integers(0, 8, size=(n, k)) / 8  # sigmoids, with ties
        else:
            labels[head] = rng.integers(0, classes, n)
            weights = rng.integers(1, 4, size=(n, classes)).astype(float)
            probs[head] = weights / weights.sum(axis=1, keepdims=True)
    return labels, probs


SHAPES = [
    (60, {"acl": 2}),
    (200, {"acl": 2, "abnormal": 2, "mtear": 2, "ltear": 2}),
    (300, {"digit": 10}),
    (50, {"ward": 3, "mortality": 2}),
    (80, {"answer": -12}),
    (120, {"answer": -6, "label": 2}),
]


@pytest.mark.parametrize(("n", "heads"), SHAPES)
def test_full_sample_equals_compute_metrics(n: int, heads: dict[str, int]) -> None:
    labels, probs = make_task(n, heads, seed=n)
    expected = compute_metrics(labels, probs)
    got = resampled_metrics(labels, probs, np.ones((1, n)))
    assert list(got) == list(expected)  # same keys, same order
    for name, value in expected.items():
        assert got[name].shape == (1,)
        assert got[name][0] == pytest.approx(value, abs=1e-9, nan_ok=True), name


@pytest.mark.parametrize(("n", "heads"), SHAPES)
def test_each_resample_equals_compute_metrics_on_its_rows(n: int, heads: dict[str, int]) -> None:
    labels, probs = make_task(n, heads, seed=n + 1)
    rng = np.random.default_rng(7)
    indices = rng.integers(0, n, size=(15, n))
    got = resampled_metrics(labels, probs, draw_counts(indices, n))
    for b, rows in enumerate(indices):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn: "y_pred contains classes not in y_true"
            expected = compute_metrics({h: a[rows] for h, a in labels.items()}, {h: a[rows] for h, a in probs.items()})
        for name, value in expected.items():
            assert got[name][b] == pytest.approx(value, abs=1e-9, nan_ok=True), (b, name)


def test_resamples_missing_classes_match_compute_metrics() -> None:
    # 5 classes over 12 rows: most resamples lack at least one class (renormalised one-vs-rest)
    labels, probs = make_task(12, {"d": 5}, seed=3)
    indices = np.random.default_rng(0).integers(0, 12, size=(40, 12))
    got = resampled_metrics(labels, probs, draw_counts(indices, 12))
    checked = 0
    for b, rows in enumerate(indices):
        present = len(np.unique(labels["d"][rows]))
        if present == 2:
            continue  # compute_metrics raises there (scikit-learn); see the next test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = compute_metrics({"d": labels["d"][rows]}, {"d": probs["d"][rows]})
        assert got["auroc"][b] == pytest.approx(expected["auroc"], abs=1e-9, nan_ok=True)
        checked += present < 5
    assert checked > 10


def test_two_classes_left_of_three_average_both_one_vs_rest_curves() -> None:
    y = np.array([0, 2, 0, 2, 2, 0])
    p = np.array([[0.5, 0.2, 0.3], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3], [0.4, 0.1, 0.5], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    kept = p[:, [0, 2]] / p[:, [0, 2]].sum(axis=1, keepdims=True)
    expected = (roc_auc_score(y == 0, kept[:, 0]) + roc_auc_score(y == 2, kept[:, 1])) / 2
    assert multiclass_auroc(y, p, np.ones((1, 6)))[0] == pytest.approx(expected)


def test_counts_weight_rows() -> None:
    # drawing row 0 twice and row 3 never is the sample [0, 0, 1, 2]
    labels = {"d": np.array([0, 1, 2, 1])}
    probs = {"d": np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4], [0.3, 0.4, 0.3]])}
    got = resampled_metrics(labels, probs, np.array([[2.0, 1.0, 1.0, 0.0]]))
    rows = np.array([0, 0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = compute_metrics({"d": labels["d"][rows]}, {"d": probs["d"][rows]})
    for name, value in expected.items():
        assert got[name][0] == pytest.approx(value, abs=1e-12, nan_ok=True)


def test_draw_counts() -> None:
    counts = draw_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_mean_leaves_out_undefined_heads() -> None:
    labels = {"a": np.array([0, 0, 0, 0]), "b": np.array([0, 1, 0, 1])}
    probs = {"a": np.full((4, 2), 0.5), "b": np.eye(2)[[0, 1, 0, 1]]}
    got = resampled_metrics(labels, probs, np.ones((1, 4)))
    assert math.isnan(got["auroc_a"][0])
    assert got["auroc_mean"][0] == pytest.approx(1.0)
