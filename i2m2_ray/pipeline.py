"""The experiment pipeline: fit components concurrently, fine-tune products, compare.

Stage 1 fits ``unimodal_<m>`` for every modality and ``inter`` at the same time, each its
own Ray Train run. Stage 2 trains ``intra`` and ``i2m2`` (from the stage-1 checkpoints, or
from scratch). Every model is evaluated on the test split; results go to ``summary.json``
and to MLflow (a parent run, a child run per model).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2m2_ray import tracking
from i2m2_ray.config import ExperimentConfig
from i2m2_ray.data.base import PreparedData
from i2m2_ray.spec import INTER, PRODUCTS, component_paradigm
from i2m2_ray.training.launch import FitRequest, FitResult, fit
from i2m2_ray.training.loop import LoopConfig
from i2m2_ray.training.metrics import class_weights

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    summary: dict[str, dict[str, float]]
    output_dir: Path
    tracking_uri: str
    parent_run_id: str


def models_to_fit(cfg: ExperimentConfig, prepared: PreparedData) -> tuple[list[str], list[str]]:
    """(stage-1 components, stage-2 products) asked for by ``run.paradigms``; components that
    a product initialises from are fitted even if not asked for."""
    spec = prepared.spec
    wanted = set(cfg.run.paradigms)
    products = [p for p in PRODUCTS if p in wanted]
    components = [
        p
        for p in spec.paradigms()
        if p not in PRODUCTS
        and (("unimodal" in wanted and p.startswith("unimodal_")) or (p == INTER and INTER in wanted))
    ]
    if cfg.product.init == "components":
        for product in products:
            for expert in spec.components(product):
                name = component_paradigm(expert)
                if name not in components:
                    components.append(name)
    return components, products


def _fit_remote() -> Any:
    import ray

    # The fit driver only waits on its trainer: it holds no CPU, so it never starves the
    # training workers or the data pipeline.
    return ray.remote(num_cpus=0, max_retries=0)(fit)


def comparison_table(summary: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per model, the given metric columns and wall time."""
    header = ["model", *columns, "wall_s"]
    rows = [header]
    for name, m in summary.items():
        rows.append([name, *[f"{m.get(c, float('nan')):.4f}" for c in columns], f"{m.get('wall_seconds', 0):.0f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Pipeline:
    """Runs the two stages for one prepared dataset and records everything."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        prepared: PreparedData,
        output_dir: str | Path,
        tracking_uri: str | None = None,
        storage_path: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.data = prepared
        self.out = Path(output_dir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.uri = tracking_uri or tracking.default_tracking_uri(self.out)
        self.storage = storage_path or str(self.out / "ray_results")
        self.weights = class_weights(prepared.class_counts)

    def _request(self, paradigm: str, stage: str, run_id: str, init: dict[str, str]) -> FitRequest:
        cfg = self.cfg
        loop = LoopConfig(
            name=paradigm,
            paradigm=paradigm,
            spec=self.data.spec,
            encoders=self.data.encoders,
            experiment=cfg.to_dict(),
            stage=stage,
            class_weights=self.weights,
            init_checkpoints=init,
            freeze=list(cfg.product.freeze) if stage == "products" else [],
            tracking_uri=self.uri,
            run_id=run_id,
            product_weights=dict(cfg.product.weights),
        )
        return FitRequest(
            loop=loop,
            datasets=self.data.datasets,
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            cpus_per_worker=cfg.run.cpus_per_worker,
            placement_strategy=cfg.run.placement_strategy,
            storage_path=self.storage,
            checkpoint_path=str(self.out / "checkpoints" / f"{paradigm}.pt"),
        )

    def _record(self, run_id: str, res: FitResult) -> None:
        from i2m2_ray.plots import roc_figure

        tracking.log_metrics(self.uri, run_id, {f"test_{k}": v for k, v in res.test.items()})
        tracking.log_metrics(
            self.uri,
            run_id,
            {"wall_seconds": res.wall_seconds, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run},
        )
        tracking.log_artifact(self.uri, run_id, res.checkpoint, "checkpoint")
        fig = roc_figure(
            res.test_labels, res.test_probs, f"{res.name}: test ROC", self.out / "plots" / f"roc_{res.name}.png"
        )
        tracking.log_artifact(self.uri, run_id, fig, "plots")

    def _stage(
        self, stage: str, names: list[str], exp_id: str, parent: str, init_for: dict[str, dict[str, str]]
    ) -> dict[str, FitResult]:
        """Fit ``names`` concurrently; every child run ends FINISHED or FAILED."""
        import ray

        remote = _fit_remote()
        runs: dict[str, str] = {}
        pending: dict[Any, str] = {}
        for name in names:
            runs[name] = tracking.start_run(
                self.uri,
                exp_id,
                name,
                tags={"dataset": self.cfg.experiment, "paradigm": name, "stage": stage},
                params={**self.cfg.to_dict(), "paradigm": name, "init": init_for.get(name, {})},
                parent_run_id=parent,
            )
            pending[remote.remote(self._request(name, stage, runs[name], init_for.get(name, {})))] = name
        results: dict[str, FitResult] = {}
        errors: list[str] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(done[0])
            try:
                res = ray.get(done[0])
                self._record(runs[name], res)
                tracking.end_run(self.uri, runs[name], "FINISHED")
                results[name] = res
            except Exception as exc:
                tracking.end_run(self.uri, runs[name], "FAILED")
                errors.append(f"{name}: {exc}")
        if errors:
            raise RuntimeError(f"stage '{stage}' failed: " + "; ".join(errors))
        return results

    def run(self) -> PipelineResult:
        cfg = self.cfg
        exp_id = tracking.get_experiment_id(self.uri, cfg.experiment, self.out / "mlartifacts")
        parent = tracking.start_run(
            self.uri,
            exp_id,
            f"{cfg.experiment}-seed{cfg.run.seed}",
            tags={"dataset": cfg.experiment, "stage": "pipeline"},
            params={**cfg.to_dict(), "data_info": self.data.info, "sizes": self.data.sizes},
        )
        t0 = time.perf_counter()
        try:
            components, products = models_to_fit(cfg, self.data)
            print(f"stage 1: fitting {components} concurrently", flush=True)
            results = self._stage("components", components, exp_id, parent, {})
            init_for: dict[str, dict[str, str]] = {}
            if cfg.product.init == "components":
                for p in products:
                    init_for[p] = {e: results[component_paradigm(e)].checkpoint for e in self.data.spec.components(p)}
            if products:
                print(f"stage 2: training {products} ({cfg.product.init} init)", flush=True)
                results.update(self._stage("products", products, exp_id, parent, init_for))
            order = [p for p in self.data.spec.paradigms() if p in results]
            summary = {
                n: {
                    **results[n].test,
                    "wall_seconds": results[n].wall_seconds,
                    "best_epoch": float(results[n].best_epoch),
                    "num_nodes": float(len(set(results[n].worker_nodes))),
                }
                for n in order
            }
            summary_path = self.out / "summary.json"
            summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True))
            for n, m in summary.items():
                tracking.log_metrics(self.uri, parent, {f"{n}.{k}": v for k, v in m.items()})
            tracking.log_metrics(self.uri, parent, {"pipeline_wall_seconds": time.perf_counter() - t0})
            tracking.log_artifact(self.uri, parent, summary_path)
            tracking.end_run(self.uri, parent, "FINISHED")
        except BaseException:
            tracking.end_run(self.uri, parent, "FAILED")
            raise
        return PipelineResult(summary, self.out, self.uri, parent)
