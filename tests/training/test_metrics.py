import math

import numpy as np
import pytest

from i2m2_ray.training.metrics import class_weights, compute_metrics, is_better


def test_binary_heads_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    # scores ranked 0.1 < 0.4 < 0.35?  -> one of four positive/negative pairs misordered
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = {"acl": np.stack([1 - p1, p1], 1), "mtear": np.stack([1 - p1, p1], 1)[::-1].copy()}
    labels = {"acl": y, "mtear": y}
    m = compute_metrics(labels, probs)
    assert m["auroc_acl"] == pytest.approx(0.75)
    # predictions (argmax): 0, 0, 0, 1 -> recall 1.0 on class 0, 0.5 on class 1
    assert m["balanced_accuracy_acl"] == pytest.approx(0.75)
    assert m["accuracy_acl"] == pytest.approx(0.75)
    assert m["auroc_mtear"] == pytest.approx(0.25)
    assert m["auroc_mean"] == pytest.approx(0.5)
    assert "auroc" not in m  # plain keys only for single-head tasks


def test_single_head_multiclass_has_plain_keys() -> None:
    y = np.array([0, 1, 2, 2])
    p = np.eye(3)[[0, 1, 2, 1]]
    m = compute_metrics({"digit": y}, {"digit": p})
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["f1_macro"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))


def test_auroc_undefined_with_one_class_is_nan_and_left_out_of_mean() -> None:
    y = np.zeros(4, dtype=int)
    p = np.full((4, 2), 0.5)
    m = compute_metrics({"a": y, "b": np.array([0, 1, 0, 1])}, {"a": p, "b": np.eye(2)[[0, 1, 0, 1]]})
    assert math.isnan(m["auroc_a"])
    assert m["auroc_mean"] == pytest.approx(1.0)


def test_class_weights_balance_counts() -> None:
    w = class_weights({"acl": [30, 10], "rare": [4, 0]})
    assert w["acl"] == pytest.approx([40 / 60, 40 / 20])
    assert w["rare"] == [pytest.approx(0.5), 0.0]


def test_is_better() -> None:
    assert is_better(0.5, None, "max")
    assert is_better(0.6, 0.5, "max") and not is_better(0.4, 0.5, "max")
    assert is_better(0.4, 0.5, "min")
    assert not is_better(float("nan"), 0.5, "max")


def test_auroc_of_a_multiclass_head_with_two_classes_present() -> None:
    y = np.array([0, 2, 2, 0])
    p = np.array([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4], [0.2, 0.1, 0.7]])
    # renormalised over classes 0 and 2: p(2) = 0.25, 6/7, 4/7, 7/9 -> one of the four pairs misordered
    assert compute_metrics({"h": y}, {"h": p})["auroc"] == pytest.approx(0.75)
