"""The one per-worker training loop, for every paradigm (run by Ray Train on each worker).

A paradigm only changes the model that :func:`i2m2_ray.models.build_model` builds; the
loss (class-weighted cross-entropy summed over label heads), validation, early stopping,
checkpointing and the final test evaluation are the same for all.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2m2_ray.config import config_from_dict
from i2m2_ray.data.base import label_column
from i2m2_ray.models.build import EncoderFactory, TaskSpec, build_model, load_components
from i2m2_ray.models.experts import ProductOfExperts
from i2m2_ray.training.checkpoint import load_checkpoint, unwrap
from i2m2_ray.training.metrics import compute_metrics, is_better

STATE_FILE = "train_state.pt"


@dataclass
class LoopConfig:
    """Everything a worker needs to train one model (picklable, sent to every worker)."""

    name: str
    paradigm: str
    spec: TaskSpec
    encoders: EncoderFactory
    experiment: dict[str, Any]
    stage: str  # "components" (stage 1) or "products" (stage 2)
    class_weights: dict[str, list[float]]
    init_checkpoints: dict[str, str] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    run_id: str | None = None
    product_weights: dict[str, float] = field(default_factory=dict)
    # extra evaluation splits scored like "test" (e.g. VQA-VS's OOD sets "test_ood_kw"): their
    # metrics come back as "<name without test_>_<metric>" with the test metrics
    test_sets: list[str] = field(default_factory=list)
    train_size: int = 0  # samples in the training split (sets the length of a learning-rate schedule)


def say(message: str) -> None:
    """One line to the worker's stdout, which Ray forwards to the driver once. (Train V2
    patches ``print`` into its logger and, because Ray wraps a worker's stdout, also echoes
    it there: every printed line would reach the driver twice.)"""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call with a per-rank offset where ranks should differ)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_model(lc: LoopConfig) -> nn.Module:
    """Build the paradigm's model; load and freeze components as configured."""
    cfg = config_from_dict(lc.experiment)
    model = build_model(lc.paradigm, lc.spec, cfg.model, lc.encoders, lc.product_weights or None)
    if isinstance(model, ProductOfExperts):
        for expert, path in lc.init_checkpoints.items():
            ckpt = load_checkpoint(path)
            load_components(model, {expert: ckpt["state_dict"]}, source=str(path))
        model.freeze(lc.freeze)
    return model


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
    if not channels_last:
        return {m: batch[m] for m in spec.modalities}
    return {
        m: batch[m].contiguous(memory_format=torch.channels_last) if batch[m].dim() == 4 else batch[m]
        for m in spec.modalities
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
) -> Tensor:
    """Class-weighted cross-entropy, averaged (``reduction="mean"``) or summed over label heads.

    ``outputs`` may be logits (single experts) or normalised log-probabilities (products):
    ``cross_entropy`` applies ``log_softmax``, which leaves the latter unchanged.

    A multi-label head (its labels a ``(batch, classes)`` float matrix of per-class scores
    in [0, 1], e.g. VQA's soft answer scores) takes binary cross-entropy with logits instead,
    summed over classes and averaged over the batch; a product's output for such a head is
    the per-class log-odds of the binary product, so the same loss serves.
    """
    losses = []
    for h, out in outputs.items():
        y = batch[label_column(h)]
        if y.dim() == 2:
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
            p = torch.sigmoid(out[h].float()) if y.dim() == 2 else torch.softmax(out[h].float(), dim=-1)
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
            loss = loss_fn({h: o.float() for h, o in out.items()}, batch, weights, settings.head_reduction)
            (loss / k).backward()
        n = next(iter(batch.values())).shape[0]
        seen += n
        total += loss.detach() * n
        if sync:
            _optimizer_step(optimizer, params, settings.grad_clip, k / pending, scheduler)
            pending = 0
    return seen, float(total)


def prefixed_metrics(name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"accuracy": 0.5}`` of evaluation set ``name`` -> ``{"<name>_accuracy": 0.5}``."""
    return {f"{name}_{k}": v for k, v in metrics.items()}


def group_means(metrics: Mapping[str, float], sets: Iterable[str]) -> dict[str, float]:
    """Means over evaluation sets named ``<group>_<set>`` (e.g. ``ood_kw``, ``ood_ko``):
    ``<group>_mean_<metric>`` for every metric each of the group's sets has."""
    groups: dict[str, list[str]] = {}
    for s in sets:
        if "_" in s:
            groups.setdefault(s.split("_", 1)[0], []).append(s)
    out: dict[str, float] = {}
    for group, members in groups.items():
        if len(members) < 2:
            continue
        keys = [k[len(members[0]) + 1 :] for k in metrics if k.startswith(members[0] + "_")]
        for key in keys:
            values = [metrics.get(f"{m}_{key}", math.nan) for m in members]
            finite = [v for v in values if not math.isnan(v)]
            if len(finite) == len(members):
                out[f"{group}_mean_{key}"] = float(np.mean(finite))
    return out


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


def _broadcast(obj: Any) -> Any:
    """Rank 0's object on every rank (no-op without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def _gather(obj: Any) -> list[Any]:
    """Every rank's object, in rank order (a one-element list without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point: fit, validate each epoch, early-stop, then test the best weights.

    Validation and test run on rank 0 over the whole (unsplit) split, so metrics are exact;
    the training split is sharded across workers. Returns (rank 0) the test metrics and
    test-set probabilities.
    """
    import ray.train
    import ray.train.torch

    lc: LoopConfig = config["loop"]
    cfg = config_from_dict(lc.experiment)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed_everything(cfg.run.seed)  # identical initial weights on every rank
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    t = cfg.training(lc.paradigm)  # this model's lr, epochs, optimizer, ... (train, product, per_paradigm)
    epochs = t.epochs

    model = make_model(lc)
    device = ray.train.torch.get_device()
    settings = StepSettings.from_config(t)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if t.compile:
        model.compile()  # in place: the state_dict keeps its keys
    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{lc.name}: every parameter is frozen; nothing to train")
    optimizer = make_optimizer(param_groups(model, t.head_lr_mult), t)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch(lc.train_size, world, t.batch_size, t.grad_accum_steps))
    weights = (
        {h: torch.tensor(w, dtype=torch.float32, device=device) for h, w in lc.class_weights.items()}
        if t.class_weighted
        else {}
    )
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    test_shard = ray.train.get_dataset_shard("test")
    bs = t.batch_size
    pc = settings.precision, settings.channels_last
    fetch = {"prefetch_batches": t.prefetch_batches, "pin_memory": t.pin_memory}

    log_epoch = None
    if rank == 0 and lc.tracking_uri and lc.run_id:
        from i2m2_ray.tracking import epoch_logger

        log_epoch = epoch_logger(lc.tracking_uri, lc.run_id)

    monitor, mode = t.monitor, t.monitor_mode
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": -1, "best_val": {}, "history": []}
    best_state: dict[str, Tensor] | None = None
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        # a worker died (or the run was restarted): continue after the last finished epoch
        with resumed.as_directory() as d:
            saved = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler"):
            scheduler.load_state_dict(saved["scheduler"])
        best_state = saved["best_state"] or None
        state = saved["state"]
        if rank == 0:
            say(f"[{lc.name}] resuming after epoch {state['epoch']} from {resumed.path}")

    stopped_early = False
    for epoch in range(state["epoch"], epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        batches = train_shard.iter_torch_batches(
            batch_size=bs,
            device=device,
            local_shuffle_buffer_size=t.shuffle_buffer or None,
            local_shuffle_seed=cfg.run.seed * 100_003 + epoch * 101 + rank,
            **fetch,
        )
        seen, total = train_epoch(model, batches, lc.spec, optimizer, params, weights, settings, scheduler)
        train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        metrics: dict[str, float] = {}
        if rank == 0:
            val_batches = val_shard.iter_torch_batches(batch_size=bs, device=device, **fetch)
            labels, probs = predict(unwrap(model), val_batches, lc.spec, *pc)
            metrics = {f"val_{k}": v for k, v in compute_metrics(labels, probs).items()}
        metrics = _broadcast(metrics)
        rss = _gather(peak_rss_mb())  # a collective: every rank calls it
        metrics.update(
            {
                "epoch": epoch + 1,
                "train_loss": total / max(seen, 1),
                "samples_per_s": seen * world / max(train_time, 1e-9),
                "peak_rss_mb": max(rss),  # the largest worker's peak resident memory so far
                # per CPU-second of this worker process (all its threads): unlike samples/s,
                # not lowered by other jobs on the machine
                "samples_per_cpu_s": seen / max(train_cpu, 1e-9),
            }
        )
        value = metrics.get(f"val_{monitor}", math.nan)
        if is_better(value, state["best"], mode):
            state["best"], state["best_epoch"] = value, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
            state["best_val"] = {k: v for k, v in metrics.items() if k.startswith("val_")}
        best = state["best"]
        metrics["best_" + monitor] = best if best is not None else math.nan
        state["epoch"] = epoch + 1
        state["history"].append(dict(metrics))
        stopped_early = state["best_epoch"] > 0 and epoch + 1 - state["best_epoch"] >= t.patience
        # every epoch leaves a checkpoint to resume from: weights, optimizer, best weights so far
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                payload = {
                    "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "best_state": best_state or {},
                    "state": state,
                }
                torch.save(payload, os.path.join(tmp, STATE_FILE))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:
            say(
                f"[{lc.name}] epoch {epoch + 1}/{epochs} loss {metrics['train_loss']:.4f} "
                f"val {monitor} {value:.4f} (best {metrics['best_' + monitor]:.4f} @ {state['best_epoch']}) "
                f"{metrics['samples_per_s']:.0f} samples/s"
            )
            if log_epoch is not None:
                log_epoch(metrics, epoch + 1)
        if stopped_early:
            if rank == 0:
                say(f"[{lc.name}] early stop: no {monitor} gain for {t.patience} epochs")
            break

    nodes = _gather(ray.get_runtime_context().get_node_id())
    if rank != 0:
        return None
    if best_state is None:  # the monitored metric was never defined: keep the last weights
        best_state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    unwrap(model).load_state_dict(best_state)
    test_batches = test_shard.iter_torch_batches(batch_size=bs, device=device, **fetch)
    labels, probs = predict(unwrap(model), test_batches, lc.spec, *pc)
    test = compute_metrics(labels, probs)
    for name in lc.test_sets:
        extra = ray.train.get_dataset_shard(name).iter_torch_batches(batch_size=bs, device=device, **fetch)
        scored = compute_metrics(*predict(unwrap(model), extra, lc.spec, *pc))
        test.update(prefixed_metrics(name.removeprefix("test_"), scored))
    test.update(group_means(test, [n.removeprefix("test_") for n in lc.test_sets]))
    return {
        "test": test,
        "val": state["best_val"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "history": state["history"],
        "worker_nodes": nodes,
        "test_labels": labels,
        "test_probs": probs,
        # Ray Train cannot return tensors: ship the weights as NumPy arrays
        "state_dict": {k: v.numpy() for k, v in best_state.items()},
    }
