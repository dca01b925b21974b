"""The Ray Train entry point run on every worker, for every paradigm: set up (or restore),
train the epochs, evaluate the best weights.

A paradigm only changes the model that :func:`i2m2_ray.models.build_model` builds; the loss,
validation, early stopping, checkpointing and the final test evaluation are the same for all.
Every epoch reports a checkpoint to Ray Train (one file, ``model.pt``: the best weights so
far plus what resuming needs); the last report, after the test evaluation, carries the
final one, which :func:`i2m2_ray.training.launch.fit` copies out.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from i2m2_ray import console
from i2m2_ray.config import ExperimentConfig, TrainConfig, config_from_dict
from i2m2_ray.evaluation.scoring import assess_predictions, settings_of
from i2m2_ray.models.build import build_model, load_components
from i2m2_ray.models.experts import ProductOfExperts
from i2m2_ray.models.registry import encoder_factory
from i2m2_ray.spec import INTER_EXTENDED, TaskSpec
from i2m2_ray.training.checkpoint import MODEL_FILE, CheckpointError, load_checkpoint, save_checkpoint, unwrap
from i2m2_ray.training.held import MB, HeldSplit
from i2m2_ray.training.loop import (
    StepSettings,
    make_optimizer,
    make_scheduler,
    param_groups,
    peak_rss_mb,
    predict,
    steps_per_epoch,
    train_epoch,
)
from i2m2_ray.training.metrics import compute_metrics, group_means, is_better, prefixed_metrics


@dataclass
class LoopConfig:
    """Everything a worker needs to train one model (picklable, sent to every worker).

    The encoders are built by the builder ``model.encoder`` names (in ``experiment``) from
    ``input_facts``: what the data said about their inputs (``PreparedData.info``: the
    shape of each modality, the tokeniser's sizes...).
    """

    name: str
    paradigm: str
    spec: TaskSpec
    input_facts: dict[str, Any]
    experiment: dict[str, Any]
    class_weights: dict[str, list[float]]
    init_checkpoints: dict[str, str] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    run_id: str | None = None
    product_weights: dict[str, float] = field(default_factory=dict)
    # extra evaluation splits scored like "test" (e.g. VQA-VS's OOD sets "test_ood_kw"): their
    # metrics come back as "<name without test_>_<metric>" with the test metrics
    test_sets: list[str] = field(default_factory=list)
    # also score the extra test sets' calibration and bootstrap intervals here, where their
    # predictions are (a pipeline's stage 3 for them; a sweep's trials leave it out)
    assess_test_sets: bool = False
    train_size: int = 0  # samples in the training split (sets the length of a learning-rate schedule)
    verbose: bool = False  # --verbose: Ray's own log lines in this worker too (i2m2_ray.console)
    # the folder of the machine's running-worker counts (i2m2_ray.training.cores): when set,
    # a CPU worker whose training split is held takes the cores the other fits left idle
    core_share: str | None = None


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
    """Build the paradigm's model (encoders from the registry); load and freeze components as
    configured."""
    cfg = config_from_dict(lc.experiment)
    encoders = encoder_factory(lc.input_facts)
    model = build_model(lc.paradigm, lc.spec, cfg.model, encoders, lc.product_weights or None)
    if isinstance(model, ProductOfExperts):
        for expert, path in lc.init_checkpoints.items():
            ckpt = load_checkpoint(path)
            load_components(model, {expert: ckpt["state_dict"]}, source=str(path))
        model.freeze(lc.freeze)
    elif lc.paradigm in lc.init_checkpoints:  # a model trained on from its fitted weights (inter_extended)
        path = lc.init_checkpoints[lc.paradigm]
        model.load_state_dict(load_checkpoint(path, paradigm=lc.paradigm)["state_dict"])
    return model


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


def _cpu(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


@dataclass
class WorkerRun:
    """One worker's training: what :func:`setup` builds and :func:`run_epochs` advances.

    ``state`` is what a checkpoint restores: ``epoch`` (finished), ``best`` and
    ``best_epoch`` of the monitored metric, ``best_val`` (that epoch's validation metrics),
    ``history`` (every epoch's metrics) and ``stopped`` (early stopping happened).
    """

    lc: LoopConfig
    cfg: ExperimentConfig
    t: TrainConfig
    rank: int
    world: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    params: list[nn.Parameter]
    class_weights: dict[str, Tensor]
    settings: StepSettings
    device: torch.device
    state: dict[str, Any]
    best_state: dict[str, Tensor] | None = None
    held: dict[str, HeldSplit] = field(default_factory=dict)  # splits read every epoch (train.in_memory_mb)

    def batches(self, split: str, keep: bool = False) -> Any:
        """An evaluation split's batches (rank 0 reads the whole split). ``keep``: a split
        read every epoch (validation) is held in memory after its first pass when it fits
        in ``train.in_memory_mb``, and replayed in the same order after that."""
        import ray.train

        if keep and self.holding(split):
            return self.held[split].replay()
        fetch = {"prefetch_batches": self.t.prefetch_batches, "pin_memory": self.t.pin_memory}
        shard = ray.train.get_dataset_shard(split)
        batches = shard.iter_torch_batches(batch_size=self.t.batch_size, device=self.device, **fetch)
        if not keep:
            return batches
        return self.held.setdefault(split, HeldSplit(self.t.in_memory_mb)).first_pass(batches)

    def holding(self, split: str) -> bool:
        """Whether ``split`` is held in this worker (its first pass fitted the budget)."""
        return split in self.held and self.held[split].held

    def train_batches(self, shard: Any, epoch: int) -> Any:
        """This epoch's training batches: a global shuffle seeded by ``run.seed`` and the
        epoch. The first epoch streams them from Ray Data (which shuffles the split's index);
        with one worker, a split that fits in ``train.in_memory_mb`` is then held and each
        later epoch draws its own permutation of the held rows. With several workers each
        keeps streaming its shard: a held shard would fix which rows each worker sees."""
        t, seed = self.t, self.cfg.run.seed * 100_003 + epoch * 101 + self.rank
        held = self.held.setdefault("train", HeldSplit(t.in_memory_mb if self.world == 1 else 0))
        if held.held:
            return held.shuffled(t.batch_size, seed) if t.shuffle else held.replay()
        batches = shard.iter_torch_batches(
            batch_size=t.batch_size,
            device=self.device,
            local_shuffle_buffer_size=t.shuffle_buffer or None,
            local_shuffle_seed=seed,
            prefetch_batches=t.prefetch_batches,
            pin_memory=t.pin_memory,
        )
        return held.first_pass(batches)

    def checkpoint(self, folder: str) -> Any:
        """``model.pt`` in ``folder`` (best weights so far + what resuming needs), as a Ray
        checkpoint."""
        import ray.train

        save_checkpoint(
            os.path.join(folder, MODEL_FILE),
            self.best_state if self.best_state is not None else _cpu(self.model),
            self.lc.paradigm,
            self.lc.experiment,
            self.lc.spec,
            {
                "epoch": self.state["best_epoch"],
                "metrics": self.state["best_val"],
                "resume": {
                    "model": _cpu(self.model),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                    "state": self.state,
                },
            },
        )
        return ray.train.Checkpoint.from_directory(folder)


def setup(lc: LoopConfig) -> WorkerRun:
    """Build the model, optimizer and schedule of ``lc`` on this worker; restore them from
    Ray Train's latest checkpoint when the run is resumed (a worker died, or the driver)."""
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(lc.experiment)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed_everything(cfg.run.seed)  # identical initial weights on every rank
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    # this model's lr, epochs, optimizer, ... (train, product, per_paradigm); the control
    # inter_extended trains as the products do
    t = cfg.training(INTER_EXTENDED if lc.name == INTER_EXTENDED else lc.paradigm)
    model = make_model(lc)
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
    device = ray.train.torch.get_device()
    weights = (
        {h: torch.tensor(w, dtype=torch.float32, device=device) for h, w in lc.class_weights.items()}
        if t.class_weighted
        else {}
    )
    state: dict[str, Any] = {
        "epoch": 0, "best": None, "best_epoch": -1, "best_val": {}, "history": [], "stopped": False,
    }  # fmt: skip
    run = WorkerRun(lc, cfg, t, rank, world, model, optimizer, scheduler, params, weights, settings, device, state)
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        saved, resumed = load_resume_checkpoint(resumed, lc.name if rank == 0 else None)
        resume = saved["resume"]
        unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume.get("scheduler"):
            scheduler.load_state_dict(resume["scheduler"])
        run.state = resume["state"]
        run.best_state = saved["state_dict"] if run.state["best_epoch"] > 0 else None
        if rank == 0:
            say(f"[{lc.name}] resuming after epoch {run.state['epoch']} from {resumed.path}")
    return run


def load_resume_checkpoint(latest: Any, name: str | None) -> tuple[dict[str, Any], Any]:
    """The checkpoint dict of Ray Train's ``latest`` checkpoint, or, when that one is damaged
    (truncated by a full disk, say), of the newest earlier one the run kept (Train keeps two:
    see ``CheckpointConfig`` in :mod:`i2m2_ray.training.launch`); returns it with the Ray
    checkpoint it came from. ``name``: say so under this model's name (None: quietly).

    Raises:
        CheckpointError: no kept checkpoint can be read; names the latest one's file.
    """
    import ray.train

    try:
        with latest.as_directory() as d:
            return load_checkpoint(os.path.join(d, MODEL_FILE)), latest
    except CheckpointError as exc:
        error = exc
    fs, path = latest.filesystem, latest.path.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    from pyarrow import fs as pafs

    kept = sorted(
        (i.path for i in fs.get_file_info(pafs.FileSelector(parent)) if i.type == pafs.FileType.Directory),
        reverse=True,
    )
    for older in [k for k in kept if k.rstrip("/") != path and k.rsplit("/", 1)[-1].startswith("checkpoint_")]:
        candidate = ray.train.Checkpoint(older, filesystem=fs)
        try:
            with candidate.as_directory() as d:
                saved = load_checkpoint(os.path.join(d, MODEL_FILE))
        except CheckpointError:
            continue
        if name is not None:
            say(f"[{name}] {error}; resuming from the checkpoint before it, {older}")
        return saved, candidate
    raise CheckpointError(
        f"{error}; no earlier checkpoint of this run can be read either (in {parent}): delete that folder "
        "to train this model from scratch"
    ) from None


def _share_idle_cores(lc: LoopConfig) -> None:
    """Take this epoch's share of the machine's cores (see :mod:`i2m2_ray.training.cores`);
    a line when the number of threads changes."""
    from i2m2_ray.training import cores

    assert lc.core_share is not None
    base = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    workers = cores.running_workers(lc.core_share)
    threads = cores.threads_for(base, cores.machine_cores(), workers)
    if threads != torch.get_num_threads():
        say(f"[{lc.name}] torch threads {torch.get_num_threads()} -> {threads} ({workers} training workers running)")
        torch.set_num_threads(threads)


def run_epochs(run: WorkerRun) -> None:
    """Train until ``epochs`` or early stopping; validate on rank 0 after every epoch and
    report its metrics with a checkpoint (every epoch can be resumed from)."""
    import ray.train

    lc, t, state = run.lc, run.t, run.state
    log_epoch = None
    if run.rank == 0 and lc.tracking_uri and lc.run_id:
        from i2m2_ray.tracking import epoch_logger

        log_epoch = epoch_logger(lc.tracking_uri, lc.run_id)
    train_shard = ray.train.get_dataset_shard("train")
    monitor, mode = t.monitor, t.monitor_mode
    for epoch in range(state["epoch"], t.epochs):
        if state["stopped"]:
            break
        was_held = run.holding("train")
        if was_held and lc.core_share and not torch.cuda.is_available():
            _share_idle_cores(lc)
        t0, c0 = time.perf_counter(), time.process_time()
        batches = run.train_batches(train_shard, epoch)
        # rank 0 writes a line a minute within a long epoch
        feed = console.every_minute(batches, f"[{lc.name}] epoch {epoch + 1}/{t.epochs}") if run.rank == 0 else batches
        seen, total = train_epoch(
            run.model, feed, lc.spec, run.optimizer, run.params, run.class_weights, run.settings, run.scheduler
        )
        train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        metrics: dict[str, float] = {}
        if run.rank == 0:
            labels, probs = predict(unwrap(run.model), run.batches("val", keep=True), lc.spec, *_precision(run))
            metrics = {f"val_{k}": v for k, v in compute_metrics(labels, probs).items()}
            if not was_held and run.holding("train"):
                say(f"[{lc.name}] training split held in memory ({run.held['train'].size / MB:.0f} MB, "
                    f"train.in_memory_mb={t.in_memory_mb:g}): later epochs read no files")  # fmt: skip
        metrics = _broadcast(metrics)
        rss = _gather(peak_rss_mb())  # a collective: every rank calls it
        metrics.update(
            {
                "epoch": epoch + 1,
                "train_loss": total / max(seen, 1),
                "samples_per_s": seen * run.world / max(train_time, 1e-9),
                "peak_rss_mb": max(rss),  # the largest worker's peak resident memory so far
                # per CPU-second of this worker process (all its threads): unlike samples/s,
                # not lowered by other jobs on the machine
                "samples_per_cpu_s": seen / max(train_cpu, 1e-9),
                "torch_threads": float(torch.get_num_threads()),  # this worker's; a core share changes it
            }
        )
        value = metrics.get(f"val_{monitor}", math.nan)
        if is_better(value, state["best"], mode):
            state["best"], state["best_epoch"] = value, epoch + 1
            run.best_state = copy.deepcopy(_cpu(run.model))
            state["best_val"] = {k: v for k, v in metrics.items() if k.startswith("val_")}
        best = state["best"]
        metrics["best_" + monitor] = best if best is not None else math.nan
        state["epoch"] = epoch + 1
        state["history"].append(dict(metrics))
        state["stopped"] = state["best_epoch"] > 0 and epoch + 1 - state["best_epoch"] >= t.patience
        with tempfile.TemporaryDirectory() as tmp:
            ray.train.report(metrics, checkpoint=run.checkpoint(tmp) if run.rank == 0 else None)
        if run.rank == 0:
            say(
                f"[{lc.name}] epoch {epoch + 1}/{t.epochs} loss {metrics['train_loss']:.4f} "
                f"val {monitor} {value:.4f} (best {metrics['best_' + monitor]:.4f} @ {state['best_epoch']}) "
                f"{metrics['samples_per_s']:.0f} samples/s"
            )
            if log_epoch is not None:
                log_epoch(metrics, epoch + 1)
        if state["stopped"] and run.rank == 0:
            say(f"[{lc.name}] early stop: no {monitor} gain for {t.patience} epochs")


def _precision(run: WorkerRun) -> tuple[str, bool]:
    return run.settings.precision, run.settings.channels_last


def evaluate(run: WorkerRun) -> dict[str, Any]:
    """Rank 0: load the best weights (the last ones if the monitored metric was never
    defined) and score the test split and every extra test set."""
    lc = run.lc
    if run.best_state is None:
        run.best_state = _cpu(run.model)
    model = unwrap(run.model)
    model.load_state_dict(run.best_state)
    labels, probs = predict(model, run.batches("test"), lc.spec, *_precision(run))
    test = compute_metrics(labels, probs)
    settings = settings_of(config_from_dict(lc.experiment)) if lc.assess_test_sets else None
    assessed: dict[str, float] = {}  # kept out of the group means: a mean of interval ends is no interval
    for name in lc.test_sets:
        predicted = predict(model, run.batches(name), lc.spec, *_precision(run))
        test.update(prefixed_metrics(name.removeprefix("test_"), compute_metrics(*predicted)))
        if settings is not None:
            assessed.update(prefixed_metrics(name.removeprefix("test_"), assess_predictions(*predicted, settings)))
    test.update(group_means(test, [n.removeprefix("test_") for n in lc.test_sets]))
    test.update(assessed)
    return {"test": test, "test_labels": labels, "test_probs": probs}


def train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point: set up or restore, train the epochs, evaluate the best weights.

    Validation and test run on rank 0 over the whole (unsplit) split, so metrics are exact;
    the training split is sharded across workers. The final report carries the best weights
    as a checkpoint (``model.pt``); rank 0 returns the test metrics and test-set
    probabilities.
    """
    import ray
    import ray.train

    console.quiet(not config["loop"].verbose)
    run = setup(config["loop"])
    run_epochs(run)
    nodes = _gather(ray.get_runtime_context().get_node_id())
    result = evaluate(run) if run.rank == 0 else {}
    final = {**(run.state["history"][-1] if run.state["history"] else {}), "final": 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        ray.train.report(final, checkpoint=run.checkpoint(tmp) if run.rank == 0 else None)
    if run.rank != 0:
        return None
    return {
        **result,
        "val": run.state["best_val"],
        "best_epoch": run.state["best_epoch"],
        "epochs_run": run.state["epoch"],
        "history": run.state["history"],
        "worker_nodes": nodes,
    }
