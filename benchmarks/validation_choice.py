"""Choose a demo setting on validation results only: run variants of an experiment over
seeds and compare the models' best validation metric, never a test figure.

    python benchmarks/validation_choice.py fastmri --seeds 0 1 2 \\
        --variant scratch product.init=scratch --variant components product.init=components
    python benchmarks/validation_choice.py vqa --seeds 0 1 2 --variant long product.epochs=10 \\
        --curve i2m2 intra

Each (variant, seed) runs ``experiments/<experiment>.py --seed S --set ...`` into
``<root>/<experiment>/<variant>_s<seed>/`` (skipped when its results are already there) and
the table reads ``results/<model>.json``: the validation value of the monitored metric at
the model's best epoch (``val``), per seed and as mean ± std. ``--curve MODEL ...`` adds
each model's validation metric per epoch, averaged over seeds, and what a run with a budget
of E epochs would have selected: the best validation value among its first E epochs (mean ±
std over seeds). One long run answers every shorter budget only where the first E epochs do
not depend on the budget: a constant learning rate (the demos' products) and no early stop
before E. Test metrics are in the same folders but this script never reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# the validation metric each demo is selected on (train.monitor of its demo config)
MONITOR = {
    "fastmri": "auroc_mean",
    "avmnist": "accuracy",
    "mimic": "balanced_accuracy",
    "vqa": "vqa_score",
    "nlvr2": "accuracy",
}


def run(experiment: str, seed: int, out: Path, overrides: list[str]) -> None:
    """One demo run (skipped when it finished earlier)."""
    if (out / "summary.json").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, f"experiments/{experiment}.py", "--seed", str(seed), "--output-dir", str(out)]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    (out / "wall.json").write_text(
        json.dumps({"wall_seconds": time.perf_counter() - t0, "load_average": os.getloadavg()[0], "returncode": rc})
    )
    if rc != 0:
        raise SystemExit(f"{experiment} {out.name} failed (exit {rc}); see {out / 'run.log'}")


def validation(out: Path, metric: str) -> dict[str, tuple[float, list[float]]]:
    """Model -> (best validation value, validation value per epoch) from ``results/``."""
    found = {}
    for path in sorted((out / "results").glob("*.json")):
        res = json.loads(path.read_text())
        curve = [float(h.get(f"val_{metric}", float("nan"))) for h in res.get("history", [])]
        found[path.stem] = (float(res["val"].get(f"val_{metric}", float("nan"))), curve)
    return found


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def best_within(curve: list[float], budget: int) -> float:
    """The validation value a run of ``budget`` epochs selects: the best of its first epochs
    (NaN epochs ignored; NaN when the run stopped before any)."""
    seen = [v for v in curve[:budget] if v == v]
    return max(seen) if seen else float("nan")


def curve_lines(got: dict[int, dict[str, tuple[float, list[float]]]], model: str, metric: str) -> list[str]:
    """``model``'s validation ``metric`` by epoch (mean over seeds), then the value selected
    under each epoch budget (mean ± std over seeds)."""
    curves = [got[s][model][1] for s in got if model in got[s]]
    if not curves:
        return [f"{model}: no results"]
    length = max(len(c) for c in curves)
    per_epoch = [statistics.fmean(c[e] for c in curves if e < len(c)) for e in range(length)]
    selected = [mean_std([best_within(c, e + 1) for c in curves]) for e in range(length)]
    return [
        f"{model}, validation {metric} by epoch (mean over {len(curves)} seeds): "
        + ", ".join(f"{e + 1}: {v:.3f}" for e, v in enumerate(per_epoch)),
        f"{model}, selected with a budget of E epochs (best of the first E; mean ± std): "
        + ", ".join(f"{e + 1}: {v}" for e, v in enumerate(selected)),
    ]


def table(runs: dict[str, dict[int, Path]], metric: str, curves: list[str]) -> str:
    lines = [f"Validation {metric} at each model's best epoch (mean ± std over seeds; test not read):", ""]
    for variant, dirs in runs.items():
        got = {s: validation(d, metric) for s, d in dirs.items()}
        models = list(next(iter(got.values())))
        seeds = list(dirs)
        lines += [f"**{variant}**", "", "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |"]
        lines.append("|" + " --- |" * (len(seeds) + 2))
        for m in models:
            vals = [got[s][m][0] for s in seeds if m in got[s]]
            lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {mean_std(vals)} |")
        for model in curves:
            lines += ["", *curve_lines(got, model, metric)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(MONITOR))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "KEY=VALUE"),
        default=[],
        help="a name and its config overrides (repeatable); no variant: the demo as it is",
    )
    p.add_argument("--metric", help="validation metric (default: the demo's train.monitor)")
    p.add_argument(
        "--curve", nargs="+", default=[], metavar="MODEL",
        help="also show these models' validation metric per epoch, and what each epoch budget selects",
    )
    p.add_argument("--root", type=Path, default=REPO / "outputs" / "validation_choice")
    p.add_argument("--table-only", action="store_true", help="tabulate what is there, run nothing")
    args = p.parse_args(argv)
    variants = {v[0]: v[1:] for v in args.variant} or {"default": []}
    runs = {n: {s: args.root / args.experiment / f"{n}_s{s}" for s in args.seeds} for n in variants}
    if not args.table_only:
        for name, overrides in variants.items():
            for seed, out in runs[name].items():
                run(args.experiment, seed, out, overrides)
                print(f"{args.experiment} {name} seed {seed}: done", flush=True)
    print(table(runs, args.metric or MONITOR[args.experiment], args.curve))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
