"""ASHA + Optuna (TPE) against a grid of the same size, on the generated fastMRI sample.

Both arms search the same parameters of an I2M2 product trained from scratch (learning
rate, backbone width, inter-expert fusion), with the same number of trials, epochs per
trial, seed, data and placement; the grid runs every trial to its last epoch. Reported per
arm: the best validation AUROC (mean over the four labels) reached, the test AUROC of that
trial, the training epochs spent in all, and the wall time.

    python benchmarks/search_vs_grid.py                       # 8 trials per arm, 6 epochs each
    python benchmarks/search_vs_grid.py --epochs 4 --max-concurrent 2 --output-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

# the searched parameters, and the grid over the same ranges (2 x 2 x 2 = 8 points)
SPACE: dict[str, Any] = {
    "product.lr": {"low": 3.0e-4, "high": 3.0e-2, "log": True},
    "model.width": {"choices": [4, 8]},
    "model.inter_fusion": {"choices": ["early", "concat"]},
}
GRID: dict[str, list[Any]] = {
    "product.lr": [1.0e-3, 1.0e-2],
    "model.width": [4, 8],
    "model.inter_fusion": ["early", "concat"],
}


def main() -> None:
    from i2m2_ray import tuning
    from i2m2_ray.config import load_config
    from i2m2_ray.data import get_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="epochs per trial (product.epochs)")
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=str(REPO / "outputs" / "benchmarks" / "search_vs_grid"))
    p.add_argument(
        "--arms", nargs="+", default=["optuna-asha", "grid"], choices=["optuna-asha", "grid"], help="arms to run"
    )
    args = p.parse_args()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    space_file = out / "space.yaml"
    overrides = [f"product.epochs={args.epochs}", "product.init=scratch", f"run.seed={args.seed}"]
    space_file.write_text(
        yaml.safe_dump(
            {
                "experiment": "fastmri",
                "base_config": str(REPO / "configs" / "fastmri_demo.yaml"),
                "overrides": overrides,
                "asha": {"grace_period": 1, "reduction_factor": 2},
                "params": SPACE,
            },
            sort_keys=False,
        )
    )
    search = tuning.load_search_file(space_file)
    assert search.base_config is not None
    base = load_config(search.base_config, search.overrides)
    trials = 1
    for values in GRID.values():
        trials *= len(values)

    import ray

    from i2m2_ray.cli.session import init_ray

    init_ray(None, base, concurrent_models=args.max_concurrent)
    results_file = out / "results.json"
    # arms run earlier into the same folder are kept (e.g. rerunning one arm)
    report: dict[str, dict[str, Any]] = json.loads(results_file.read_text()) if results_file.is_file() else {}
    try:
        prepared = get_dataset("fastmri").load(base, out)  # base.data.data_dir is None: the sample
        print(f"data: {prepared.sizes} samples", flush=True)
        for strategy in args.arms:
            name = f"bench-{strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
            opts = tuning.SweepOptions(
                experiment="fastmri",
                search=search,
                base=base,
                output_dir=out,
                trials=trials,
                max_concurrent=args.max_concurrent,
                name=name,
                strategy=strategy,
                grid=GRID if strategy == "grid" else {},
            )
            t0 = time.perf_counter()
            result = tuning.run_sweep(opts, prepared)
            wall = time.perf_counter() - t0
            best = result.best
            report[strategy] = {
                "trials": len(result.rows),
                "completed": sum(r.status == "completed" for r in result.rows),
                "stopped_early": sum(r.status == "stopped" for r in result.rows),
                "best_val_auroc_mean": best.score if best else float("nan"),
                "best_test_auroc_mean": best.test.get("auroc_mean", float("nan")) if best else float("nan"),
                "best_params": best.raw if best else {},
                "total_epochs": result.total_epochs,
                "wall_seconds": wall,
                "sweep": name,
            }
            print(json.dumps({strategy: report[strategy]}, indent=2), flush=True)
            results_file.write_text(json.dumps(report, indent=2))
    finally:
        ray.shutdown()
    print("\n| arm | trials | stopped early | best val AUROC | its test AUROC | epochs spent | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arm, r in report.items():
        print(
            f"| {arm} | {r['trials']} | {r['stopped_early']} | {r['best_val_auroc_mean']:.4f} | "
            f"{r['best_test_auroc_mean']:.4f} | {r['total_epochs']} | {r['wall_seconds']:.0f} |"
        )
    print(f"\nresults: {results_file}")


if __name__ == "__main__":
    main()
