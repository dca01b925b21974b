"""Launch models' training as Ray Train ``TorchTrainer`` runs (DDP over the workers): one
request per model, built from the config in one place, fitted alone or several at once.

Failures are of three kinds. An error that will recur (bad data: :class:`DataError`, raised
in a Ray Data transform or in the training loop; a bad config; an unreadable checkpoint)
fails the fit at once, without a restart, and reaches the caller as that error with its
original text. A lost worker (or node) restarts the worker group from the last epoch
checkpoint, ``run.max_failures`` times. A wait for resources (the worker group's placement
group) lasts at most ``run.resource_timeout_s`` and then fails with a
:class:`~i2m2_ray.placement.ResourceTimeoutError` naming what was waited for.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from i2m2_ray import console
from i2m2_ray.config import ConfigError
from i2m2_ray.data.base import DataError
from i2m2_ray.files import StateFileError, atomic_savez, atomic_write_json, read_json
from i2m2_ray.models.registry import check_model
from i2m2_ray.placement import PlacementError, ResourceTimeoutError
from i2m2_ray.spec import is_product
from i2m2_ray.training.checkpoint import MODEL_FILE, CheckpointError, load_checkpoint, save_checkpoint
from i2m2_ray.training.metrics import class_weights
from i2m2_ray.training.worker import LoopConfig, train_loop

if TYPE_CHECKING:
    from i2m2_ray.config import ExperimentConfig
    from i2m2_ray.data.base import PreparedData
    from i2m2_ray.training.cores import CoreShare


@dataclass
class FitRequest:
    """One model to fit: its loop config, data, placement and where results go."""

    loop: LoopConfig
    datasets: dict[str, Any]  # name -> ray.data.Dataset
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    placement_strategy: str
    storage_path: str
    checkpoint_path: str
    run_name: str | None = None  # Ray Train run name (default: the model name); same name resumes
    max_failures: int = 0  # worker failures tolerated; each restarts from the last epoch checkpoint
    callbacks: list[Any] = field(default_factory=list)  # extra Ray Train RunConfig callbacks
    resource_timeout_s: float = 600.0  # the longest the worker group may wait for its resources

    @classmethod
    def from_config(
        cls,
        cfg: ExperimentConfig,
        prepared: PreparedData,
        paradigm: str,
        *,
        storage_path: str,
        checkpoint_path: str | Path,
        name: str | None = None,
        run_name: str | None = None,
        init_checkpoints: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        callbacks: Sequence[Any] = (),
        assess_test_sets: bool = False,
    ) -> FitRequest:
        """The request for model ``paradigm`` (``unimodal_<m>``, ``inter``, ``intra``,
        ``i2m2``) of ``cfg`` on ``prepared``: placement from ``run.*``; a product gets
        ``product.freeze``, ``product.weights`` and its experts' ``init_checkpoints``.
        ``assess_test_sets``: the extra test sets also get calibration and intervals
        (``evaluation.*``), computed on the worker.

        Raises:
            ConfigError: ``cfg.model`` cannot build this model's encoders for the data's
                inputs (checked here, before any Ray Train work).
        """
        check_model(cfg, prepared.spec, prepared.info, [paradigm])
        product = is_product(paradigm)
        loop = LoopConfig(
            name=name or paradigm,
            paradigm=paradigm,
            spec=prepared.spec,
            input_facts=dict(prepared.info),
            experiment=cfg.to_dict(),
            class_weights=class_weights(prepared.class_counts),
            init_checkpoints=dict(init_checkpoints or {}),
            freeze=list(cfg.product.freeze) if product else [],
            tracking_uri=tracking_uri,
            run_id=run_id,
            product_weights=dict(cfg.product.weights) if product else {},
            test_sets=sorted(k for k in prepared.datasets if k.startswith("test_")),
            assess_test_sets=assess_test_sets,
            train_size=prepared.sizes.get("train", 0),
            verbose=console.verbose(),
        )
        return cls(
            loop=loop,
            datasets=prepared.datasets,
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            cpus_per_worker=cfg.run.cpus_per_worker,
            placement_strategy=cfg.run.placement_strategy,
            storage_path=storage_path,
            checkpoint_path=str(checkpoint_path),
            run_name=run_name,
            max_failures=cfg.run.max_failures,
            callbacks=list(callbacks),
            resource_timeout_s=cfg.run.resource_timeout_s,
        )


@dataclass
class FitResult:
    name: str
    paradigm: str
    test: dict[str, float]
    val: dict[str, float]
    best_epoch: int
    epochs_run: int
    worker_nodes: list[str]
    wall_seconds: float
    checkpoint: str
    test_labels: dict[str, np.ndarray] = field(default_factory=dict)
    test_probs: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, folder: str | Path) -> Path:
        """Write ``<name>.json`` (metrics, history) and ``<name>_test.npz`` (test labels and
        probabilities) to ``folder``, each atomically: enough to report or upload the result
        later. The checkpoint path is kept relative to ``folder``'s parent (the output
        folder) when it lies there, so that a moved output folder still resumes."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(self).items() if k not in ("test_labels", "test_probs")}
        meta["checkpoint"] = _relative_to(self.checkpoint, out.resolve().parent)
        arrays = {f"labels__{h}": v for h, v in self.test_labels.items()}
        arrays.update({f"probs__{h}": v for h, v in self.test_probs.items()})
        atomic_savez(out / f"{self.name}_test.npz", arrays)
        # the json appears last and whole: its presence marks a finished model
        return atomic_write_json(out / f"{self.name}.json", meta)

    @classmethod
    def load(cls, folder: str | Path, name: str) -> FitResult:
        """Read back what :meth:`save` wrote; a damaged file is named
        (:class:`~i2m2_ray.files.StateFileError`)."""
        src = Path(folder)
        remedy = f"delete {src / name}.json and {src / name}_test.npz to fit '{name}' again"
        meta = read_json(src / f"{name}.json", f"the saved result of '{name}'", remedy)
        if not Path(meta.get("checkpoint", "/")).is_absolute():
            meta["checkpoint"] = str(src.resolve().parent / meta["checkpoint"])
        npz = src / f"{name}_test.npz"
        try:
            with np.load(npz, allow_pickle=False) as z:
                labels = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("labels__")}
                probs = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("probs__")}
        except Exception as exc:  # missing, truncated, not an npz
            raise StateFileError(f"{npz}: the test predictions of '{name}' cannot be read ({exc}); {remedy}") from None
        try:
            return cls(**meta, test_labels=labels, test_probs=probs)
        except TypeError as exc:
            raise StateFileError(f"{src / name}.json: not a saved model result ({exc}); {remedy}") from None


def _relative_to(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base))
    except ValueError:
        return path


# Ray Train reads this (in the process that calls ``fit``; it passes it on to its controller):
# how long one start of the worker group waits for its placement group
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
# Ray errors that mean "the resources never came" (matched by name: Ray Train's are internal
# classes): the worker group's placement group, a worker's CPU / GPU on no node type of an
# autoscaler, Ray Data's tasks (no progress for ``execution_no_progress_timeout_s``)
RESOURCE_ERRORS = ("WorkerGroupStartupTimeoutError", "InsufficientClusterResourcesError", "ExecutionTimeoutError")
# errors that will happen again on every retry: never retried, passed on as they are
RECURRING = (DataError, ConfigError, CheckpointError, StateFileError)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: Python's chain, a Ray task error's cause, the worker
    errors of a Ray Train failure and its controller's error (depth first, each once)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        inner = [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, Mapping):
            inner += list(failures.values())
        todo += [i for i in inner if isinstance(i, BaseException)]


def recurring_error(exc: BaseException) -> Exception | None:
    """The error inside ``exc`` that would recur on a retry (bad data, a bad config or a
    placement that cannot fit, an unreadable checkpoint or state file), as its own class
    with its original message; None when there is none."""
    for e in _causes(exc):
        if not isinstance(e, RECURRING):
            continue
        original = getattr(e, "cause", None)  # a Ray task error posing as the class: the original
        if isinstance(original, RECURRING):
            e = original
        # the project's own class (a Ray task error's class derives from it and Ray's)
        cls = next(c for c in type(e).__mro__ if issubclass(c, RECURRING) and c.__module__.startswith("i2m2_ray"))
        return cast(Exception, cls(_original_text(str(e.args[0]) if e.args else str(e))))
    return None


# lines Ray Data appends to a transform's error (about retries, which would fail alike)
_RAY_NOTES = ("Failed to apply UDF transform", "To change retry attempts")


def _original_text(message: str) -> str:
    return "\n".join(line for line in message.splitlines() if not line.startswith(_RAY_NOTES)).strip()


def resource_error(exc: BaseException) -> BaseException | None:
    """Ray Train's "the worker group never got its resources" error inside ``exc``."""
    return next((e for e in _causes(exc) if type(e).__name__ in RESOURCE_ERRORS), None)


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _trainer(req: FitRequest) -> Any:
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ingest = DataConfig.default_ingest_options()
    # the same seed, the same batches: blocks reach the workers in the dataset's order
    ingest.preserve_order = bool(req.loop.experiment.get("run", {}).get("deterministic", True))
    resources: dict[str, Any] = {"CPU": req.cpus_per_worker}
    if req.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        cast(Any, train_loop),
        train_loop_config={"loop": req.loop},
        scaling_config=ScalingConfig(
            num_workers=req.num_workers,
            use_gpu=req.use_gpu,
            resources_per_worker=resources,
            placement_strategy=req.placement_strategy,
        ),
        run_config=RunConfig(
            name=req.run_name or req.loop.name,
            storage_path=req.storage_path,
            # two: a damaged latest checkpoint falls back to the one before (worker.setup)
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Train restarts nothing itself: a start that timed out waited the whole
            # run.resource_timeout_s (START_TIMEOUT_ENV), and worker failures are restarted
            # by fit(), which leaves errors that would recur alone
            failure_config=FailureConfig(max_failures=0, controller_failure_limit=0),  # type: ignore[call-arg]  # Train V2
            # Train logs every report at INFO; the loop prints its own one line per epoch
            logging_config=LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]  # Train V2 RunConfig
            callbacks=list(req.callbacks) or None,
        ),
        datasets=dict(req.datasets),
        # one worker reads the whole split: no streaming-split coordinator needed
        dataset_config=DataConfig(datasets_to_split=["train"] if req.num_workers > 1 else [], execution_options=ingest),
    )


def _timeout_message(req: FitRequest, waited: BaseException) -> str:
    import ray

    have = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    shared = f"the cluster has {have}, shared with every other fit, trial and job"
    if type(waited).__name__ == "ExecutionTimeoutError":
        return (
            f"{req.loop.name}: Ray Data's reading and preprocessing of its batches made no progress for "
            f"run.resource_timeout_s={req.resource_timeout_s:g} s: its tasks found no free CPU ({shared}); "
            "leave a CPU to Ray Data (fewer models at once, lower run.num_workers or run.cpus_per_worker), add "
            "nodes, or raise run.resource_timeout_s"
        )
    each = f"{req.cpus_per_worker:g} CPU" + (" + 1 GPU" if req.use_gpu else "")
    return (
        f"{req.loop.name}: its {req.num_workers} Ray Train worker(s) ({each} each, placement "
        f"{req.placement_strategy}) did not get their resources within run.resource_timeout_s="
        f"{req.resource_timeout_s:g} s ({shared}); lower run.num_workers or run.cpus_per_worker, set "
        "run.use_gpu=false, change run.placement_strategy, add nodes, or raise run.resource_timeout_s"
    )


def _bound_data_waits(datasets: Mapping[str, Any], timeout_s: float) -> None:
    """Ray Data's side of the bound: an execution that makes no progress (its tasks wait for
    a CPU that never frees) fails after ``timeout_s`` (Ray Data skips the check for splits
    with an all-to-all step, e.g. the shuffled training split; the CPU kept free for Ray
    Data by the placement is what prevents the wait there). A transform's error is raised as
    itself, not wrapped, so that its text reaches the driver."""
    for ds in datasets.values():
        ds.context.execution_no_progress_timeout_s = timeout_s
        ds.context.raise_original_map_exception = True


def fit(req: FitRequest) -> FitResult:
    """Run the training loop on ``req.num_workers`` Ray Train workers; the best weights
    (with the config that built them) come back as the run's final checkpoint and are
    written to ``req.checkpoint_path``.

    Raises:
        DataError, ConfigError, CheckpointError: raised in the workers or their data
            pipeline; never retried (they would recur), passed on with their message.
        ResourceTimeoutError: the workers did not get their resources in time.
    """
    # read by Ray Train here and passed on to its controller: one start waits this long
    os.environ[START_TIMEOUT_ENV] = f"{req.resource_timeout_s:g}"
    _bound_data_waits(req.datasets, req.resource_timeout_s)
    restarts = 0
    t0 = time.perf_counter()
    while True:
        try:
            result = _trainer(req).fit()
            if result.error is not None:
                raise result.error
            break
        except Exception as exc:
            recurring = recurring_error(exc)
            if recurring is not None:
                raise recurring from None
            waited = resource_error(exc)
            if waited is not None:
                if type(waited).__name__ == "InsufficientClusterResourcesError":  # can never fit
                    raise PlacementError(f"{req.loop.name}: {waited}") from None
                raise ResourceTimeoutError(_timeout_message(req, waited)) from None
            if restarts >= req.max_failures:
                raise
            restarts += 1
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            _say(
                f"[{req.loop.name}] training failed ({first}); restarting from the last epoch checkpoint "
                f"({restarts}/{req.max_failures}, run.max_failures)"
            )
    wall = time.perf_counter() - t0
    out = cast(Any, result).return_value  # Train V2: rank 0's return value
    if not isinstance(out, dict) or result.checkpoint is None:
        raise RuntimeError(f"{req.loop.name}: training returned no result (error: {result.error})")
    with result.checkpoint.as_directory() as d:
        final = load_checkpoint(os.path.join(d, MODEL_FILE), paradigm=req.loop.paradigm)
    final.pop("resume", None)  # what resuming needed (optimizer state, last weights) stays with Ray
    save_checkpoint(
        req.checkpoint_path,
        final.pop("state_dict"),
        final.pop("paradigm"),
        final.pop("config"),
        req.loop.spec,
        {k: v for k, v in final.items() if k != "spec"},
    )
    return FitResult(
        name=req.loop.name,
        paradigm=req.loop.paradigm,
        test=out["test"],
        val=out["val"],
        best_epoch=out["best_epoch"],
        epochs_run=out["epochs_run"],
        worker_nodes=list(out["worker_nodes"]),
        history=list(out["history"]),
        wall_seconds=wall,
        checkpoint=req.checkpoint_path,
        test_labels=out["test_labels"],
        test_probs=out["test_probs"],
    )


def fit_concurrently(
    requests: Mapping[str, FitRequest], max_in_flight: int | None = None, share: CoreShare | None = None
) -> Iterator[tuple[str, FitResult | Exception]]:
    """Fit the requests, at most ``max_in_flight`` at once (None: all), each in a thread of
    this process; the others queue here, in order, so that fits the cluster cannot hold
    together never wait on each other's resources (:func:`i2m2_ray.placement.plan` sizes the
    bound). Yields ``(key, result)`` in the order they finish, ``result`` being the exception
    when that fit failed (the others go on; a failed fit is reported, not repeated).

    A fit only waits on its trainer's controller, an actor of Ray's: a thread holds no CPU
    of the cluster and costs no process of its own (a Ray task per fit cost each a Python
    process importing torch and Ray Train, ~10 s of CPU on a 2-core machine). The threads
    are daemons: an interrupted driver exits without waiting for them. ``share``: where the
    number of training workers running is kept for the workers (:mod:`i2m2_ray.training.cores`).
    """
    import queue
    import threading

    finished: queue.Queue[tuple[str, FitResult | Exception]] = queue.Queue()

    def run(key: str, req: FitRequest) -> None:
        try:
            finished.put((key, fit(req)))
        except Exception as exc:
            finished.put((key, recurring_error(exc) or exc))

    waiting = list(requests.items())
    limit = len(waiting) if max_in_flight is None else max(1, max_in_flight)
    running: dict[str, int] = {}  # key -> its workers
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                key, req = waiting.pop(0)
                running[key] = req.num_workers
                threading.Thread(target=run, args=(key, req), name=f"fit-{key}", daemon=True).start()
            if share is not None:
                share.set(sum(running.values()))
            key, result = finished.get()
            del running[key]
            if share is not None:
                share.set(sum(running.values()))
            yield key, result
    finally:
        if share is not None:
            share.close()
