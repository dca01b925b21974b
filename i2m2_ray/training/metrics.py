"""Classification metrics per label head and their means (NumPy in, floats out)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    classes = p.shape[1]
    present = np.unique(y)
    if len(present) < 2:
        return math.nan  # undefined with one class present
    if classes == 2:
        return float(roc_auc_score(y, p[:, 1]))
    if len(present) < classes:
        # one-vs-rest over the classes that occur, renormalised
        cols = p[:, present] / p[:, present].sum(axis=1, keepdims=True)
        if len(present) == 2:  # sklearn's binary case: its two one-vs-rest AUROCs are equal
            return float(roc_auc_score(y == present[1], cols[:, 1]))
        return float(roc_auc_score(y, cols, multi_class="ovr", average="macro", labels=present))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def vqa_score(scores: np.ndarray, p: np.ndarray) -> float:
    """Soft VQA accuracy: the mean over questions of the predicted answer's soft score.

    Args:
        scores: ``(N, A)`` soft score of every answer of the vocabulary per question
            (``min(1, humans who gave it / 3)``; 0 for answers nobody gave).
        p: ``(N, A)`` per-answer probabilities (or any scores); the prediction is the argmax.
    """
    if scores.shape != p.shape:
        raise ValueError(f"scores {scores.shape} and predictions {p.shape} differ in shape")
    if len(scores) == 0:
        return math.nan
    return float(scores[np.arange(len(scores)), p.argmax(axis=1)].mean())


def multilabel_metrics(scores: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Metrics of a multi-label (soft-score) head: ``vqa_score``, and ``exact_accuracy``
    (the predicted answer has the top score of its question)."""
    pred = p.argmax(axis=1)
    picked = scores[np.arange(len(scores)), pred]
    best = scores.max(axis=1) if len(scores) else picked
    return {
        "vqa_score": vqa_score(scores, p),
        "exact_accuracy": float(((picked >= best) & (best > 0)).mean()) if len(scores) else math.nan,
    }


def head_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Metrics of one head from labels ``(N,)`` and class probabilities ``(N, C)``; for a
    multi-label head, labels are ``(N, C)`` per-class scores (:func:`multilabel_metrics`)."""
    if y.ndim == 2:
        return multilabel_metrics(y, p)
    pred = p.argmax(axis=1)
    out = {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=np.arange(p.shape[1]), zero_division=0)),
        "auroc": _auroc(y, p),
    }
    if p.shape[1] == 2:
        out["auprc"] = float(average_precision_score(y, p[:, 1])) if len(np.unique(y)) == 2 else math.nan
    return out


def compute_metrics(labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``<metric>_<head>`` for every head, ``<metric>_mean`` over heads, and, for a single-head
    task, the plain ``<metric>`` too. NaN (undefined) values are left out of the means."""
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    for head in sorted(labels):
        for name, value in head_metrics(np.asarray(labels[head]), np.asarray(probs[head])).items():
            out[f"{name}_{head}"] = value
            per.setdefault(name, []).append(value)
    for name, values in per.items():
        finite = [v for v in values if not math.isnan(v)]
        out[f"{name}_mean"] = float(np.mean(finite)) if finite else math.nan
        if len(labels) == 1:
            out[name] = values[0]
    return out


def prefixed_metrics(name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"accuracy": 0.5}`` of evaluation set ``name`` -> ``{"<name>_accuracy": 0.5}``."""
    return {f"{name}_{k}": v for k, v in metrics.items()}


def group_means(metrics: Mapping[str, float], sets: Iterable[str]) -> dict[str, float]:
    """Means over evaluation sets named ``<group>_<set>`` (e.g. ``ood_kw``, ``ood_ko``):
    ``<group>_mean_<metric>`` for every metric each of the group's sets has."""
    groups: dict[str, list[str]] = {}
    for s in sets:
        if "_" in s:
            groups.setdefault(s.split("_", 1)[0], []).append(s)
    out: dict[str, float] = {}
    for group, members in groups.items():
        if len(members) < 2:
            continue
        keys = [k[len(members[0]) + 1 :] for k in metrics if k.startswith(members[0] + "_")]
        for key in keys:
            values = [metrics.get(f"{m}_{key}", math.nan) for m in members]
            finite = [v for v in values if not math.isnan(v)]
            if len(finite) == len(members):
                out[f"{group}_mean_{key}"] = float(np.mean(finite))
    return out


def class_weights(counts: Mapping[str, list[int]]) -> dict[str, list[float]]:
    """Balanced weights ``N / (C * n_c)`` per head; a class absent from training gets 0."""
    out = {}
    for head, c in counts.items():
        total, k = float(sum(c)), len(c)
        out[head] = [total / (k * n) if n > 0 else 0.0 for n in c]
    return out


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (NaN never does)."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if mode == "max" else value < best
