"""The evaluation figures are written, as non-empty PNGs, headless."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from i2m2_ray.evaluation.calibration import reliability_curve
from i2m2_ray.evaluation.figures import interval_bars, reliability_diagram, robustness_figure
from i2m2_ray.evaluation.robustness import DEFAULT_LEVELS

PNG_MAGIC = b"\x89PNG"


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:4] == PNG_MAGIC


def test_reliability_diagram(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=200)
    curve = reliability_curve(rng.integers(0, 3, 200), p)  # some of the 15 bins are empty
    out = reliability_diagram(curve, "digit head", tmp_path / "sub" / "reliability.png")
    assert out == tmp_path / "sub" / "reliability.png" and is_png(out)


def test_robustness_figure(tmp_path: Path) -> None:
    curves = {"i2m2": [0.9 - 0.3 * x for x in DEFAULT_LEVELS], "inter": [0.88 - 0.5 * x for x in DEFAULT_LEVELS]}
    out = robustness_figure(DEFAULT_LEVELS, curves, "auroc", "Gaussian noise on images", tmp_path / "robust.png")
    assert is_png(out)


def test_interval_bars_with_a_missing_bound(tmp_path: Path) -> None:
    values = {"i2m2": (0.9, 0.88, 0.92), "intra": (0.85, 0.82, 0.87), "unimodal_phase": (0.7, math.nan, math.nan)}
    out = interval_bars(values, "auroc_mean", "test AUROC (95% bootstrap)", tmp_path / "bars.png")
    assert is_png(out)
