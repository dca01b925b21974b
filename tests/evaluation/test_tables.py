"""The parent run's comparison files, from a known summary."""

from __future__ import annotations

import csv
import io
import math

from i2m2_ray.evaluation.tables import comparison_columns, comparison_csv, comparison_markdown

SUMMARY = {
    "unimodal_a": {"auroc": 0.61, "auroc_ci_low": 0.55, "auroc_ci_high": 0.66, "accuracy": 0.6, "ece": 0.1,
                   "brier": 0.4, "wall_seconds": 12.4, "best_epoch": 3.0},
    "inter": {"auroc": 0.8, "auroc_ci_low": 0.75, "auroc_ci_high": 0.85, "accuracy": float("nan"), "ece": 0.05,
              "brier": 0.3, "wall_seconds": 20.0},
    "i2m2": {"auroc": 0.83, "auroc_ci_low": 0.78, "auroc_ci_high": 0.87, "accuracy": 0.7, "wall_seconds": 30.6},
}  # fmt: skip


def test_columns_follow_the_report_metrics_then_calibration_and_time() -> None:
    assert comparison_columns(SUMMARY, ["auroc", "accuracy", "absent"]) == [
        "auroc", "auroc_ci_low", "auroc_ci_high", "accuracy", "ece", "brier", "wall_seconds",
    ]  # fmt: skip


def test_csv_reads_back_with_full_precision_and_empty_cells_for_missing_values() -> None:
    rows = list(csv.DictReader(io.StringIO(comparison_csv(SUMMARY, ["auroc", "accuracy"]))))
    assert [r["model"] for r in rows] == ["unimodal_a", "inter", "i2m2"]
    assert float(rows[2]["auroc_ci_low"]) == 0.78 and float(rows[0]["wall_seconds"]) == 12.4
    assert rows[1]["accuracy"] == "" and rows[2]["ece"] == ""  # NaN and absent alike
    assert "best_epoch" not in rows[0]


def test_markdown_shows_intervals_and_marks_the_best() -> None:
    text = comparison_markdown(SUMMARY, ["auroc", "accuracy"], "toy, seed 0: test metrics")
    lines = text.splitlines()
    assert lines[0] == "### toy, seed 0: test metrics"
    assert lines[2] == "| model | auroc | accuracy | ece | brier | wall_seconds |"
    assert lines[4] == "| unimodal_a | 0.610 [0.550, 0.660] | 0.600 | 0.100 | 0.400 | 12 |"
    assert lines[5] == "| inter | 0.800 [0.750, 0.850] | – | 0.050 | 0.300 | 20 |"
    assert lines[6] == "| i2m2 | **0.830 [0.780, 0.870]** | **0.700** | – | – | 31 |"
    assert math.isnan(SUMMARY["inter"]["accuracy"])  # the input is left as it was
