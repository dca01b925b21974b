"""Calibration of predicted probabilities: expected calibration error, Brier score and
the reliability curve behind both (NumPy in, floats out).

Conventions, shared by every function here:

* **Top-label confidence** (Guo et al., 2017): a sample's confidence is the probability of
  its predicted (top-scoring) class, its correctness whether that class is the label. A
  binary head is treated like any other, so its confidences lie in ``[0.5, 1]``.
* **Bins**: ``bins`` equal-width bins on ``[0, 1]`` with edges ``np.linspace(0, 1, bins + 1)``.
  Bins are closed on the right, ``(edges[b], edges[b + 1]]``, except that a confidence of
  exactly 0 goes to the first bin; a confidence of 1 falls in the last bin. A confidence
  equal to an inner edge (as stored in that array) belongs to the bin below the edge.
* **Multi-label heads** (labels are ``(N, C)`` soft scores, e.g. VQA's ``min(1, humans/3)``;
  probabilities are per-class sigmoids): the confidence is the probability of the top-scoring
  class and its "accuracy" is that class's soft score, so the ECE compares confidence with
  the expected VQA accuracy of the prediction. The Brier score is the mean over samples and
  classes of ``(p - s)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin statistics of a reliability diagram (empty bins have NaN confidence and accuracy).

    Attributes:
        confidence: ``(bins,)`` mean confidence of the samples in each bin.
        accuracy: ``(bins,)`` their accuracy (for a multi-label head, their mean soft score).
        counts: ``(bins,)`` number of samples in each bin.
        edges: ``(bins + 1,)`` bin edges, ``np.linspace(0, 1, bins + 1)``.
    """

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    edges: np.ndarray

    @property
    def ece(self) -> float:
        """``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over non-empty bins (NaN if no samples)."""
        total = int(self.counts.sum())
        if total == 0:
            return math.nan
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.counts[filled] * gaps).sum() / total)


def _check(y: np.ndarray, p: np.ndarray) -> None:
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, C) with C >= 2; got shape {p.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"labels must be (N,) classes or (N, C) soft scores; got shape {y.shape}")
    if y.ndim == 1 and len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} rows of probabilities")
    if y.ndim == 2 and y.shape != p.shape:
        raise ValueError(f"multi-label scores {y.shape} and probabilities {p.shape} differ in shape")


def top_label(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness of each sample's top-scoring class.

    Args:
        y: ``(N,)`` integer classes, or ``(N, C)`` soft scores of a multi-label head.
        p: ``(N, C)`` probabilities (softmax rows, or per-class sigmoids when multi-label).

    Returns:
        ``(N,)`` confidences and ``(N,)`` correctness: 0/1, or the top class's soft score.
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    _check(y, p)
    rows = np.arange(len(p))
    pred = p.argmax(axis=1)
    confidence = p[rows, pred]
    if y.ndim == 2:
        return confidence, y[rows, pred].astype(np.float64)
    return confidence, (pred == y).astype(np.float64)


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each confidence under the right-closed convention of this module: ``(N,)`` ints."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a value equal to an edge in the bin below it; 0 lands at -1, hence the clip
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def reliability_curve(y: np.ndarray, p: np.ndarray, bins: int = 15) -> ReliabilityCurve:
    """Mean confidence, accuracy and count of the samples in each confidence bin.

    Args:
        y: ``(N,)`` integer classes, or ``(N, C)`` soft scores of a multi-label head.
        p: ``(N, C)`` probabilities.
        bins: number of equal-width bins on ``[0, 1]`` (see the module's edge convention).
    """
    confidence, correct = top_label(y, p)
    which = bin_index(confidence, bins)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: 0 / 0 -> NaN on purpose
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    return ReliabilityCurve(mean_conf, accuracy, counts, np.linspace(0.0, 1.0, bins + 1))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE = ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over non-empty bins of top-label confidence.

    Args:
        y: ``(N,)`` integer classes, or ``(N, C)`` soft scores of a multi-label head.
        p: ``(N, C)`` probabilities.
        bins: number of equal-width bins on ``[0, 1]``.

    Returns:
        The ECE in ``[0, 1]``; NaN for an empty sample.
    """
    return reliability_curve(y, p, bins).ece


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities against the outcomes.

    * Binary head (``C == 2``): ``mean_i (p_i1 - y_i)^2``, the positive class's probability
      against the 0/1 label, as ``sklearn.metrics.brier_score_loss``; in ``[0, 1]``.
    * Multi-class head (``C > 2``): ``mean_i sum_c (p_ic - 1[y_i = c])^2``, Brier's original
      form; in ``[0, 2]``. (For ``C == 2`` this form would give exactly twice the binary one.)
    * Multi-label head (``y`` of shape ``(N, C)``): ``mean_{i,c} (p_ic - s_ic)^2``.

    Args:
        y: ``(N,)`` integer classes, or ``(N, C)`` soft scores of a multi-label head.
        p: ``(N, C)`` probabilities.

    Returns:
        The Brier score; NaN for an empty sample.
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    _check(y, p)
    if len(p) == 0:
        return math.nan
    if y.ndim == 2:
        return float(np.mean((p - y) ** 2))
    if p.shape[1] == 2:
        return float(np.mean((p[:, 1] - y) ** 2))
    onehot = y[:, None] == np.arange(p.shape[1])[None, :]
    return float(np.mean(((p - onehot) ** 2).sum(axis=1)))


def with_means(per_head: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``<metric>_<head>``, ``<metric>_mean`` over heads (NaN left out) and, for a single head,
    the plain ``<metric>``: the naming of :func:`i2m2_ray.training.metrics.compute_metrics`."""
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    for head in sorted(per_head):
        for name, value in per_head[head].items():
            out[f"{name}_{head}"] = value
            per.setdefault(name, []).append(value)
    for name, values in per.items():
        finite = [v for v in values if not math.isnan(v)]
        out[f"{name}_mean"] = float(np.mean(finite)) if finite else math.nan
        if len(per_head) == 1:
            out[name] = values[0]
    return out


def calibration_metrics(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], bins: int = 15
) -> dict[str, float]:
    """``ece_<head>``, ``brier_<head>``, their ``_mean`` over heads and, for a single-head task,
    plain ``ece`` and ``brier``.

    Args:
        labels: head -> ``(N,)`` classes, or ``(N, C)`` soft scores for a multi-label head.
        probs: head -> ``(N, C)`` probabilities.
        bins: number of ECE bins.
    """
    missing = set(labels) ^ set(probs)
    if missing:
        raise KeyError(f"heads {sorted(missing)} are in only one of labels and probs")
    per_head = {
        head: {
            "ece": expected_calibration_error(labels[head], probs[head], bins),
            "brier": brier_score(labels[head], probs[head]),
        }
        for head in labels
    }
    return with_means(per_head)
