"""What a trained model is worth beyond its point estimates: intervals, calibration, and how
it degrades with a modality missing or noisy (issue 17's evaluation, for every paradigm).

* From a model's saved test predictions (cheap, on the driver): a bootstrap 95% percentile
  interval for every test metric (``<metric>_ci_low`` / ``_ci_high``), the expected
  calibration error and Brier score (with their intervals), and reliability curves.
* From the model itself (a Ray task beside the data): the test metrics with each modality
  missing and with each modality noisy at every level (:mod:`i2m2_ray.training.robustness`),
  the training-split statistics they need estimated from the first training samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from i2m2_ray.evaluation import reliability_curve
from i2m2_ray.evaluation.scoring import AssessSettings, assess_predictions, settings_of

__all__ = [
    "AssessSettings",
    "Assessment",
    "assess_model",
    "assess_models",
    "assess_predictions",
    "robustness_reports",
    "settings_of",
]

MISSING = "missing"
ROBUSTNESS = "robustness"


def robustness_reports(
    checkpoints: Mapping[str, str], prepared: Any, cfg: Any, settings: AssessSettings, stats: Any = None
) -> dict[str, dict[str, Any]]:
    """Model -> its robustness report (:func:`assess_model`), each computed in a Ray task beside
    the data, one model at a time, over the test split read once: on a GPU when the run trains
    on GPUs, else on no reserved CPU (like the fit launchers), so Ray Data's reading always
    finds a CPU. ``stats`` (an :class:`~i2m2_ray.training.robustness.InputStats` of the
    first ``settings.stats_samples`` training samples, e.g. the pipeline's, computed once for
    the checkpoints' prediction state) spares every task its pass over the training split."""
    import ray
    import ray.data

    from i2m2_ray import console

    gpu = 1 if cfg.run.use_gpu else 0
    threads = max(1, int(cfg.run.cpus_per_worker))
    quiet = not console.verbose()

    def assess(checkpoint: str, datasets: Mapping[str, Any], stats: Any) -> dict[str, Any]:
        import torch

        torch.set_num_threads(threads)
        console.quiet(quiet)  # Ray Data's lines per pass are noise here (unless --verbose)
        ray.data.DataContext.get_current().enable_progress_bars = False
        return assess_model(checkpoint, datasets, prepared.info, settings, cfg.train.batch_size, stats)

    task = ray.remote(num_cpus=0, num_gpus=gpu, max_retries=0)(assess)
    # read and preprocessed once for every model and pass (Ray spills to disk what the
    # object store cannot hold): the test split, and the training rows the input statistics
    # come from unless they are given
    datasets = {"test": prepared.datasets["test"].materialize()}
    # the extra test sets (VQA-VS's OOD sets, "test_ood_<set>") get the same passes
    datasets.update({k: d.materialize() for k, d in prepared.datasets.items() if k.startswith("test_")})
    if stats is None:
        datasets["train"] = prepared.datasets["train"].limit(settings.stats_samples).materialize()
    shared = ray.put(stats)
    return {name: ray.get(task.remote(path, datasets, shared)) for name, path in checkpoints.items()}


def reliability_curves(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], bins: int = 15
) -> dict[str, Any]:
    """Head -> its reliability curve (for the diagrams)."""
    return {h: reliability_curve(np.asarray(labels[h]), np.asarray(probs[h]), bins) for h in sorted(labels)}


def flatten_robustness(report: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, float]:
    """A robustness report as summary entries: ``missing.<modality>.<metric>`` for every
    metric, and ``robustness.<modality>.relative_<metric>`` (the area under the metric
    against the noise level) for ``metrics``, on the test split and on every extra test set
    the report has (``relative_ood_kw_vqa_score``)."""
    from i2m2_ray.evaluation import relative_robustness

    out: dict[str, float] = {}
    for m, scored in report.get(MISSING, {}).items():
        out.update({f"{MISSING}.{m}.{k}": float(v) for k, v in scored.items()})
    for m, curve in report.get("noise", {}).items():
        for k in set_metric_names(report, metrics):
            values = [float(c.get(k, np.nan)) for c in curve["metrics"]]
            if all(np.isfinite(values)):
                out[f"{ROBUSTNESS}.{m}.relative_{k}"] = relative_robustness(curve["levels"], values)
    return out


def effective_robustness_entries(
    reports: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], baseline: str = "inter"
) -> dict[str, dict[str, float]]:
    """Model -> ``robustness.<modality>.effective_<metric>`` against ``baseline``'s curve
    (MultiBench's effective robustness: the gain over the baseline shifted to the same clean
    score), for every model whose report has noise curves."""
    from i2m2_ray.evaluation import effective_robustness

    base = reports.get(baseline, {}).get("noise", {})
    out: dict[str, dict[str, float]] = {}
    for model, report in reports.items():
        entries: dict[str, float] = {}
        for m, curve in report.get("noise", {}).items():
            if m not in base:
                continue
            for k in set_metric_names(report, metrics):
                f = [float(c.get(k, np.nan)) for c in curve["metrics"]]
                b = [float(c.get(k, np.nan)) for c in base[m]["metrics"]]
                if all(np.isfinite(f)) and all(np.isfinite(b)) and len(f) == len(b):
                    entries[f"{ROBUSTNESS}.{m}.effective_{k}"] = effective_robustness(curve["levels"], f, b)
        out[model] = entries
    return out


def assess_model(
    checkpoint: str,
    datasets: Mapping[str, Any],
    facts: Mapping[str, Any],
    settings: AssessSettings,
    batch_size: int,
    stats: Any = None,
) -> dict[str, Any]:
    """The robustness report of one trained model (run it where the data can be read, e.g.
    in a Ray task): each modality missing, each modality noisy at every level, on the test
    split and on every extra test set in ``datasets`` (``test_<set>``, merged in by
    :func:`merge_set_reports`), from the model's best weights in ``checkpoint``. The
    training-split statistics (missing-modality fill, noise scale) are ``stats`` when given,
    else estimated from the first ``settings.stats_samples`` rows of ``datasets["train"]``."""
    import torch

    from i2m2_ray.training.checkpoint import load_checkpoint
    from i2m2_ray.training.robustness import input_stats, robustness

    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, facts)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU where the task was given one
    model.to(device)
    torch.manual_seed(settings.seed)
    if stats is None:
        train = datasets["train"].iter_torch_batches(batch_size=batch_size)
        stats = input_stats(train, spec.modalities, settings.stats_samples)

    def passes(split: str) -> dict[str, Any]:
        def batches() -> Any:
            return datasets[split].iter_torch_batches(batch_size=batch_size, device=device)

        pad_id = int(facts.get("pad_token_id", 0))
        return robustness(
            model, batches, spec, stats, settings.noise_levels, fill=settings.fill, pad_id=pad_id, seed=settings.seed
        )

    report: dict[str, Any] = passes("test")
    extra = sorted(k for k in datasets if k.startswith("test_"))
    if extra:
        report = merge_set_reports(report, {k.removeprefix("test_"): passes(k) for k in extra})
    report["stats_samples"] = stats.samples
    return report


def merge_set_reports(report: Mapping[str, Any], sets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The test split's robustness report with the extra test sets' (``sets``: set name ->
    its report, e.g. ``ood_kw``) merged in as ``<set>_<metric>`` beside the test metrics of
    each missing modality and noise level, and ``<group>_mean_<metric>`` over each group's
    sets (as their clean test metrics are named); ``"sets"`` lists the set names."""
    from i2m2_ray.training.metrics import group_means, prefixed_metrics

    def merged(base: Mapping[str, float], per_set: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        out = dict(base)
        for name, scored in per_set.items():
            out.update(prefixed_metrics(name, scored))
        out.update(group_means(out, list(per_set)))
        return out

    missing = {
        m: merged(scored, {n: r["missing"][m] for n, r in sets.items()})
        for m, scored in report.get(MISSING, {}).items()
    }
    noise = {}
    for m, curve in report.get("noise", {}).items():
        levels = [
            merged(scored, {n: r["noise"][m]["metrics"][i] for n, r in sets.items()})
            for i, scored in enumerate(curve["metrics"])
        ]
        noise[m] = {"levels": list(curve["levels"]), "metrics": levels}
    return {**report, MISSING: missing, "noise": noise, "sets": list(sets)}


def set_metric_names(report: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """``metrics`` and their names on every extra test set of ``report`` and on each group's
    mean over its sets (``ood_kw_vqa_score``, ``ood_mean_vqa_score``)."""
    sets = list(report.get("sets", []))
    groups = sorted({s.split("_", 1)[0] + "_mean" for s in sets if "_" in s})
    return list(metrics) + [f"{s}_{k}" for s in [*sets, *groups] for k in metrics]


def model_from_checkpoint(ckpt: Mapping[str, Any], facts: Mapping[str, Any]) -> tuple[Any, Any]:
    """The model a checkpoint holds (built from its config through the encoder registry,
    with ``facts`` about the inputs), in eval mode, and its task spec."""
    from i2m2_ray.config import config_from_dict
    from i2m2_ray.models.build import build_model
    from i2m2_ray.models.registry import encoder_factory
    from i2m2_ray.spec import is_product
    from i2m2_ray.training.checkpoint import spec_of

    cfg = config_from_dict(ckpt["config"])
    spec = spec_of(ckpt)
    paradigm = str(ckpt["paradigm"])
    weights = dict(cfg.product.weights) if is_product(paradigm) else None
    model = build_model(paradigm, spec, cfg.model, encoder_factory(facts), weights or None)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, spec


@dataclass
class Assessment:
    """What stage 3 found, for every model it assessed.

    Attributes:
        entries: model -> its extra ``summary.json`` entries (calibration, intervals,
            ``missing.*``, ``robustness.*``).
        reports: model -> its robustness report (every curve; empty without robustness).
        figures: model -> its reliability diagrams; ``""`` -> the figures of the comparison
            (robustness curves per modality, the main metric with its interval per model).
    """

    entries: dict[str, dict[str, float]]
    reports: dict[str, dict[str, Any]]
    figures: dict[str, list[Any]]


def assess_models(
    predictions: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    tests: Mapping[str, Mapping[str, float]],
    reports: Mapping[str, Mapping[str, Any]],
    settings: AssessSettings,
    metrics: Sequence[str],
    plots: Any,
    dataset: str,
) -> Assessment:
    """Stage 3 on the driver, from what the models left: ``predictions`` (model -> its test
    labels and probabilities), ``tests`` (model -> its test metrics) and ``reports`` (model ->
    its robustness report, from :func:`assess_model`; may be empty). ``metrics``: the report's
    columns, the first the main one (its interval bars, the robustness figures); figures go
    to the folder ``plots``."""
    from pathlib import Path

    from i2m2_ray.evaluation import interval_bars, reliability_diagram, robustness_figure
    from i2m2_ray.evaluation.figures import binary_view, confusion_figure, curves_figure

    folder = Path(plots)
    entries: dict[str, dict[str, float]] = {}
    figures: dict[str, list[Any]] = {"": []}
    for name, (labels, probs) in predictions.items():
        entries[name] = assess_predictions(labels, probs, settings)
        figures[name] = []
        for head, curve in reliability_curves(labels, probs, settings.ece_bins).items():
            suffix = "" if len(labels) == 1 else f"_{head}"
            title = f"{name}{' ' + head if suffix else ''}: test reliability"
            figures[name].append(reliability_diagram(curve, title, folder / f"reliability_{name}{suffix}.png"))
    for name, report in reports.items():
        entries.setdefault(name, {}).update(flatten_robustness(report, metrics))
    for name, extra in effective_robustness_entries(reports, metrics).items():
        entries.setdefault(name, {}).update(extra)
    main = metrics[0]
    modalities = sorted({m for r in reports.values() for m in r.get("noise", {})})
    for m in modalities:
        curves = {
            n: [float(c.get(main, np.nan)) for c in r["noise"][m]["metrics"]]
            for n, r in reports.items()
            if m in r.get("noise", {})
        }
        levels = next(r["noise"][m]["levels"] for r in reports.values() if m in r.get("noise", {}))
        title = f"{dataset}: test {main} with noise on '{m}'"
        figures[""].append(robustness_figure(levels, curves, main, title, folder / f"robustness_{m}.png"))
    bars: dict[str, tuple[float, float, float]] = {}
    for n, e in entries.items():
        if n in tests:
            low, high = e.get(f"{main}_ci_low", np.nan), e.get(f"{main}_ci_high", np.nan)
            bars[n] = (float(tests[n].get(main, np.nan)), float(low), float(high))
    if bars:
        title = f"{dataset}: test {main}, 95% bootstrap interval"
        figures[""].append(interval_bars(bars, main, title, folder / f"comparison_{main}.png"))
    # every model on one figure per label: ROC and precision-recall; confusion matrices of
    # the multi-class labels
    heads = sorted({h for labels, _ in predictions.values() for h in labels})
    for head in heads:
        have = {n: (labels[head], probs[head]) for n, (labels, probs) in predictions.items() if head in labels}
        views = {n: binary_view(y, p) for n, (y, p) in have.items()}
        kind = "" if all(np.asarray(p).shape[1] == 2 for _, p in have.values()) else ", one-vs-rest pooled"
        fig = curves_figure(views, f"{dataset} '{head}': test curves{kind}", folder / f"curves_{head}.png")
        if fig is not None:
            figures[""].append(fig)
        single = all(np.asarray(y).ndim == 1 for y, _ in have.values())  # one class per sample
        shapes = {np.asarray(p).shape[1] for _, p in have.values()}
        if single and len(shapes) == 1 and (classes := shapes.pop()) > 2:
            title = f"{dataset} '{head}': test confusion (rows: true class)"
            figures[""].append(confusion_figure(have, classes, title, folder / f"confusion_{head}.png"))
    return Assessment(entries, {n: dict(r) for n, r in reports.items()}, figures)
