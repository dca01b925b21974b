"""ASHA + Optuna (TPE) against a grid of the same size, on the generated fastMRI sample.

Both arms search the same parameters of an I2M2 product trained from scratch (learning
rate, backbone width, inter-expert fusion), with the same number of trials, epochs per
trial, seed, data and placement; the grid runs every trial to its last epoch. Reported per
arm: the best validation AUROC (mean over the four labels) reached, the test AUROC of that
trial, the training epochs spent in all, and the wall time.

    python benchmarks/search_vs_grid.py                       # 8 trials per arm, 6 epochs each
    python benchmarks/search_vs_grid.py --seeds 0 1 2 --arms grid optuna-asha-g1 optuna-asha-g2
    python benchmarks/search_vs_grid.py --arms optuna-asha-b3 optuna-asha-t16   # brackets; more trials
    python benchmarks/search_vs_grid.py --arms optuna-median optuna-sh optuna-hb  # Optuna's own pruners
    python benchmarks/search_vs_grid.py --epochs 4 --max-concurrent 2 --output-dir /tmp/bench

Each (seed, arm) is one sweep; ``results.json`` keys them ``s<seed>/<arm>``. Selection is on
validation only: the test AUROC printed is that of the trial with the best validation AUROC.
Besides the epochs each search spent in all, the summary gives the epochs it had spent when
a trial first reached the grid's best validation AUROC (trials in the order they were
created), each over the grid's epochs; ``--table-only`` prints the tables of the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass
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


# "grid", or "optuna-<stopper>" with optional parts: -g<N> the grace period in epochs
# (default 1), -b<B> ASHA brackets (asynchronous HyperBand, default 1), -t<T> trials (default:
# the grid's). Stoppers: asha (Tune's ASHA), or one of Optuna's own pruners: median
# (MedianPruner), sh (SuccessiveHalvingPruner, Optuna's ASHA), hb (HyperbandPruner).
ARM = re.compile(
    r"grid|optuna-(?P<stopper>asha|median|sh|hb)(?:-g(?P<grace>\d+))?(?:-b(?P<brackets>\d+))?(?:-t(?P<trials>\d+))?"
)


@dataclass(frozen=True)
class Arm:
    name: str
    grace: int = 1
    brackets: int = 1
    trials: int | None = None  # None: as many as the grid has points
    stopper: str = "asha"


def parse_arm(name: str) -> Arm:
    """``optuna-asha-g2-b3-t16`` -> ASHA, grace period 2, 3 brackets, 16 trials."""
    m = ARM.fullmatch(name)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"arm {name!r}: expected grid or optuna-<asha|median|sh|hb>[-g<N>][-b<B>][-t<T>]"
        )
    parts = {k: int(v) for k, v in m.groupdict().items() if v is not None and k != "stopper"}
    stopper = m.group("stopper") or "asha"
    if stopper not in ("asha", "hb") and "brackets" in parts:
        raise argparse.ArgumentTypeError(f"arm {name!r}: -b<B> (brackets) is for asha and hb only")
    return Arm(name, parts.get("grace", 1), parts.get("brackets", 1), parts.get("trials"), stopper)


def stopping(arm: Arm, epochs: int, startup: int) -> dict[str, Any]:
    """The search file's entry that stops trials: ``asha``, or ``optuna_pruner`` with the
    arm's grace period as the pruner's first epoch that may prune (``startup``: the
    completed trials the median waits for, as many as TPE samples at random)."""
    if arm.stopper == "asha":
        return {"asha": {"grace_period": arm.grace, "reduction_factor": 2, "brackets": arm.brackets}}
    pruner: dict[str, Any] = {
        "median": {"name": "median", "n_startup_trials": startup, "n_warmup_steps": arm.grace},
        "sh": {"name": "successive_halving", "min_resource": arm.grace, "reduction_factor": 2},
        "hb": {"name": "hyperband", "min_resource": arm.grace, "max_resource": epochs, "reduction_factor": 2},
    }[arm.stopper]
    return {"optuna_pruner": pruner}


def write_space(out: Path, epochs: int, seed: int, arm: Arm) -> Path:
    """The search file of one arm and seed (an I2M2 product from scratch over SPACE)."""
    stopper = "" if arm.stopper == "asha" else f"_{arm.stopper}"
    path = out / f"space_s{seed}_g{arm.grace}_b{arm.brackets}{stopper}.yaml"
    overrides = [f"product.epochs={epochs}", "product.init=scratch", f"run.seed={seed}"]
    startup = max(2, min(10, (arm.trials or grid_size()) // 4))  # TPE's random trials (tuning.sweep)
    body = {
        "experiment": "fastmri",
        "base_config": str(REPO / "configs" / "fastmri_demo.yaml"),
        "overrides": overrides,
        **stopping(arm, epochs, startup),
        "params": SPACE,
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def grid_size() -> int:
    size = 1
    for values in GRID.values():
        size *= len(values)
    return size


def trial_sequence(out: Path, sweep: str) -> list[tuple[int, float]]:
    """(epochs, best validation value) of each trial of ``sweep``, in the order the trials
    were created (the sweep's Optuna study numbers them so; ``report/ranking.csv`` has the
    values)."""
    import csv

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=sweep, storage=f"sqlite:///{out / 'optuna.db'}")
    with open(out / "search" / sweep / "report" / "ranking.csv", newline="") as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    seq = []
    for t in sorted(study.trials, key=lambda t: t.number):
        r = rows[t.user_attrs["trial_id"]]
        seq.append((int(r["epochs"]), float(r["objective"]) if r["objective"] else float("nan")))
    return seq


def epochs_to_reach(seq: list[tuple[int, float]], target: float) -> int | None:
    """Training epochs spent, trials taken in creation order, up to and including the first
    trial whose best validation value reaches ``target`` (None: none did)."""
    spent = 0
    for epochs, value in seq:
        spent += epochs
        if value >= target:
            return spent
    return None


def summary_lines(report: dict[str, dict[str, Any]], seeds: list[int]) -> list[str]:
    """Per ASHA arm: on how many seeds it reached the grid's best validation AUROC, and its
    epochs against the grid's (the goal: reached on every seed with at most a third)."""
    lines = [
        "",
        "| arm | seeds reaching the grid's best val AUROC | its best val minus the grid's (per seed) | "
        "epochs / grid's epochs (per seed) | epochs until it reached the grid's best / grid's epochs |",
        "| --- | --- | --- | --- | --- |",
    ]
    arms = sorted({k.split("/", 1)[1] for k in report} - {"grid"})
    for arm in arms:
        gaps, ratios, anytime = [], [], []
        for seed in seeds:
            a, g = report.get(f"s{seed}/{arm}"), report.get(f"s{seed}/grid")
            if a and g:
                gaps.append(a["best_val_auroc_mean"] - g["best_val_auroc_mean"])
                ratios.append(a["total_epochs"] / g["total_epochs"])
                reach = a.get("epochs_to_grid_best")
                anytime.append("never" if reach is None else f"{reach / g['total_epochs']:.2f}")
        reached = sum(gap >= 0 for gap in gaps)
        lines.append(
            f"| {arm} | {reached} / {len(gaps)} | {', '.join(f'{x:+.4f}' for x in gaps)} | "
            f"{', '.join(f'{x:.2f}' for x in ratios)} | {', '.join(anytime)} |"
        )
    return lines


def run_arms(args: argparse.Namespace, out: Path, report: dict[str, dict[str, Any]]) -> None:
    """Each seed's arms, one sweep each, on a local Ray; ``report`` (and results.json)
    gets one entry per sweep as it ends."""
    from i2m2_ray import tuning
    from i2m2_ray.config import load_config
    from i2m2_ray.data import get_dataset

    results_file = out / "results.json"
    trials = grid_size()
    import ray

    from i2m2_ray.cli.session import init_ray

    first = tuning.load_search_file(write_space(out, args.epochs, args.seeds[0], Arm("grid")))
    assert first.base_config is not None
    init_ray(None, load_config(first.base_config, first.overrides), concurrent_models=args.max_concurrent)
    try:
        prepared = None
        for seed in args.seeds:
            for arm in map(parse_arm, args.arms):
                search = tuning.load_search_file(write_space(out, args.epochs, seed, arm))
                assert search.base_config is not None
                base = load_config(search.base_config, search.overrides)
                if prepared is None:  # the same sample for every seed (data.sample.seed is fixed)
                    prepared = get_dataset("fastmri").load(base, out)
                    print(f"data: {prepared.sizes} samples", flush=True)
                strategy = "grid" if arm.name == "grid" else "optuna-asha"  # asha: also an Optuna pruner
                name = f"bench-s{seed}-{arm.name}-{time.strftime('%Y%m%d-%H%M%S')}"
                opts = tuning.SweepOptions(
                    experiment="fastmri",
                    search=search,
                    base=base,
                    output_dir=out,
                    trials=arm.trials or trials,
                    max_concurrent=args.max_concurrent,
                    name=name,
                    strategy=strategy,
                    grid=GRID if strategy == "grid" else {},
                )
                t0 = time.perf_counter()
                result = tuning.run_sweep(opts, prepared)
                wall = time.perf_counter() - t0
                best = result.best
                key = f"s{seed}/{arm.name}"
                report[key] = {
                    "seed": seed,
                    "trials": len(result.rows),
                    "completed": sum(r.status == "completed" for r in result.rows),
                    "stopped_early": sum(r.status == "stopped" for r in result.rows),
                    "best_val_auroc_mean": best.score if best else float("nan"),
                    "best_test_auroc_mean": best.test.get("auroc_mean", float("nan")) if best else float("nan"),
                    "best_params": best.raw if best else {},
                    "total_epochs": result.total_epochs,
                    "wall_seconds": wall,
                    "load_average": os.getloadavg()[0],
                    "sweep": name,
                }
                print(json.dumps({key: report[key]}, indent=2), flush=True)
                results_file.write_text(json.dumps(report, indent=2))
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6, help="epochs per trial (product.epochs)")
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sweep seeds (run.seed and the sampler's)")
    p.add_argument("--output-dir", default=str(REPO / "outputs" / "benchmarks" / "search_vs_grid"))
    p.add_argument(
        "--arms",
        nargs="+",
        default=["optuna-asha-g1", "grid"],
        type=lambda a: parse_arm(a).name,
        help="arms to run: grid, or optuna-<asha|median|sh|hb>[-g<N>][-b<B>][-t<T>] (ASHA, or Optuna's "
        "MedianPruner, SuccessiveHalvingPruner or HyperbandPruner, from epoch N, default 1; B brackets, "
        "default 1; T trials, default the grid's 8)",
    )
    p.add_argument("--table-only", action="store_true", help="run nothing: the tables of --output-dir")
    args = p.parse_args()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    results_file = out / "results.json"
    # arms run earlier into the same folder are kept (e.g. rerunning one arm)
    report: dict[str, dict[str, Any]] = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if not args.table_only:
        run_arms(args, out, report)
    for key, r in report.items():  # how soon each search passed its seed's grid
        grid = report.get(f"s{r.get('seed')}/grid")
        if not key.endswith("/grid") and grid and "seed" in r:
            seq = trial_sequence(out, r["sweep"])
            r["epochs_to_grid_best"] = epochs_to_reach(seq, grid["best_val_auroc_mean"])
    results_file.write_text(json.dumps(report, indent=2))
    print("\n| seed | arm | trials | stopped early | best val AUROC | its test AUROC | epochs spent | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, r in sorted(report.items()):
        seed, arm = key.split("/", 1)
        print(
            f"| {seed[1:]} | {arm} | {r['trials']} | {r['stopped_early']} | {r['best_val_auroc_mean']:.4f} | "
            f"{r['best_test_auroc_mean']:.4f} | {r['total_epochs']} | {r['wall_seconds']:.0f} |"
        )
    print("\n".join(summary_lines(report, args.seeds)))
    print(f"\nresults: {results_file}")


if __name__ == "__main__":
    main()
