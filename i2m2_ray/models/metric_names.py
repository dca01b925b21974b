"""Which metric names a task's evaluation produces, and the checks of the config keys that
name one: ``train.monitor`` (and ``per_paradigm.<x>.monitor``; a sweep's objective is
``val_<train.monitor>``) and ``report.metrics``.

The names mirror :func:`i2m2_ray.training.metrics.compute_metrics` (a test pins the two
together): per softmax head ``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``auroc``
and, for two classes, ``auprc``; per multi-label head ``vqa_score`` and ``exact_accuracy``;
each as ``<metric>_<head>`` and ``<metric>_mean`` over the heads that have it, and for a
single-head task also plain ``<metric>``. Extra test sets (``test_<name>`` datasets) add
``<name>_<metric>`` and, for sets named ``<group>_<x>``, ``<group>_mean_<metric>``.

Pure Python, no torch: checked after the data are read (the task's heads come from the
data) and before any training starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.spec import TaskSpec, kind_of

SOFTMAX_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auroc")
BINARY_METRICS = ("auprc",)  # two-class heads only
MULTILABEL_METRICS = ("vqa_score", "exact_accuracy")
# what summary.json holds for every model besides its test metrics
SUMMARY_EXTRAS = ("wall_seconds", "best_epoch", "num_nodes")


def head_metric_names(spec: TaskSpec, head: str, binary: bool = False) -> tuple[str, ...]:
    """The metrics of one label head (``binary``: as if every softmax head had two classes)."""
    if spec.is_multilabel(head):
        return MULTILABEL_METRICS
    return SOFTMAX_METRICS + (BINARY_METRICS if binary or spec.heads[head] == 2 else ())


def metric_names(spec: TaskSpec, binary: bool = False) -> list[str]:
    """Every name ``compute_metrics`` yields for the task (a validation metric is
    ``val_<name>``, a test metric ``test_<name>``); ``binary``: also the two-class metrics
    of heads with more classes (names a report may list for a dataset whose task varies)."""
    out: list[str] = []
    per: dict[str, None] = {}
    for head in sorted(spec.heads):
        for name in head_metric_names(spec, head, binary):
            out.append(f"{name}_{head}")
            per[name] = None
    out += [f"{name}_mean" for name in per]
    if len(spec.heads) == 1:
        out += list(per)
    return out


def summary_metric_names(spec: TaskSpec, test_sets: Iterable[str] = (), binary: bool = False) -> list[str]:
    """The names a model's line of ``summary.json`` holds: the test metrics, those of each
    extra test set (``test_<name>`` -> ``<name>_<metric>``), the group means and the extras
    (wall time...); ``binary`` as for :func:`metric_names`."""
    base = metric_names(spec, binary)
    sets = [s.removeprefix("test_") for s in test_sets]
    out = list(base) + [f"{s}_{m}" for s in sets for m in base]
    groups: dict[str, int] = {}
    for s in sets:
        if "_" in s:
            group = s.split("_", 1)[0]
            groups[group] = groups.get(group, 0) + 1
    out += [f"{g}_mean_{m}" for g, n in groups.items() if n >= 2 for m in base]
    return out + list(SUMMARY_EXTRAS)


def closest_first(value: str, names: Iterable[str]) -> list[str]:
    """``names`` ordered by similarity to ``value``, the closest first (ties keep their order)."""
    listed = list(dict.fromkeys(names))
    score = {n: difflib.SequenceMatcher(None, value, n).ratio() for n in listed}
    return sorted(listed, key=lambda n: -score[n])


def _refuse(key: str, value: str, valid: list[str], what: str) -> ConfigError:
    hint = ""
    if value.startswith(("val_", "test_")) and value.split("_", 1)[1] in valid:
        hint = f" (without the '{value.split('_', 1)[0]}_' prefix: '{value.split('_', 1)[1]}')"
    ordered = closest_first(value, valid)
    return ConfigError(f"{key}={value!r} is not {what}{hint}; valid, closest first: {ordered}")


def check_monitor(cfg: ExperimentConfig, spec: TaskSpec, models: Iterable[str] | None = None) -> None:
    """``train.monitor`` and every ``per_paradigm.<x>.monitor`` that applies to one of
    ``models`` (default: the models of ``run.paradigms``) must be a metric the task's
    validation produces; a sweep's objective is ``val_<train.monitor>``.

    Raises:
        ConfigError: naming the key, the value and the valid names (closest first).
    """
    valid = metric_names(spec)
    what = "a metric this task's validation produces"
    if cfg.train.monitor not in valid:
        raise _refuse("train.monitor", cfg.train.monitor, valid, what)
    wanted = set(cfg.run.paradigms if models is None else models)
    names = [m for m in spec.paradigms() if m in wanted or kind_of(m) in wanted]
    for key in dict.fromkeys(k for m in names for k in (kind_of(m), m)):
        monitor = cfg.per_paradigm.get(key, {}).get("monitor")
        if monitor is not None and monitor not in valid:
            raise _refuse(f"per_paradigm.{key}.monitor", str(monitor), valid, what)


def check_report_metrics(cfg: ExperimentConfig, spec: TaskSpec, test_sets: Iterable[str] = ()) -> None:
    """Every column of ``report.metrics`` must be a name the models' results hold (the test
    metrics of the task and of its extra test sets ``test_<name>``). A two-class metric
    (``auprc``) passes for a head of more classes: one config serves a dataset's binary and
    multi-class tasks (MIMIC), and the column of the task without it is NaN.

    Raises:
        ConfigError: naming ``report.metrics``, the value and the valid names (closest first).
    """
    valid = summary_metric_names(spec, test_sets, binary=True)
    for name in cfg.report.metrics:
        if name not in valid:
            raise _refuse("report.metrics", name, valid, "a test metric of this task")


def check_metrics(
    cfg: ExperimentConfig, spec: TaskSpec, datasets: Iterable[str] = (), models: Iterable[str] | None = None
) -> None:
    """:func:`check_monitor` and :func:`check_report_metrics` in one call; ``datasets`` are
    the names of the prepared datasets (``PreparedData.datasets``: the ``test_<name>`` ones
    are extra test sets)."""
    check_monitor(cfg, spec, models)
    check_report_metrics(cfg, spec, [d for d in datasets if d.startswith("test_")])
