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
    """

    grad_accum_steps: int = 1
    precision: str = "fp32"
    channels_last: bool = False
    grad_clip: float = 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> StepSettings:
        t = cfg.train
        return cls(t.grad_accum_steps, t.precision, t.channels_last, t.grad_clip)


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


def loss_fn(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> Tensor:
    """Class-weighted cross-entropy, averaged over label heads.

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
    return torch.stack(losses).mean()


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


def _optimizer_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], clip: float, scale: float) -> None:
    if scale != 1.0:  # a short last group of micro-batches: make its gradient their mean
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_epoch(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    spec: TaskSpec,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    weights: Mapping[str, Tensor],
    settings: StepSettings = StepSettings(),
) -> tuple[int, float]:
    """One pass over ``batches``; returns (samples seen, summed per-sample loss).

    With ``grad_accum_steps = k`` each micro-batch's loss is divided by ``k`` and the
    gradients of ``k`` micro-batches are summed before one optimizer step, so ``k`` equal
    micro-batches of ``n`` give the step of one batch of ``k n`` (for an unweighted loss;
    a class-weighted mean is taken per micro-batch). A shorter last group is rescaled to its
    mean. Under DDP only each group's last backward all-reduces. The loss is summed on the
    device and read once at the end, so no step waits for the host.
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
            loss = loss_fn({h: o.float() for h, o in out.items()}, batch, weights)
            (loss / k).backward()
        n = next(iter(batch.values())).shape[0]
        seen += n
        total += loss.detach() * n
        if sync:
            _optimizer_step(optimizer, params, settings.grad_clip, k / pending)
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


def make_optimizer(params: list[nn.Parameter], cfg: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.train.momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


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
    stage_products = lc.stage == "products"
    epochs = cfg.product.epochs if stage_products else cfg.train.epochs
    lr = cfg.product.lr if stage_products else cfg.train.lr
    wd = cfg.product.weight_decay if stage_products else cfg.train.weight_decay

    model = make_model(lc)
    device = ray.train.torch.get_device()
    settings = StepSettings.from_config(cfg)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cfg.train.compile:
        model.compile()  # in place: the state_dict keeps its keys
    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{lc.name}: every parameter is frozen; nothing to train")
    optimizer = make_optimizer(params, cfg, lr, wd)
    weights = (
        {h: torch.tensor(w, dtype=torch.float32, device=device) for h, w in lc.class_weights.items()}
        if cfg.train.class_weighted
        else {}
    )
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    test_shard = ray.train.get_dataset_shard("test")
    bs = cfg.train.batch_size
    pc = settings.precision, settings.channels_last
    fetch = {"prefetch_batches": cfg.train.prefetch_batches, "pin_memory": cfg.train.pin_memory}

    log_epoch = None
    if rank == 0 and lc.tracking_uri and lc.run_id:
        from i2m2_ray.tracking import epoch_logger

        log_epoch = epoch_logger(lc.tracking_uri, lc.run_id)

    monitor, mode = cfg.train.monitor, cfg.train.monitor_mode
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": -1, "best_val": {}, "history": []}
    best_state: dict[str, Tensor] | None = None
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        # a worker died (or the run was restarted): continue after the last finished epoch
        with resumed.as_directory() as d:
            saved = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
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
            local_shuffle_buffer_size=cfg.train.shuffle_buffer or None,
            local_shuffle_seed=cfg.run.seed * 100_003 + epoch * 101 + rank,
            **fetch,
        )
        seen, total = train_epoch(model, batches, lc.spec, optimizer, params, weights, settings)
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
        stopped_early = state["best_epoch"] > 0 and epoch + 1 - state["best_epoch"] >= cfg.train.patience
        # every epoch leaves a checkpoint to resume from: weights, optimizer, best weights so far
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                payload = {
                    "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
                    "optimizer": optimizer.state_dict(),
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
                say(f"[{lc.name}] early stop: no {monitor} gain for {cfg.train.patience} epochs")
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
