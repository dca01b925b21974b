"""Evaluation beyond the training metrics: calibration, bootstrap intervals, robustness to
noise, paired comparisons over seeds, and their figures.

Pure NumPy / SciPy / scikit-learn / matplotlib: no torch, Ray or MLflow, so the pipeline can
call it on gathered predictions anywhere.
"""

from __future__ import annotations

from i2m2_ray.evaluation.bootstrap import bootstrap_intervals, percentile_interval, resample_values, with_intervals
from i2m2_ray.evaluation.calibration import (
    ReliabilityCurve,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    reliability_curve,
)
from i2m2_ray.evaluation.figures import interval_bars, reliability_diagram, robustness_figure
from i2m2_ray.evaluation.paired import PairedDifference, mean_std, paired_difference
from i2m2_ray.evaluation.resampled import resampled_metrics
from i2m2_ray.evaluation.robustness import (
    DEFAULT_LEVELS,
    effective_robustness,
    gaussian_noise,
    relative_robustness,
    token_dropout,
)

__all__ = [
    "DEFAULT_LEVELS",
    "PairedDifference",
    "ReliabilityCurve",
    "bootstrap_intervals",
    "brier_score",
    "calibration_metrics",
    "effective_robustness",
    "expected_calibration_error",
    "gaussian_noise",
    "interval_bars",
    "mean_std",
    "paired_difference",
    "percentile_interval",
    "relative_robustness",
    "reliability_curve",
    "reliability_diagram",
    "resample_values",
    "resampled_metrics",
    "robustness_figure",
    "token_dropout",
    "with_intervals",
]
