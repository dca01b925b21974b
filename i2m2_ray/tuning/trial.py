"""The trial driver: what one Ray Tune trial runs.

A trial trains the product (I2M2 when the inter expert is in it, else the intra product) for
``product.epochs`` epochs at ``product.lr`` with the one training loop
(:func:`i2m2_ray.training.launch.fit`). With ``product.init: components`` it starts from
unimodal and inter experts fitted once before the sweep (with the base config) and shared by
all trials; the backbone then is the base one, so backbone parameters should be searched
under ``when: {product.init: scratch}``. Every epoch's validation metrics reach Tune; ASHA
stops the trials that fall behind at its rungs.

Ray Tune and torch are imported by the trial itself, not by this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i2m2_ray.config import ExperimentConfig
from i2m2_ray.spec import component_paradigm
from i2m2_ray.tuning.space import TrialRecipe

if TYPE_CHECKING:
    from i2m2_ray.data.base import PreparedData

# Tune trials only wait on their trainer: they ask for a token amount of memory, no CPU,
# so the training workers and the data pipeline get every CPU.
TRIAL_DRIVER_RESOURCES: dict[str, float] = {"memory": float(64 * 1024**2)}


@dataclass
class SweepContext:
    """What every trial needs besides its sample (sent once through the object store)."""

    experiment: str
    recipe: TrialRecipe
    prepared: PreparedData
    data_dir: str | None
    annotations: str | None
    work_dir: str
    components: dict[str, str]  # component paradigm -> checkpoint file
    train_storage: str


def load_data(experiment: str, cfg: ExperimentConfig, work: Path) -> PreparedData:
    """The dataset's data for ``cfg`` (its paths in ``cfg.data``; the one place trials read data)."""
    from i2m2_ray.data import get_dataset

    return get_dataset(experiment).load(cfg, work)


def trial_data(ctx: SweepContext, cfg: ExperimentConfig) -> PreparedData:
    """The sweep's data, or, for a trial that searches data keys (e.g. the crop), its own,
    prepared once per distinct data section under a file lock."""
    import fcntl

    if dataclasses.asdict(cfg.data) == ctx.recipe.base["data"]:
        return ctx.prepared
    key = hashlib.sha1(json.dumps(dataclasses.asdict(cfg.data), sort_keys=True).encode()).hexdigest()[:12]
    work = Path(ctx.work_dir) / "data" / key
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a generated sample is written by one trial only
        return load_data(ctx.experiment, cfg, work)


def run_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """Tune function trainable: one trial = one Ray Train fit of the sampled product.

    Each epoch's metrics reach Tune through ``TuneReportCallback`` (so ASHA can stop the
    trial); a trial that runs to its end reports once more: the best epoch's validation
    metrics, the test metrics (``test_*``) and the best weights as its checkpoint.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from i2m2_ray.training.launch import FitRequest, fit

    trial_id = tune.get_context().get_trial_id()
    plan = ctx.recipe.plan(config)
    cfg = plan.config
    prepared = trial_data(ctx, cfg)
    init: dict[str, str] = {}
    if cfg.product.init == "components":
        init = {e: ctx.components[component_paradigm(e)] for e in prepared.spec.components(plan.paradigm)}
    name = f"trial_{trial_id}"
    monitor = cfg.train.monitor
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(
            FitRequest.from_config(
                cfg,
                prepared,
                plan.paradigm,
                storage_path=ctx.train_storage,
                checkpoint_path=os.path.join(tmp, "model.pt"),
                name=name,
                # the same name after a sweep restart: Train resumes from the last epoch
                run_name=name,
                init_checkpoints=init,
                callbacks=[TuneReportCallback()],
            )
        )
        best = float(res.val.get(f"val_{monitor}", math.nan))
        final: dict[str, Any] = {
            **res.val,
            f"val_{monitor}": best,
            f"best_{monitor}": best,
            "epoch": res.epochs_run,
            "best_epoch": res.best_epoch,
            "wall_seconds": res.wall_seconds,
            "completed": 1,
            **{f"test_{k}": v for k, v in res.test.items()},
        }
        wait_for_relayed_reports()
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


# Ray 2.60 relays Train's epoch reports to Tune (``TuneReportCallback`` puts them on an
# inter-actor queue) from the trial actor's main thread, onto the one-slot result queue that
# ``tune.report`` in this thread fills too. An epoch report still waiting to be relayed when
# this thread reports makes both threads wait on that slot for ever: the trial stays RUNNING
# with no workers and the sweep never ends (seen in the test suite's AV-MNIST sweep on 2
# cores). The final report therefore waits, within a bound, until both queues have stayed
# empty for a while.
RELAY_WAIT_S = 120.0
RELAY_QUIET_S = 1.0


def wait_for_relayed_reports(timeout_s: float = RELAY_WAIT_S, quiet_s: float = RELAY_QUIET_S) -> None:
    """Return once every epoch report of the trial's fit has been relayed to Tune and taken
    (the relay queue and the result queue both empty for ``quiet_s``); raise ``TimeoutError``
    after ``timeout_s`` rather than report into a deadlock."""
    import time

    from ray.train._internal.session import get_session

    session = get_session()
    relay = getattr(session, "_inter_actor_queue", None)  # None: no Train report was ever relayed
    results = getattr(session, "result_queue", None)
    if relay is None or results is None:
        return
    start = time.monotonic()
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if not (relay.empty() and results.empty()):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return
        if now - start > timeout_s:
            raise TimeoutError(
                f"the trial's epoch reports were not relayed to Ray Tune within {timeout_s:.0f} s "
                f"(relay queue empty: {relay.empty()}, result queue empty: {results.empty()}); "
                "the final report is not sent, so that the trial fails instead of hanging"
            )
        time.sleep(0.05)


def trial_dirname(trial: Any) -> str:
    """Short, stable trial folder names (the default packs every parameter into the name)."""
    return f"trial_{trial.trial_id}"
