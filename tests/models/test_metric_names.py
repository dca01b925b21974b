"""The metric names a task produces (pinned to compute_metrics), and the checks of the keys
that name one: train.monitor, per_paradigm.<x>.monitor, report.metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.models.metric_names import (
    check_metrics,
    check_monitor,
    check_report_metrics,
    closest_first,
    metric_names,
    summary_metric_names,
)
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.metrics import compute_metrics, group_means, prefixed_metrics

FASTMRI = TaskSpec(("magnitude", "phase"), {h: 2 for h in ("abnormal", "acl", "cartilage", "mtear")})
AVMNIST = TaskSpec(("image", "audio"), {"digit": 10})
MIMIC_ICD9 = TaskSpec(("static", "timeseries"), {"icd9_1": 2})
VQA = TaskSpec(("image", "text"), {"answer": 7}, multilabel=("answer",))
MIXED = TaskSpec(("a", "b"), {"finding": 2, "grade": 4, "answer": 5}, multilabel=("answer",))
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def computed(spec: TaskSpec, n: int = 40) -> dict[str, float]:
    """What compute_metrics gives for random predictions of every head of ``spec``."""
    rng = np.random.default_rng(0)
    labels, probs = {}, {}
    for head, classes in spec.heads.items():
        p = rng.random((n, classes))
        probs[head] = p / p.sum(axis=1, keepdims=True)
        labels[head] = rng.random((n, classes)) if spec.is_multilabel(head) else np.arange(n) % classes
    return compute_metrics(labels, probs)


@pytest.mark.parametrize("spec", [FASTMRI, AVMNIST, MIMIC_ICD9, VQA, MIXED], ids=lambda s: "+".join(s.heads))
def test_names_are_exactly_what_compute_metrics_yields(spec: TaskSpec) -> None:
    assert sorted(metric_names(spec)) == sorted(computed(spec))


def test_names_of_extra_test_sets_are_what_the_worker_reports() -> None:
    base = computed(VQA)
    test = dict(base)
    sets = ["ood_kw", "ood_ko", "other"]
    for name in sets:
        test.update(prefixed_metrics(name, base))
    test.update(group_means(test, sets))
    names = summary_metric_names(VQA, [f"test_{s}" for s in sets])
    assert set(test) <= set(names)
    assert "ood_mean_vqa_score" in names and "other_vqa_score" in names and "wall_seconds" in names


def test_single_and_multi_head_names() -> None:
    assert {"accuracy", "balanced_accuracy", "f1_macro", "auroc", "accuracy_digit", "auroc_mean"} <= set(
        metric_names(AVMNIST)
    )
    assert "auprc" not in metric_names(AVMNIST)  # ten classes: no two-class AUPRC
    assert "auprc" in metric_names(MIMIC_ICD9)
    assert "auroc" not in metric_names(FASTMRI) and "auroc_acl" in metric_names(FASTMRI)  # four heads
    assert set(metric_names(VQA)) == {"vqa_score", "exact_accuracy", "vqa_score_answer", "exact_accuracy_answer",
                                      "vqa_score_mean", "exact_accuracy_mean"}  # fmt: skip


def test_a_monitor_the_task_does_not_produce_is_named_with_the_closest_first() -> None:
    cfg = load_config(None, ["train.monitor=acuracy"])
    with pytest.raises(ConfigError) as err:
        check_monitor(cfg, AVMNIST)
    text = str(err.value)
    assert text.startswith("train.monitor='acuracy' is not a metric this task's validation produces; valid")
    assert text.index("'accuracy'") < text.index("'auroc'")  # the closest first
    cfg = load_config(None, ["train.monitor=val_auroc_mean"])
    with pytest.raises(ConfigError, match=r"without the 'val_' prefix: 'auroc_mean'"):
        check_monitor(cfg, FASTMRI)
    with pytest.raises(ConfigError, match=r"train.monitor='auprc'"):  # ten classes: no AUPRC
        check_monitor(load_config(None, ["train.monitor=auprc"]), AVMNIST)
    check_monitor(load_config(None, ["train.monitor=auprc"]), MIMIC_ICD9)


def test_a_per_paradigm_monitor_is_named_by_its_key() -> None:
    cfg = load_config(None, ["train.monitor=vqa_score", "per_paradigm={i2m2: {monitor: vqa_scor}}"])
    with pytest.raises(ConfigError, match=r"per_paradigm.i2m2.monitor='vqa_scor' is not .*\['vqa_score'"):
        check_monitor(cfg, VQA)
    check_monitor(cfg, VQA, models=["unimodal", "inter"])  # the i2m2 model is not fitted


def test_report_metrics_name_the_models_results() -> None:
    cfg = load_config(None, ["train.monitor=vqa_score", "report.metrics=[vqa_score, ood_mean_vqa_scor]"])
    with pytest.raises(
        ConfigError, match=r"report.metrics='ood_mean_vqa_scor' is not a test metric .*'ood_mean_vqa_score'"
    ):
        check_report_metrics(cfg, VQA, ["test_ood_kw", "test_ood_ko"])
    cfg = load_config(None, ["report.metrics=[accuracy, auprc, wall_seconds]"])
    check_report_metrics(cfg, AVMNIST)  # a two-class column passes: one config serves MIMIC's every task


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_monitors_and_reports_what_its_task_produces(path: Path) -> None:
    cfg = load_config(path)
    spec = {"fastmri": FASTMRI, "avmnist": AVMNIST, "mimic": TaskSpec(("s", "t"), {"mortality": 6}),
            "vqa": VQA, "nlvr2": TaskSpec(("image", "text"), {"label": 2})}[cfg.experiment]  # fmt: skip
    sets = [f"test_ood_{s}" for s in ("qt", "kw", "ko", "qt_kw_ko")] if cfg.experiment == "vqa" else []
    check_metrics(cfg, spec, ["train", "val", "test", *sets])


def test_closest_first_orders_by_similarity() -> None:
    assert closest_first("aurco_mean", ["accuracy", "auroc_mean", "auroc_acl"])[0] == "auroc_mean"
