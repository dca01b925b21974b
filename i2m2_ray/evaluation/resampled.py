"""The metrics of :func:`~i2m2_ray.training.metrics.compute_metrics` for many bootstrap
resamples at once.

A resample drawn with replacement is the original sample with a count per row: how many
times the row was drawn. Every metric ``compute_metrics`` reports is a function of
count-weighted sums over rows (ranks included, once the rows are sorted by score), so ``B``
resamples cost a few ``(B, N)`` array operations instead of ``B`` calls into scikit-learn.
With every count 1 the values are ``compute_metrics``'s own, to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order of the rows by ascending score and, in that order, where each run of tied scores starts.

    Args:
        score: ``(N,)`` scores.
    Returns:
        ``(N,)`` permutation and ``(G,)`` start positions of the ``G`` distinct scores.
    """
    order = np.argsort(score, kind="stable")
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    return order, starts


def _grouped_counts(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drawn positives and negatives per distinct score, in ascending score order: two ``(B, G)``."""
    order, starts = _tie_groups(score)
    drawn = counts[:, order]
    pos = np.add.reduceat(drawn * positive[order], starts, axis=1)
    neg = np.add.reduceat(drawn, starts, axis=1) - pos
    return pos, neg


def auroc(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binary AUROC per resample: the chance that a drawn positive outscores a drawn negative,
    ties counting one half (the Mann-Whitney form of the area under the ROC curve).

    Args:
        positive: ``(N,)`` bool, the rows of the positive class.
        score: ``(N,)`` score of the positive class.
        counts: ``(B, N)`` times each row was drawn in each resample.
    Returns:
        ``(B,)`` AUROC; NaN where a resample lacks one of the two classes.
    """
    pos, neg = _grouped_counts(positive, score, counts)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each score
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), area, np.nan)


def average_precision(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision per resample, ``sum_t (R_t - R_{t-1}) P_t`` over the distinct scores ``t``
    taken as thresholds from the highest down (scikit-learn's ``average_precision_score``).

    Args and shapes as :func:`auroc`. Returns ``(B,)``; NaN where a class is missing (as
    ``compute_metrics``, which reports AUPRC only when both classes occur).
    """
    pos, neg = _grouped_counts(positive, -score, counts)  # -score: highest scores first
    hits, drawn = np.cumsum(pos, axis=1), np.cumsum(pos + neg, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # recall rises by pos / n_pos at a threshold; 0 / 0 precision only where pos is 0
        precision = np.where(drawn > 0, hits / drawn, 0.0)
        ap = (pos * precision).sum(axis=1) / n_pos
    return np.where((n_pos > 0) & (n_neg > 0), ap, np.nan)


def multiclass_auroc(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC per resample as ``compute_metrics`` defines it.

    Two classes: the binary AUROC of ``p[:, 1]``. More: the one-vs-rest macro average; where a
    resample lacks some classes, over the classes it has, with the probabilities of those
    classes renormalised to sum to 1. (With exactly two classes of several left, this is the
    natural value; ``compute_metrics`` raises there, a scikit-learn limitation.)

    Args:
        y: ``(N,)`` integer classes; p: ``(N, C)`` probabilities; counts: ``(B, N)``.
    Returns:
        ``(B,)`` AUROC; NaN where a resample holds fewer than two classes.
    """
    classes = p.shape[1]
    if classes == 2:
        return auroc(y == 1, p[:, 1], counts)
    onehot = (y[:, None] == np.arange(classes)[None, :]).astype(np.float64)
    present = counts @ onehot > 0  # (B, C)
    out = np.full(len(counts), np.nan)
    # resamples with the same classes present share the renormalised scores: one pass per set
    sets, which = np.unique(present, axis=0, return_inverse=True)
    for k, members in enumerate(sets):
        cls = np.flatnonzero(members)
        if len(cls) < 2:
            continue
        rows = np.flatnonzero(which.reshape(-1) == k)
        scores = p if len(cls) == classes else p[:, cls] / p[:, cls].sum(axis=1, keepdims=True)
        per_class = [auroc(y == c, scores[:, j], counts[rows]) for j, c in enumerate(cls)]
        out[rows] = np.mean(per_class, axis=0)
    return out


def class_head_metrics(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``auroc`` (and ``auprc`` for two
    classes) of a single-label head per resample, each ``(B,)``.

    Balanced accuracy averages recall over the classes present in the resample; macro F1
    averages ``2 TP / (2 TP + FP + FN)`` over all ``C`` classes, 0 where that is ``0 / 0``
    (scikit-learn's ``zero_division=0``), as ``compute_metrics`` does.

    Args:
        y: ``(N,)`` integer classes; p: ``(N, C)`` probabilities; counts: ``(B, N)``.
    """
    classes = np.arange(p.shape[1])
    pred = p.argmax(axis=1)
    truth = (y[:, None] == classes).astype(np.float64)  # (N, C) one-hot labels
    support = counts @ truth  # (B, C) drawn rows of each class
    predicted = counts @ (pred[:, None] == classes).astype(np.float64)
    hits = counts @ (truth * (pred == y)[:, None])  # true positives per class
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * hits / (support + predicted), 0.0)
    out = {
        "accuracy": hits.sum(axis=1) / counts.sum(axis=1),
        "balanced_accuracy": recall.sum(axis=1) / present.sum(axis=1),
        "f1_macro": f1.mean(axis=1),
        "auroc": multiclass_auroc(y, p, counts),
    }
    if len(classes) == 2:
        out["auprc"] = average_precision(y == 1, p[:, 1], counts)
    return out


def multilabel_head_metrics(scores: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """``vqa_score`` and ``exact_accuracy`` of a multi-label head per resample, each ``(B,)``.

    Args:
        scores: ``(N, A)`` soft scores; p: ``(N, A)`` probabilities; counts: ``(B, N)``.
    """
    rows = np.arange(len(scores))
    picked = scores[rows, p.argmax(axis=1)].astype(np.float64)
    best = scores.max(axis=1)
    exact = ((picked >= best) & (best > 0)).astype(np.float64)
    drawn = counts.sum(axis=1)
    return {"vqa_score": counts @ picked / drawn, "exact_accuracy": counts @ exact / drawn}


def _nan_mean(values: list[np.ndarray]) -> np.ndarray:
    """Mean over heads of ``(B,)`` arrays, NaN entries left out; NaN where every head is NaN."""
    stacked = np.stack(values)  # (H, B)
    finite = ~np.isnan(stacked)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, stacked, 0.0).sum(axis=0) / n
    return np.where(n > 0, mean, np.nan)


def resampled_metrics(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric of ``compute_metrics``, under its key, for each of ``B`` resamples.

    Args:
        labels: head -> ``(N,)`` classes, or ``(N, C)`` soft scores of a multi-label head.
        probs: head -> ``(N, C)`` probabilities.
        counts: ``(B, N)`` times each row was drawn in each resample (the same rows for
            every head); a row of ones is the original sample.
    Returns:
        metric name -> ``(B,)`` values, with ``compute_metrics``'s keys and NaN where a
        metric is undefined for a resample.
    """
    counts = np.asarray(counts, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    per: dict[str, list[np.ndarray]] = {}
    for head in sorted(labels):
        y, p = np.asarray(labels[head]), np.asarray(probs[head])
        if len(y) != counts.shape[1]:
            raise ValueError(f"head '{head}' has {len(y)} rows; counts cover {counts.shape[1]}")
        metrics = multilabel_head_metrics(y, p, counts) if y.ndim == 2 else class_head_metrics(y, p, counts)
        for name, values in metrics.items():
            out[f"{name}_{head}"] = values
            per.setdefault(name, []).append(values)
    for name, heads in per.items():
        out[f"{name}_mean"] = _nan_mean(heads)
        if len(labels) == 1:
            out[name] = heads[0]
    return out


def draw_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``(B, N)`` row indices drawn with replacement -> ``(B, n)`` times each row was drawn."""
    b = len(indices)
    flat = (indices + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
