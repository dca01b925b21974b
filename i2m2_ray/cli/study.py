"""A study: one experiment's pipeline once per seed, under one MLflow parent run, and one
comparison of the seeds (mean ± std per paradigm and metric; I2M2 against each other
paradigm as a paired difference over seeds, with its 95% t interval and a paired t-test).

    python experiments/study.py --experiment fastmri --seeds 0 1 2 [pipeline options]

Each seed runs ``experiments/run.py --experiment NAME --seed S --output-dir OUT/seed<S>``
with the other options passed on, one seed after another (a pipeline already fits its
models concurrently to the cluster), or ``--parallel N`` seeds at once where the cluster or
the machine holds several pipelines. Every seed's parent run is a child of the study's run
(``I2M2_STUDY_RUN_ID``, read by the pipeline); a seed whose ``summary.json`` exists is
reused, so an interrupted study continues where it stopped. The study's folder gets
``comparison.md``, ``comparison.json`` and ``comparison_<metric>.png``; the study's run gets
them as artifacts and the means as metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from i2m2_ray import tracking
from i2m2_ray.files import atomic_write_json, read_json

REPO = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="study.py",
        allow_abbrev=False,  # --seed is a pipeline option the study refuses, not --seeds
        description="Run one experiment's pipeline once per seed and compare the paradigms over the seeds.",
        epilog="Any other option (--data-dir, --config, --set, --smoke-test, ...) is passed on to every seed's run.",
    )
    p.add_argument("--experiment", required=True, help="the dataset (a name experiments/run.py knows)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds (default 0 1 2)")
    p.add_argument("--output-dir", help="the study's folder (default outputs/study-<experiment>)")
    p.add_argument("--metrics", nargs="+", help="the compared test metrics (default: the config's report.metrics)")
    p.add_argument("--table-only", action="store_true", help="run nothing: compare the seeds already in --output-dir")
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="seeds run at once (default 1: a pipeline already fits its models concurrently; raise it where "
        "the cluster, or the machine, holds several pipelines); each seed's output then goes to seed<k>/run.log",
    )
    return p


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def seed_command(out: Path, seed: int, experiment: str, passed_on: Sequence[str]) -> list[str]:
    """One seed's pipeline: ``experiments/run.py`` into ``seed<k>/`` (``--resume`` when an
    earlier attempt left its state there)."""
    folder = seed_dir(out, seed)
    cmd = [sys.executable, str(REPO / "experiments" / "run.py"), "--experiment", experiment]
    cmd += ["--seed", str(seed), "--output-dir", str(folder), *passed_on]
    if (folder / "pipeline.json").is_file():
        cmd.append("--resume")  # an interrupted seed continues
    return cmd


def run_seeds(
    seeds: Sequence[int], out: Path, experiment: str, passed_on: Sequence[str], env: dict[str, str], parallel: int
) -> tuple[int, int] | None:
    """Run the seeds' pipelines, ``parallel`` at a time (one: on this console; more: each to
    its ``seed<k>/run.log``, a line when it starts and ends). After a failure no new seed
    starts and the running ones finish. Returns the first (seed, exit status) that failed."""
    import time

    pending = list(seeds)
    running: dict[int, tuple[subprocess.Popen[bytes], Any, float]] = {}
    failed: tuple[int, int] | None = None
    while running or (pending and failed is None):
        while pending and failed is None and len(running) < max(1, parallel):
            s = pending.pop(0)
            cmd = seed_command(out, s, experiment, passed_on)
            print(f"seed {s}: {' '.join(cmd[1:])}", flush=True)
            if parallel <= 1:
                rc = subprocess.run(cmd, env=env).returncode
                failed = failed or ((s, rc) if rc != 0 else None)
                continue
            seed_dir(out, s).mkdir(parents=True, exist_ok=True)
            log = (seed_dir(out, s) / "run.log").open("a")
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[s] = (proc, log, time.perf_counter())
            print(f"seed {s}: started, output in {seed_dir(out, s) / 'run.log'}", flush=True)
        for s, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[s]
            print(f"seed {s}: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s", flush=True)
            failed = failed or ((s, proc.returncode) if proc.returncode != 0 else None)
        if running:
            time.sleep(1.0)
    return failed


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its t interval over seeds (NaN bounds with fewer than 2 values)."""
    from scipy import stats

    from i2m2_ray.evaluation.paired import mean_std

    mean, std = mean_std(values)
    n = len(values)
    if n < 2 or math.isnan(std):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 * (1 + level), df=n - 1)) * std / math.sqrt(n)
    return mean, mean - half, mean + half


def compare(out: Path, seeds: Sequence[int], experiment: str, metrics: Sequence[str] | None) -> dict[str, Any]:
    """The comparison of the seeds in ``out`` (written there: markdown, JSON, a figure)."""
    from i2m2_ray.evaluation import interval_bars
    from i2m2_ray.evaluation.seeds import compare_seeds, comparison_markdown

    summaries: dict[int, Any] = {}
    for s in seeds:
        summaries[s] = read_json(seed_dir(out, s) / "summary.json", f"seed {s}'s summary", "run the study for it")
    if not metrics:
        state = read_json(seed_dir(out, seeds[0]) / "pipeline.json", "the pipeline state", "pass --metrics")
        metrics = list(state["config"]["report"]["metrics"])
    comparison = compare_seeds(summaries, metrics)
    main = metrics[0]
    text = (
        f"# {experiment}: {len(seeds)} seeds ({', '.join(map(str, seeds))})\n\n"
        f"Test metrics, mean ± sample std over seeds; {comparison['reference']} against each model as a paired "
        "difference over seeds.\n\n" + comparison_markdown(comparison) + "\n"
    )
    (out / "comparison.md").write_text(text)
    atomic_write_json(out / "comparison.json", comparison)
    bars = {m: t_interval(comparison["per_seed"][m][main]) for m in comparison["models"]}
    title = f"{experiment}: test {main}, mean over {len(seeds)} seeds, 95% t interval"
    comparison["figure"] = str(interval_bars(bars, main, title, out / f"comparison_{main}.png"))
    return comparison


def main(argv: Sequence[str] | None = None) -> int:
    args, passed_on = parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    for flag in ("--seed", "--resume", "--overwrite"):
        if any(a == flag or a.startswith(f"{flag}=") for a in passed_on):
            print(f"error: {flag} is the study's to set for each seed; leave it out", file=sys.stderr)
            return 2
    out = Path(args.output_dir or Path("outputs") / f"study-{args.experiment}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_tracking_uri(out)
    tracker = tracking.Tracker(uri, f"{out}")
    study_run = None
    if not args.table_only:
        exp_id = tracker.call(tracking.get_experiment_id, args.experiment, out / "mlartifacts")
        if exp_id is not None:
            params = {"seeds": args.seeds, "options": " ".join(passed_on) or "(none)"}
            tags = {"dataset": args.experiment, "stage": "study", **tracking.provenance()}
            study_run = tracker.call(tracking.start_run, exp_id, f"{args.experiment}-study", tags=tags, params=params)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        if study_run:
            env[tracking.STUDY_RUN_ENV] = study_run
        todo = []
        for s in args.seeds:
            if (seed_dir(out, s) / "summary.json").is_file():
                print(f"seed {s}: finished earlier, reusing {seed_dir(out, s) / 'summary.json'}", flush=True)
            else:
                todo.append(s)
        failed = run_seeds(todo, out, args.experiment, passed_on, env, args.parallel)
        if failed:
            s, rc = failed
            print(f"error: seed {s} failed (exit {rc}); fix it and run the same command again", file=sys.stderr)
            if study_run:
                tracker.call(tracking.end_run, study_run, "FAILED")
            return rc
    comparison = compare(out, args.seeds, args.experiment, args.metrics)
    print((out / "comparison.md").read_text())
    if study_run:
        means = {f"{m}.{k}": v for m, per in comparison["mean"].items() for k, v in per.items() if not math.isnan(v)}
        tracker.call(tracking.log_metrics, study_run, means)
        for name in ("comparison.md", "comparison.json", Path(comparison["figure"]).name):
            tracker.call(tracking.log_artifact, study_run, out / name)
        tracker.call(tracking.end_run, study_run, "FINISHED")
    print(f"comparison: {out / 'comparison.md'}")
    print(json.dumps({"study_run_id": study_run}))
    return 0
