"""Figures logged as MLflow artifacts (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from i2m2_ray.files import atomic_path


def roc_figure(labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], title: str, path: str | Path) -> Path:
    """ROC curves, one per label head (one-vs-rest micro average for multi-class heads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from i2m2_ray.evaluation.figures import binary_view

    fig, ax = plt.subplots(figsize=(5, 5))
    for head in sorted(labels):
        yt, score = binary_view(labels[head], probs[head])
        if len(np.unique(yt)) < 2:
            continue
        fpr, tpr, _ = roc_curve(yt, score)
        ax.plot(fpr, tpr, label=f"{head} (AUROC {roc_auc_score(yt, score):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    out = Path(path)
    with atomic_path(out) as tmp:  # a half-written plot never replaces a whole one
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
