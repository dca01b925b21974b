"""Figures of the evaluation: reliability diagrams, robustness curves and intervals per
paradigm (matplotlib, headless; each function writes a PNG and returns its path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.evaluation.calibration import ReliabilityCurve


def _pyplot() -> Any:
    # imported on use and switched to Agg, so importing this module opens no display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def reliability_diagram(curve: ReliabilityCurve, title: str, path: str | Path) -> Path:
    """Accuracy against confidence per bin (bars) over the diagonal of perfect calibration,
    with the number of samples per bin below.

    Args:
        curve: from :func:`~i2m2_ray.evaluation.calibration.reliability_curve`.
        title: the figure's title; the ECE is appended.
        path: where the PNG goes (parent folders are created).
    """
    plt = _pyplot()
    fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    left, width = curve.edges[:-1], np.diff(curve.edges)
    filled = curve.counts > 0
    ax.bar(left[filled], curve.accuracy[filled], width=width[filled], align="edge", edgecolor="k", label="accuracy")
    ax.bar(
        left[filled],
        curve.confidence[filled] - curve.accuracy[filled],
        bottom=curve.accuracy[filled],
        width=width[filled],
        align="edge",
        color="none",
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {curve.ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    counts_ax.bar(left, curve.counts, width=width, align="edge", color="tab:gray")
    counts_ax.set_xlabel("confidence")
    counts_ax.set_ylabel("samples")
    return _save(fig, path)


def robustness_figure(
    levels: Sequence[float] | np.ndarray,
    curves: Mapping[str, Sequence[float] | np.ndarray],
    metric: str,
    title: str,
    path: str | Path,
) -> Path:
    """A metric against the noise level, one line per paradigm.

    Args:
        levels: ``(L,)`` noise levels.
        curves: paradigm -> ``(L,)`` the metric at each level.
        metric: the metric's name (the y label).
        title: the figure's title.
        path: where the PNG goes.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for paradigm in sorted(curves):
        scores = np.asarray(curves[paradigm], dtype=np.float64)
        if scores.shape != (len(levels),):
            raise ValueError(f"paradigm '{paradigm}' has {scores.shape} scores for {len(levels)} noise levels")
        ax.plot(levels, scores, marker="o", ms=3, label=paradigm)
    ax.set_xlabel("noise level")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def interval_bars(values: Mapping[str, tuple[float, float, float]], metric: str, title: str, path: str | Path) -> Path:
    """A bar per paradigm at its value, with its interval as an error bar.

    Args:
        values: paradigm -> ``(value, low, high)`` (e.g. a metric and its bootstrap interval,
            or a mean over seeds and its t interval); an interval with a NaN bound is not drawn.
        metric: the metric's name (the y label).
        title: the figure's title.
        path: where the PNG goes.
    """
    plt = _pyplot()
    names = list(values)
    mean = np.array([values[n][0] for n in names], dtype=np.float64)
    low = np.array([values[n][1] for n in names], dtype=np.float64)
    high = np.array([values[n][2] for n in names], dtype=np.float64)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names)), 4))
    bars = ax.bar(x, mean, color="tab:blue", alpha=0.8)
    bounded = np.isfinite(low) & np.isfinite(high)  # no error bar where the interval is undefined
    # a point estimate can fall just outside its percentile bootstrap interval; matplotlib
    # rejects negative error lengths, so such a side is drawn at the value
    errors = np.clip(np.stack([mean - low, high - mean])[:, bounded], 0.0, None)
    ax.errorbar(x[bounded], mean[bounded], yerr=errors, fmt="none", ecolor="k", capsize=4)
    # bars start at 0 (honest heights); close values are told apart by the printed numbers
    ax.bar_label(bars, labels=[f"{m:.3f}" for m in mean], label_type="center", fontsize=8, color="white")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(title)
    return _save(fig, path)


def binary_view(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One head's test predictions as one binary problem: ``(y, score)``. Binary heads: the
    positive class's probability. Multi-class heads: one-vs-rest over every class, pooled
    (micro average). Multi-label soft scores (``labels`` 2-D): an answer is positive where its
    score is above 0, pooled over answers."""
    y, p = np.asarray(labels), np.asarray(probs)
    if y.ndim == 2:
        return (y > 0).ravel().astype(int), p.ravel()
    if p.shape[1] == 2:
        return y.astype(int), p[:, 1]
    return (y[:, None] == np.arange(p.shape[1])[None]).ravel().astype(int), p.ravel()


def curves_figure(views: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, path: str | Path) -> Path | None:
    """ROC (left) and precision-recall (right) curves of every model on one label, a line per
    model with its AUROC / average precision in the legend; the PR panel's dashed line is the
    share of positives (a model that guesses). None when no model's labels hold both classes.

    Args:
        views: model -> ``(y, score)`` of the label (:func:`binary_view`).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    usable = {n: (y, s) for n, (y, s) in views.items() if len(np.unique(y)) == 2}
    if not usable:
        return None
    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.6))
    for name, (y, score) in usable.items():
        fpr, tpr, _ = roc_curve(y, score)
        roc.plot(fpr, tpr, label=f"{name} ({roc_auc_score(y, score):.3f})")
        precision, recall, _ = precision_recall_curve(y, score)
        pr.plot(recall, precision, label=f"{name} ({average_precision_score(y, score):.3f})")
    roc.plot([0, 1], [0, 1], "k--", lw=0.8)
    base = float(np.mean(next(iter(usable.values()))[0]))
    pr.axhline(base, color="k", ls="--", lw=0.8)
    limits = {"xlim": (0, 1), "ylim": (0, 1.02)}
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUROC)", **limits)
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall (average precision)", **limits)
    roc.legend(loc="lower right", fontsize=8)
    pr.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def confusion_figure(
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]], classes: int, title: str, path: str | Path
) -> Path:
    """Confusion matrices of a multi-class label, one panel per model: each row (true class)
    normalised to sum to 1, the count of each cell written in it.

    Args:
        predictions: model -> ``(labels (N,), probabilities (N, classes))``.
        classes: the number of classes.
    """
    plt = _pyplot()
    names = list(predictions)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names) + 0.6, 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        y, p = (np.asarray(a) for a in predictions[name])
        counts = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(counts, (y.astype(int), p.argmax(axis=1)), 1)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        if classes <= 12:
            for (i, j), n in np.ndenumerate(counts):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="w" if rates[i, j] > 0.5 else "k")
        accuracy = np.trace(counts) / max(counts.sum(), 1)
        ax.set(title=f"{name} (accuracy {accuracy:.3f})", xlabel="predicted", ylabel="true")
        ax.set_xticks(range(classes))
        ax.set_yticks(range(classes))
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    return _save(fig, path)
