"""Run an experiment's demo for several seeds and tabulate the paradigms' test metrics.

    python benchmarks/seeds.py vqa --seeds 0 1 2 --run      # run the demos one after another
    python benchmarks/seeds.py vqa --seeds 0 1 2            # only tabulate what is there

Each seed writes ``<root>/<experiment>_s<seed>/`` (summary.json, MLflow store, log) and its
wall time and load average to ``<root>/<experiment>_s<seed>/wall.json``. The table gives
each seed's value of the main metric, then mean ± std (population) over the seeds, as
markdown. Run one at a time: on 2 cores, parallel demos slow each other several-fold.
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
# the metric each experiment's comparison is judged on, and further columns worth a look
METRICS: dict[str, list[str]] = {
    "fastmri": ["auroc_mean"],
    "avmnist": ["accuracy", "f1_macro"],
    "mimic": ["balanced_accuracy", "accuracy", "auroc"],
    "vqa": ["vqa_score", "ood_mean_vqa_score"],
    "nlvr2": ["accuracy", "auroc"],
}


def run_seed(experiment: str, seed: int, out: Path, extra: list[str]) -> dict[str, float]:
    """One demo run; returns its wall time and the 1-min load average when it ended."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, f"experiments/{experiment}.py", "--seed", str(seed), "--output-dir", str(out), *extra]
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = {"wall_seconds": time.perf_counter() - t0, "load_average": os.getloadavg()[0], "returncode": rc}
    (out / "wall.json").write_text(json.dumps(wall))
    if rc != 0:
        raise SystemExit(f"{experiment} seed {seed} failed (exit {rc}); see {out / 'run.log'}")
    return wall


def table(experiment: str, dirs: dict[int, Path]) -> str:
    """Markdown: per paradigm, the main metric per seed, then mean ± std of each metric."""
    summaries = {}
    for seed, d in dirs.items():
        path = d / "summary.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (run this seed with --run)")
        summaries[seed] = json.loads(path.read_text())
    metrics = METRICS.get(experiment, ["accuracy"])
    paradigms = list(next(iter(summaries.values())))
    seeds = list(summaries)
    head = ["model", *(f"seed {s}" for s in seeds), *(f"{m} (mean ± std)" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in paradigms:
        cells = [p, *(f"{summaries[s][p][metrics[0]]:.3f}" for s in seeds)]
        for m in metrics:
            vals = [summaries[s][p][m] for s in seeds if m in summaries[s][p]]
            cells.append(f"{statistics.fmean(vals):.3f} ± {statistics.pstdev(vals):.3f}" if vals else "-")
        lines.append("| " + " | ".join(cells) + " |")
    walls = []
    for s, d in dirs.items():
        w = d / "wall.json"
        if w.is_file():
            info = json.loads(w.read_text())
            walls.append(f"seed {s}: {info['wall_seconds']:.0f} s (load {info['load_average']:.1f})")
    if walls:
        lines.append("")
        lines.append("Wall time: " + "; ".join(walls))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(METRICS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", type=Path, default=REPO / "outputs" / "seeds")
    p.add_argument("--run", action="store_true", help="run the demos first (one after another)")
    p.add_argument("extra", nargs="*", help="further options for the experiment, after --")
    args = p.parse_args(argv)
    dirs = {s: args.root / f"{args.experiment}_s{s}" for s in args.seeds}
    if args.run:
        for s, d in dirs.items():
            wall = run_seed(args.experiment, s, d, args.extra)
            print(f"{args.experiment} seed {s}: {wall['wall_seconds']:.0f} s", flush=True)
    print(table(args.experiment, dirs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
