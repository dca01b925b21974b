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

from i2m2_ray.evaluation import DEFAULT_LEVELS, bootstrap_intervals, calibration_metrics, reliability_curve

MISSING = "missing"
ROBUSTNESS = "robustness"


@dataclass(frozen=True)
class AssessSettings:
    """How models are assessed (``evaluation.*`` of the config)."""

    bootstrap: int = 1000  # resamples of the test set for each interval (0: no intervals)
    ece_bins: int = 15
    robustness: bool = True  # missing and noisy modalities (needs a pass over the test set per case)
    noise_levels: tuple[float, ...] = DEFAULT_LEVELS
    fill: str = "mean"  # what a single expert gets for a missing modality: mean | zeros
    stats_samples: int = 4096  # training samples the inputs' mean and std are estimated from
    seed: int = 0


def assess_predictions(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], settings: AssessSettings
) -> dict[str, float]:
    """Calibration metrics and every metric's bootstrap interval, from test predictions:
    ``ece``, ``brier`` (per head, ``_mean``), and ``<metric>_ci_low`` / ``_ci_high`` for the
    test metrics and the calibration metrics alike."""
    out = calibration_metrics(labels, probs, bins=settings.ece_bins)
    if settings.bootstrap > 0:
        intervals = bootstrap_intervals(labels, probs, n_resamples=settings.bootstrap, seed=settings.seed)

        def calibration(lab: Mapping[str, np.ndarray], pr: Mapping[str, np.ndarray]) -> dict[str, float]:
            return calibration_metrics(lab, pr, bins=settings.ece_bins)

        n, seed = settings.bootstrap, settings.seed
        intervals.update(bootstrap_intervals(labels, probs, metric_fn=calibration, n_resamples=n, seed=seed))
        for name, (low, high) in intervals.items():
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out


def reliability_curves(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], bins: int = 15
) -> dict[str, Any]:
    """Head -> its reliability curve (for the diagrams)."""
    return {h: reliability_curve(np.asarray(labels[h]), np.asarray(probs[h]), bins) for h in sorted(labels)}


def flatten_robustness(report: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, float]:
    """A robustness report as summary entries: ``missing.<modality>.<metric>`` for every
    metric, and ``robustness.<modality>.relative_<metric>`` (the area under the metric
    against the noise level) for ``metrics``."""
    from i2m2_ray.evaluation import relative_robustness

    out: dict[str, float] = {}
    for m, scored in report.get(MISSING, {}).items():
        out.update({f"{MISSING}.{m}.{k}": float(v) for k, v in scored.items()})
    for m, curve in report.get("noise", {}).items():
        for k in metrics:
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
            for k in metrics:
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
) -> dict[str, Any]:
    """The robustness report of one trained model (run it where the data can be read, e.g.
    in a Ray task): each modality missing, each modality noisy at every level, on the test
    split, from the model's best weights in ``checkpoint``."""
    import torch

    from i2m2_ray.training.checkpoint import load_checkpoint
    from i2m2_ray.training.robustness import input_stats, robustness

    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, facts)
    torch.manual_seed(settings.seed)
    train = datasets["train"].iter_torch_batches(batch_size=batch_size)
    stats = input_stats(train, spec.modalities, settings.stats_samples)

    def test() -> Any:
        return datasets["test"].iter_torch_batches(batch_size=batch_size)

    report: dict[str, Any] = robustness(
        model,
        test,
        spec,
        stats,
        settings.noise_levels,
        fill=settings.fill,
        pad_id=int(facts.get("pad_token_id", 0)),
        seed=settings.seed,
    )
    report["stats_samples"] = stats.samples
    return report


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
