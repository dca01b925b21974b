"""Fit what a run asks of Ray to what the cluster has, before anything waits on it.

A Ray Train run whose workers ask for resources the cluster never has does not fail: it
waits forever. So every pipeline and sweep plans its placement first (pure arithmetic, no
Ray here) against the cluster's CPUs and GPUs:

* **GPUs.** ``run.use_gpu`` with no GPU in the cluster: training goes to the CPUs; more
  workers than GPUs: as many workers as GPUs.
* **CPUs.** One model asks ``num_workers x cpus_per_worker`` CPUs; ``reserve`` CPUs (one by
  default) stay free for Ray Data, which reads and preprocesses the batches, so training
  never starves its own input. A model that asks more than the rest: first fewer CPUs per
  worker (not below one), then fewer workers.
* **Models at once.** The components of stage 1 (or the trials of a sweep) fit
  concurrently as far as the CPUs (and GPUs) allow; the others queue behind them.

A value the user set explicitly (on the command line: ``--use-gpu``, ``--num-workers``,
``--set run.cpus_per_worker=...``) is never changed: a run that cannot fit it stops at once
with a :class:`PlacementError` naming the key, what was asked and what the cluster has.
A value that came from a config file is scaled, and every change is said in one line.

**A local Ray** (started by the scripts) is planned twice: first against the machine (its
cores and GPUs), which scales what one model asks, then it is started with
:func:`local_cpus` logical CPUs, enough for every model that would like to train at once
plus the reserve, so on a small machine the stage-1 fits still run side by side (their
workers time-share the cores; each worker's torch threads are capped at its CPUs).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from i2m2_ray.config import ConfigError

if TYPE_CHECKING:
    from i2m2_ray.config import ExperimentConfig

GPU_KEY = "run.use_gpu"
WORKERS_KEY = "run.num_workers"
CPUS_KEY = "run.cpus_per_worker"


class PlacementError(ConfigError):
    """A run asks for more than the cluster has, in a value the user set; the message names
    the key, the ask and what exists."""


class ResourceTimeoutError(PlacementError):
    """A wait for cluster resources outlasted ``run.resource_timeout_s``; the message names
    what was waited for and what to change."""


@dataclass(frozen=True)
class Cluster:
    """What the cluster has: logical CPUs and GPUs per alive node."""

    nodes: tuple[tuple[float, float], ...]  # (CPUs, GPUs) of each node

    @property
    def cpus(self) -> float:
        return sum(c for c, _ in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(g for _, g in self.nodes)

    @property
    def largest_node_cpus(self) -> float:
        return max((c for c, _ in self.nodes), default=0.0)

    def describe(self) -> str:
        n = len(self.nodes)
        return f"{self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) on {n} node{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class Ask:
    """What one model's training asks: workers, CPUs per worker, a GPU per worker or not."""

    num_workers: int
    cpus_per_worker: float
    use_gpu: bool

    @property
    def cpus(self) -> float:
        return self.num_workers * self.cpus_per_worker


@dataclass(frozen=True)
class Placement:
    """The placement a run gets: its (possibly scaled) ask, how many models train at once,
    and one line per change made."""

    ask: Ask
    models_at_once: int
    changes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One line for logs and the MLflow ``placement`` param: the changes made (or that
        the config was kept) and the models trained at once."""
        what = "; ".join(self.changes) if self.changes else "as configured"
        return f"{what}; up to {self.models_at_once} model(s) at once"

    def apply(self, cfg: ExperimentConfig) -> None:
        """Write the (scaled) ask into ``cfg.run``: what the config records is what runs."""
        cfg.run.num_workers = self.ask.num_workers
        cfg.run.cpus_per_worker = self.ask.cpus_per_worker
        cfg.run.use_gpu = self.ask.use_gpu


def ask_of(cfg: ExperimentConfig) -> Ask:
    """One model's ask, from ``cfg.run``."""
    return Ask(cfg.run.num_workers, float(cfg.run.cpus_per_worker), cfg.run.use_gpu)


def plan(
    asked: Ask,
    cluster: Cluster,
    explicit: Collection[str] = (),
    concurrent: int = 1,
    reserve: float = 1.0,
) -> Placement:
    """Scale ``asked`` to ``cluster`` (see the module docstring for the rule).

    Args:
        asked: one model's ask, from ``run.*``.
        cluster: what exists.
        explicit: the ``run.*`` keys the user set on the command line (never changed).
        concurrent: models that would like to train at once (stage 1: the modalities' experts
            and the inter expert; a sweep: its concurrent trials).
        reserve: CPUs kept free for Ray Data.

    Raises:
        PlacementError: an explicit value cannot fit; or the cluster has no CPU to train on.
    """
    changes: list[str] = []
    workers, cpw, gpu = asked.num_workers, asked.cpus_per_worker, asked.use_gpu
    budget = cluster.cpus - reserve
    if budget < min(1.0, cpw):
        raise PlacementError(
            f"the cluster has {cluster.describe()}: nothing is left for training once {reserve:g} CPU is "
            "kept for Ray Data's reading and preprocessing; start Ray with more CPUs"
        )
    if gpu and cluster.gpus < 1:
        if GPU_KEY in explicit:
            raise PlacementError(
                f"{GPU_KEY}=true asks for a GPU per worker, but the cluster has {cluster.describe()}; "
                "train on CPUs with --no-use-gpu (--set run.use_gpu=false), or join a cluster with GPUs"
            )
        gpu = False
        changes.append(f"{GPU_KEY}: true -> false (the cluster has no GPU)")
    if gpu and workers > cluster.gpus:
        if WORKERS_KEY in explicit:
            raise PlacementError(
                f"{WORKERS_KEY}={workers} with {GPU_KEY}=true asks for {workers} GPUs, but the cluster has "
                f"{cluster.describe()}; pass --num-workers {int(cluster.gpus)} or fewer"
            )
        changes.append(f"{WORKERS_KEY}: {workers} -> {int(cluster.gpus)} (one per GPU)")
        workers = int(cluster.gpus)
    node_cap = cluster.largest_node_cpus - (reserve if len(cluster.nodes) == 1 else 0.0)
    if cpw > node_cap:  # a worker's CPUs must fit on one node
        if CPUS_KEY in explicit:
            raise PlacementError(
                f"{CPUS_KEY}={cpw:g} asks for {cpw:g} CPUs on one node, but the largest node has "
                f"{cluster.largest_node_cpus:g} ({cluster.describe()}; {reserve:g} kept for Ray Data); "
                f"pass --set {CPUS_KEY}={max(node_cap, 1.0):g} or less"
            )
        new = max(1.0, math.floor(node_cap)) if node_cap >= 1 else node_cap
        changes.append(f"{CPUS_KEY}: {cpw:g} -> {new:g} (the largest node's CPUs, less {reserve:g} for Ray Data)")
        cpw = new
    if workers * cpw > budget and CPUS_KEY not in explicit and cpw > 1.0:
        new = max(1.0, math.floor(budget / workers))
        if new < cpw:
            changes.append(f"{CPUS_KEY}: {cpw:g} -> {new:g} ({budget:g} CPUs for training)")
            cpw = new
    if workers * cpw > budget:
        fits = int(budget // cpw)
        if WORKERS_KEY in explicit or fits < 1:
            key = WORKERS_KEY if fits >= 1 else CPUS_KEY
            hint = f"--num-workers {fits}" if fits >= 1 else f"--set {CPUS_KEY}={budget:g}"
            raise PlacementError(
                f"{WORKERS_KEY}={workers} x {CPUS_KEY}={cpw:g} asks for {workers * cpw:g} CPUs, but only "
                f"{budget:g} of {cluster.describe()} can train ({reserve:g} kept for Ray Data): "
                f"change {key}, e.g. {hint} or less"
            )
        changes.append(f"{WORKERS_KEY}: {workers} -> {fits} ({budget:g} CPUs for training)")
        workers = fits
    final = Ask(workers, cpw, gpu)
    at_once = max(1, min(concurrent, int(budget // final.cpus) if final.cpus > 0 else concurrent))
    if gpu:
        at_once = max(1, min(at_once, int(cluster.gpus // workers)))
    return Placement(final, at_once, tuple(changes))


def local_cpus(ask: Ask, concurrent: int, machine_cpus: int, reserve: float = 1.0) -> int:
    """Logical CPUs for a local Ray that runs ``concurrent`` models of ``ask`` at once with
    ``reserve`` CPUs left for Ray Data: at least the machine's cores, more on a small
    machine (the models then time-share the cores rather than queue)."""
    return max(machine_cpus, math.ceil(concurrent * ask.cpus + reserve))


# a node type with no upper bound on its count is planned as this many nodes
UNBOUNDED_NODES = 1024


def cluster_of_node_types(node_types: Sequence[tuple[float, float, int]]) -> Cluster:
    """The largest cluster an autoscaler may build: ``(CPUs, GPUs, max count)`` per node
    type (count -1: unbounded, planned as :data:`UNBOUNDED_NODES`)."""
    nodes: list[tuple[float, float]] = []
    for cpus, gpus, count in node_types:
        n = UNBOUNDED_NODES if count < 0 else count
        nodes += [(float(cpus), float(gpus))] * min(n, UNBOUNDED_NODES)
    return Cluster(tuple(nodes))


def cluster_of(nodes: Sequence[dict[str, object]]) -> Cluster:
    """A :class:`Cluster` from ``ray.nodes()`` (alive nodes' ``Resources``)."""
    out = []
    for n in nodes:
        if not n.get("Alive", True):
            continue
        res = n.get("Resources") or {}
        assert isinstance(res, dict)
        out.append((float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))))
    return Cluster(tuple(out))


def explicit_keys(overrides: Sequence[str]) -> set[str]:
    """The ``run.*`` keys set by command-line overrides (``run.num_workers=4`` ...) or by
    whole-section overrides (``run={...}``)."""
    keys: set[str] = set()
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key == "run":
            keys.update((GPU_KEY, WORKERS_KEY, CPUS_KEY))
        elif key.startswith("run."):
            keys.add(key)
    return keys
