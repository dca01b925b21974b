"""One comparison from several seeds' summaries: mean ± std per paradigm and metric, and
I2M2 against each other paradigm as a paired difference over seeds (pure: dicts in, dicts
and text out).

A seed's summary is what a pipeline writes to ``summary.json``: ``{model: {metric: value}}``
with models ``unimodal_<m>``, ``inter``, ``intra``, ``i2m2`` (and any others).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from i2m2_ray.evaluation.paired import PAIRED_TEST, mean_std, paired_difference

Summary = Mapping[str, Mapping[str, Any]]
REFERENCE = "i2m2"


def _value(summary: Summary, model: str, metric: str) -> float:
    v = summary.get(model, {}).get(metric, math.nan)
    return float(v) if isinstance(v, (int, float)) else math.nan


def compare_seeds(
    summaries: Mapping[int, Summary], metrics: Sequence[str], reference: str = REFERENCE
) -> dict[str, Any]:
    """The study's comparison.

    Returns:
        ``{"seeds": [...], "metrics": [...], "models": [...], "per_seed": {model: {metric:
        [value per seed]}}, "mean": {model: {metric: m}}, "std": {...}, "paired": {model:
        {metric: PairedDifference of reference - model}}, "test": the paired test's name}``.
        Models are those of the first seed, in its order; a value missing from a seed is NaN.
    """
    if not summaries:
        raise ValueError("no seeds to compare")
    seeds = sorted(summaries)
    models = list(summaries[seeds[0]])
    per_seed = {m: {k: [_value(summaries[s], m, k) for s in seeds] for k in metrics} for m in models}
    means = {m: {k: mean_std(v)[0] for k, v in per_seed[m].items()} for m in models}
    stds = {m: {k: mean_std(v)[1] for k, v in per_seed[m].items()} for m in models}
    paired: dict[str, dict[str, Any]] = {}
    if reference in per_seed:
        for m in models:
            if m == reference:
                continue
            paired[m] = {k: dict(paired_difference(per_seed[reference][k], per_seed[m][k])) for k in metrics}
    return {
        "seeds": seeds,
        "metrics": list(metrics),
        "models": models,
        "reference": reference,
        "per_seed": per_seed,
        "mean": means,
        "std": stds,
        "paired": paired,
        "test": PAIRED_TEST,
    }


def _num(v: float, digits: int = 3) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """Markdown: a table of mean ± std per model and metric (with each seed's value of the
    first metric), then the reference against every other model: paired mean difference,
    its 95% interval and p-value, per metric."""
    seeds, metrics, models = comparison["seeds"], comparison["metrics"], comparison["models"]
    ref = comparison["reference"]
    head = ["model", *(f"{metrics[0]} seed {s}" for s in seeds), *(f"{k} (mean ± std)" for k in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m in models:
        cells = [m, *(_num(v) for v in comparison["per_seed"][m][metrics[0]])]
        cells += [f"{_num(comparison['mean'][m][k])} ± {_num(comparison['std'][m][k])}" for k in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if comparison["paired"]:
        lines += [
            "",
            f"{ref} minus each model over {len(seeds)} seeds: mean difference [95% interval], p "
            f"({comparison['test']}):",
            "",
            "| model | " + " | ".join(metrics) + " |",
            "|" + " --- |" * (len(metrics) + 1),
        ]
        for m, per_metric in comparison["paired"].items():
            cells = []
            for k in metrics:
                d = per_metric[k]
                cells.append(
                    f"{d['mean_difference']:+.3f} [{_num(d['ci_low'])}, {_num(d['ci_high'])}], "
                    f"p {_num(d['p_value'], 3)}"
                )
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
