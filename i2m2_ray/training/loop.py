"""The training step of every paradigm: how a batch becomes a loss and an optimizer step,
how a split is predicted, and the optimizers and schedules the config names (pure torch).

:mod:`i2m2_ray.training.worker` runs these on each Ray Train worker. The loss is
class-weighted cross-entropy over the label heads (binary cross-entropy per class for a
multi-label head), averaged or summed over heads.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2m2_ray.spec import TaskSpec, label_column


@dataclass(frozen=True)
class StepSettings:
    """How each training step runs (``train.*`` options); the maths is the same for all.

    Attributes:
        grad_accum_steps: micro-batches whose gradients are summed (each loss divided by
            this) before one optimizer step.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the forward pass; the loss is
            computed in fp32 and the weights stay fp32).
        channels_last: 4-D inputs are made NHWC (the model must be converted too).
        grad_clip: max gradient norm (0: no clipping), applied to the summed gradient.
        head_reduction: ``"mean"`` or ``"sum"`` of the label heads' losses (the recipe's
            fastMRI loss sums its four labels).
    """

    grad_accum_steps: int = 1
    precision: str = "fp32"
    channels_last: bool = False
    grad_clip: float = 0.0
    head_reduction: str = "mean"

    @classmethod
    def from_config(cls, t: Any) -> StepSettings:
        """From one model's training settings (:meth:`ExperimentConfig.training`)."""
        return cls(t.grad_accum_steps, t.precision, t.channels_last, t.grad_clip, t.head_reduction)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``precision="bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_inputs(batch: Mapping[str, Tensor], spec: TaskSpec, channels_last: bool = False) -> dict[str, Tensor]:
    """The batch's modality tensors (those it has: a model that needs an absent one says
    which; see :mod:`i2m2_ray.training.robustness` for predicting without one)."""
    present = [m for m in spec.modalities if m in batch]
    if not channels_last:
        return {m: batch[m] for m in present}
    return {
        m: batch[m].contiguous(memory_format=torch.channels_last) if batch[m].dim() == 4 else batch[m]
        for m in present
    }


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)`` pairs: one item of look-ahead, so the last one is known."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for upcoming in it:
        yield current, False
        current = upcoming
    yield current, True


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def loss_fn(
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    weights: Mapping[str, Tensor],
    reduction: str = "mean",
    multilabel: Iterable[str] = (),
) -> Tensor:
    """Class-weighted cross-entropy, averaged (``reduction="mean"``) or summed over label heads.

    ``outputs`` may be logits (single experts) or normalised log-probabilities (products):
    ``cross_entropy`` applies ``log_softmax``, which leaves the latter unchanged.

    A multi-label head (named in ``multilabel``; its labels a ``(batch, classes)`` float matrix
    of per-class scores in [0, 1], e.g. VQA's soft answer scores) takes binary cross-entropy
    with logits instead,
    summed over classes and averaged over the batch; a product's output for such a head is
    the per-class log-odds of the binary product, so the same loss serves.
    """
    losses = []
    multi = set(multilabel)
    for h, out in outputs.items():
        y = batch[label_column(h)]
        if h in multi:
            losses.append(F.binary_cross_entropy_with_logits(out, y.float(), reduction="sum") / max(len(y), 1))
        else:
            losses.append(F.cross_entropy(out, y.long(), weight=weights.get(h)))
    stacked = torch.stack(losses)
    return stacked.sum() if reduction == "sum" else stacked.mean()


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    spec: TaskSpec,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Labels and class probabilities per head over an iterable of batches."""
    model.eval()
    labels: dict[str, list[np.ndarray]] = {h: [] for h in spec.heads}
    probs: dict[str, list[np.ndarray]] = {h: [] for h in spec.heads}
    for batch in batches:
        with autocast(_device_of(model), precision):
            out = model(_to_inputs(batch, spec, channels_last))
        for h in spec.heads:
            y = batch[label_column(h)]
            # multi-label heads (per-class score labels): a sigmoid per class
            p = torch.sigmoid(out[h].float()) if spec.is_multilabel(h) else torch.softmax(out[h].float(), dim=-1)
            probs[h].append(p.cpu().numpy())
            labels[h].append(y.cpu().numpy())
    if not any(len(v) for v in labels.values()):
        raise ValueError("evaluation split yielded no batches")
    return ({h: np.concatenate(v) for h, v in labels.items()}, {h: np.concatenate(v) for h, v in probs.items()})


def _optimizer_step(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    clip: float,
    scale: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    if scale != 1.0:  # a short last group of micro-batches: make its gradient their mean
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


def train_epoch(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    spec: TaskSpec,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    weights: Mapping[str, Tensor],
    settings: StepSettings = StepSettings(),
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[int, float]:
    """One pass over ``batches``; returns (samples seen, summed per-sample loss).

    With ``grad_accum_steps = k`` each micro-batch's loss is divided by ``k`` and the
    gradients of ``k`` micro-batches are summed before one optimizer step, so ``k`` equal
    micro-batches of ``n`` give the step of one batch of ``k n`` (for an unweighted loss;
    a class-weighted mean is taken per micro-batch). A shorter last group is rescaled to its
    mean. Under DDP only each group's last backward all-reduces. The loss is summed on the
    device and read once at the end, so no step waits for the host. ``scheduler`` (if any)
    steps after every optimizer step.
    """
    model.train()
    k = settings.grad_accum_steps
    device = _device_of(model)
    no_sync = getattr(model, "no_sync", None)  # DDP: skip the all-reduce inside a group
    optimizer.zero_grad(set_to_none=True)
    seen, pending = 0, 0
    total = torch.zeros((), dtype=torch.float32, device=device)
    for batch, last in _with_last(batches):
        pending += 1
        sync = pending == k or last
        ctx = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with ctx:
            with autocast(device, settings.precision):
                out = model(_to_inputs(batch, spec, settings.channels_last))
            loss = loss_fn(
                {h: o.float() for h, o in out.items()}, batch, weights, settings.head_reduction, spec.multilabel
            )
            (loss / k).backward()
        n = next(iter(batch.values())).shape[0]
        seen += n
        total += loss.detach() * n
        if sync:
            _optimizer_step(optimizer, params, settings.grad_clip, k / pending, scheduler)
            pending = 0
    return seen, float(total)


def param_groups(model: nn.Module, head_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """The trainable parameters in one group, or two when the classification heads (every
    :class:`~i2m2_ray.models.experts.MultiHead`) learn at ``head_lr_mult`` times the rate."""
    from i2m2_ray.models.experts import MultiHead

    params = [p for p in model.parameters() if p.requires_grad]
    if head_lr_mult == 1.0:
        return [{"params": params, "lr_mult": 1.0}]
    heads = {id(p) for m in model.modules() if isinstance(m, MultiHead) for p in m.parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in heads], "lr_mult": 1.0},
        {"params": [p for p in params if id(p) in heads], "lr_mult": head_lr_mult},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict[str, Any]], t: Any) -> torch.optim.Optimizer:
    """The optimizer of one model's training settings ``t`` (a :class:`TrainConfig`); each
    group's learning rate is ``t.lr`` times its ``lr_mult``."""
    sized = [{"params": g["params"], "lr": t.lr * g.get("lr_mult", 1.0)} for g in groups]
    if t.optimizer == "sgd":
        return torch.optim.SGD(sized, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "rmsprop":  # torch's defaults (alpha 0.99, eps 1e-8), as the public MIMIC code
        return torch.optim.RMSprop(sized, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(sized, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, t: Any, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``t.schedule="linear"``: the rate rises linearly from 0 over the first ``t.warmup`` of
    all optimizer steps, then falls linearly to 0 at the last; ``"constant"``: none."""
    if t.schedule == "constant":
        return None
    total = max(1, t.epochs * steps_per_epoch)
    warm = int(t.warmup * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(train_size: int, world: int, batch_size: int, accum: int) -> int:
    """Optimizer steps one worker takes per epoch over its share of ``train_size`` samples."""
    per_worker = math.ceil(train_size / max(1, world))
    return max(1, math.ceil(math.ceil(per_worker / batch_size) / accum))
