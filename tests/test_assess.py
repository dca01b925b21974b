"""Intervals, calibration and robustness of trained models (real Ray Data, real checkpoints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i2m2_ray.assess import (
    AssessSettings,
    assess_model,
    assess_models,
    assess_predictions,
    effective_robustness_entries,
    flatten_robustness,
)
from i2m2_ray.config import load_config
from i2m2_ray.models.build import build_model
from i2m2_ray.models.registry import encoder_factory
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.checkpoint import save_checkpoint


def test_predictions_give_calibration_and_an_interval_for_every_metric() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(0.7 * y + 0.15 + rng.normal(0, 0.1, 400), 0.01, 0.99)
    probs = {"h": np.stack([1 - p1, p1], 1)}
    out = assess_predictions({"h": y}, probs, AssessSettings(bootstrap=200, seed=1))
    for name in ("accuracy", "auroc", "ece", "brier"):
        assert out[f"{name}_ci_low"] <= out[f"{name}_ci_high"], name
    assert out["brier"] == pytest.approx(float(np.mean((p1 - y) ** 2)))
    assert out["accuracy_ci_low"] < float(np.mean((p1 > 0.5) == y)) < out["accuracy_ci_high"]
    none = assess_predictions({"h": y}, probs, AssessSettings(bootstrap=0))
    assert "ece" in none and not any(k.endswith("_ci_low") for k in none)


def test_robustness_entries_relative_and_effective() -> None:
    levels = [0.0, 0.5, 1.0]
    reports = {
        "inter": {
            "missing": {"a": {"acc": 0.5}},
            "noise": {"a": {"levels": levels, "metrics": [{"acc": a} for a in (0.9, 0.7, 0.5)]}},
        },
        "i2m2": {
            "missing": {"a": {"acc": 0.8}},
            "noise": {"a": {"levels": levels, "metrics": [{"acc": a} for a in (0.95, 0.9, 0.85)]}},
        },
    }
    flat = flatten_robustness(reports["i2m2"], ["acc"])
    assert flat["missing.a.acc"] == 0.8
    assert flat["robustness.a.relative_acc"] == pytest.approx(0.25 * (0.95 + 0.9) + 0.25 * (0.9 + 0.85))
    eff = effective_robustness_entries(reports, ["acc"])
    # i2m2 - (inter + 0.95 - 0.9) summed: (0) + (0.9 - 0.75) + (0.85 - 0.55)
    assert eff["i2m2"]["robustness.a.effective_acc"] == pytest.approx(0.45)
    assert eff["inter"]["robustness.a.effective_acc"] == pytest.approx(0.0)


def test_a_trained_model_is_assessed_on_real_ray_data(ray_local: None, tmp_path: object) -> None:
    import ray.data

    cfg = load_config(None, ["model.encoder=mlp_gru", "model.hidden=[4]", "model.width=4", "model.inter_fusion=concat"])
    spec = TaskSpec(("static", "timeseries"), {"y": 2})
    facts = {"inputs": {"static": [5], "timeseries": [24, 12]}}
    torch.manual_seed(0)
    model = build_model("i2m2", spec, cfg.model, encoder_factory(facts))
    path = save_checkpoint(tmp_path / "i2m2.pt", model.state_dict(), "i2m2", cfg.to_dict(), spec)  # type: ignore[operator]
    rng = np.random.default_rng(0)
    rows = [
        {"static": rng.normal(size=5).astype(np.float32), "timeseries": rng.normal(size=(24, 12)).astype(np.float32),
         "y_y": int(i % 2)}
        for i in range(40)
    ]  # fmt: skip
    data = {"train": ray.data.from_items(rows), "test": ray.data.from_items(rows[:16])}
    report = assess_model(str(path), data, facts, AssessSettings(noise_levels=(0.0, 1.0), stats_samples=32), 8)
    assert report["stats_samples"] == 32
    assert set(report["missing"]) == {"static", "timeseries"}
    curve = report["noise"]["static"]
    assert curve["levels"] == [0.0, 1.0] and "accuracy" in curve["metrics"][0]
    # statistics given (the pipeline computes them once for every model): the same report,
    # and the training split is not read (it is not even passed)
    from i2m2_ray.training.robustness import input_stats

    stats = input_stats(data["train"].iter_torch_batches(batch_size=8), ("static", "timeseries"), 32)
    given = assess_model(
        str(path), {"test": data["test"]}, facts, AssessSettings(noise_levels=(0.0, 1.0), stats_samples=32), 8, stats
    )
    assert given == report
    # extra test sets (VQA-VS's OOD sets): the same passes, merged in as "<set>_<metric>"
    # with the group's mean; a set holding the test rows scores exactly as the test split
    sets = {**data, "test_ood_same": data["test"], "test_ood_other": ray.data.from_items(rows[16:40])}
    both = assess_model(str(path), sets, facts, AssessSettings(noise_levels=(0.0, 1.0), stats_samples=32), 8)
    assert both["sets"] == ["ood_other", "ood_same"]
    for scored in [*both["missing"].values(), *(c for m in both["noise"].values() for c in m["metrics"])]:
        assert all(scored[f"ood_same_{k}"] == scored[k] for k in ("accuracy", "auroc"))
        mean = (scored["ood_same_accuracy"] + scored["ood_other_accuracy"]) / 2
        assert scored["ood_mean_accuracy"] == pytest.approx(mean)
    test_only = {k: v for k, v in both["missing"]["static"].items() if not k.startswith("ood_")}
    assert test_only == report["missing"]["static"]
    flat = flatten_robustness(both, ["accuracy"])
    assert flat["robustness.static.relative_ood_same_accuracy"] == flat["robustness.static.relative_accuracy"]
    assert "robustness.static.relative_ood_mean_accuracy" in flat and "missing.timeseries.ood_other_auroc" in flat


def test_stage_three_gives_entries_and_figures_for_every_model(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    sharp = rng.uniform(0.01, 0.99, 300)
    y = (rng.uniform(size=300) < sharp).astype(np.int64)  # calibrated by construction
    blunt = np.full(300, 0.95)  # always sure of class 1
    predictions = {
        "inter": ({"h": y}, {"h": np.stack([1 - blunt, blunt], 1)}),
        "i2m2": ({"h": y}, {"h": np.stack([1 - sharp, sharp], 1)}),
    }
    tests = {"inter": {"acc": 0.5}, "i2m2": {"acc": 0.95}}
    levels = [0.0, 0.5, 1.0]
    reports = {
        n: {"missing": {"a": {"acc": v}}, "noise": {"a": {"levels": levels, "metrics": [{"acc": v}] * 3}}}
        for n, v in (("inter", 0.5), ("i2m2", 0.9))
    }
    found = assess_models(predictions, tests, reports, AssessSettings(bootstrap=100), ["acc"], tmp_path, "toy")
    # a constant 0.95 is off by 0.95 - (share of class 1); the other model is calibrated
    assert found.entries["inter"]["ece"] == pytest.approx(0.95 - np.mean(y == 1))
    assert found.entries["i2m2"]["ece"] < 0.1 < found.entries["inter"]["ece"]
    assert found.entries["i2m2"]["missing.a.acc"] == 0.9
    # flat curves: shifted to i2m2's clean score, inter's curve is i2m2's, so no effective gain
    assert found.entries["i2m2"]["robustness.a.effective_acc"] == pytest.approx(0.0)
    assert found.entries["i2m2"]["robustness.a.relative_acc"] == pytest.approx(0.9)
    assert found.entries["i2m2"]["accuracy_ci_low"] < found.entries["i2m2"]["accuracy_ci_high"]
    names = sorted(f.name for fs in found.figures.values() for f in fs)
    assert names == [
        "comparison_acc.png", "curves_h.png", "reliability_i2m2.png", "reliability_inter.png", "robustness_a.png",
    ]  # fmt: skip
    for fs in found.figures.values():
        for f in fs:
            assert Image.open(f).size[0] > 100


def test_every_model_on_one_roc_and_pr_figure_per_label_and_confusion_of_multi_class_labels(tmp_path: Path) -> None:
    from PIL import Image

    from i2m2_ray.evaluation.figures import binary_view

    rng = np.random.default_rng(1)
    digit = rng.integers(0, 4, 200)
    right = np.eye(4)[digit] * 0.7 + 0.075  # puts 0.775 on the true class
    flat = np.full((200, 4), 0.25)
    predictions = {
        "inter": ({"digit": digit}, {"digit": flat}),
        "i2m2": ({"digit": digit}, {"digit": right}),
    }
    found = assess_models(predictions, {}, {}, AssessSettings(bootstrap=20), ["accuracy"], tmp_path, "toy")
    names = sorted(f.name for f in found.figures[""])
    assert names == ["confusion_digit.png", "curves_digit.png"]
    assert all(Image.open(f).size[0] > 300 for f in found.figures[""])
    # one-vs-rest pooled: a positive per sample among 4 columns; the sure model ranks them all first
    y, score = binary_view(digit, right)
    assert y.sum() == 200 and len(y) == 800
    assert np.allclose(score[y == 1], 0.775) and np.allclose(score[y == 0], 0.075)
    # multi-label soft scores: positive where the score is above 0
    y, _ = binary_view(np.array([[0.0, 0.3], [1.0, 0.0]]), np.array([[0.2, 0.8], [0.9, 0.1]]))
    assert y.tolist() == [0, 1, 1, 0]
