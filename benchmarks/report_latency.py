"""What one ``ray.train.report`` costs a Ray Train fit, at Ray's controller poll interval and at ours.

    python benchmarks/report_latency.py [--reports 10] [--fits 2] [--intervals 2 0.2]

Ray Train (V2) hands a worker's reports to its controller through a queue of one: the
controller takes a report when it polls the workers, every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``
(Ray's default 2 s), and a worker that reports again before then waits. An epoch shorter than
the interval (a small data set, a smoke test) therefore lasts the interval. A local Ray of
this project polls every 0.2 s (``i2m2_ray.cli.session.start_local_ray``).

For each interval, one local Ray (a subprocess, since the interval is read when Ray starts)
runs ``--fits`` one-worker fits one after another, each reporting ``--reports`` times without
any work in between; the table gives the seconds the reports took inside the loop and the
fit's wall time (process start-up included), mean over the fits, with the load average.
Results go to ``<out>/report_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD_FLAG = "--child"


def child(reports: int, fits: int, storage: str) -> None:
    """One local Ray (the project's own start), ``fits`` fits; one JSON line per fit."""
    sys.path.insert(0, str(REPO))
    from i2m2_ray.cli.session import start_local_ray

    start_local_ray(2)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(cfg: dict) -> None:
        import time as clock

        from ray import train

        t0 = clock.perf_counter()
        for epoch in range(cfg["reports"]):
            train.report({"epoch": epoch})
        print(json.dumps({"loop_s": clock.perf_counter() - t0}), flush=True)

    for i in range(fits):
        t0 = time.perf_counter()
        TorchTrainer(
            loop,
            train_loop_config={"reports": reports},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=f"fit{i}", storage_path=storage),
        ).fit()
        print(json.dumps({"fit_s": time.perf_counter() - t0}), flush=True)
    ray.shutdown()


def measure(interval: float, reports: int, fits: int, out: Path) -> dict[str, float]:
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(interval), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    storage = out / f"storage_{interval}"
    cmd = [sys.executable, __file__, CHILD_FLAG, str(reports), str(fits), str(storage)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"interval {interval}: the run failed\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    loops, walls = [], []
    for line in (proc.stdout + proc.stderr).splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if "loop_s" in record:
            loops.append(float(record["loop_s"]))
        elif "fit_s" in record:
            walls.append(float(record["fit_s"]))
    if len(walls) != fits or not loops:
        raise SystemExit(f"interval {interval}: expected {fits} fits, read {len(walls)} fits and {len(loops)} loops")
    return {
        "interval_s": interval,
        "loop_s": statistics.mean(loops),
        "per_report_s": statistics.mean(loops) / reports,
        "fit_s": statistics.mean(walls),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == CHILD_FLAG:
        child(int(argv[1]), int(argv[2]), argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--reports", type=int, default=10, help="reports per fit (default 10)")
    ap.add_argument("--fits", type=int, default=2, help="fits per interval (default 2)")
    ap.add_argument("--intervals", type=float, nargs="+", default=[2.0, 0.2], help="poll intervals, s")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "report_latency")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = [measure(i, args.reports, args.fits, args.out) for i in args.intervals]
    load_after = os.getloadavg()
    print(f"{args.reports} reports per fit, {args.fits} fits per interval, {os.cpu_count()} CPUs")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print("| poll interval | reports in the loop | per report | fit wall time |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['interval_s']:g} s | {r['loop_s']:.2f} s | {r['per_report_s']:.3f} s | {r['fit_s']:.1f} s |")
    result = {
        "rows": rows,
        "reports": args.reports,
        "fits": args.fits,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_before": load_before,
        "load_after": load_after,
        "command": " ".join([sys.executable, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (args.out / "report_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
