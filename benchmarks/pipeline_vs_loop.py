"""The AV-MNIST pipeline against a plain PyTorch loop, on real files at full size (issue 20,
item 1).

    python benchmarks/pipeline_vs_loop.py --data-dir /tmp/realdata/avmnist
    python benchmarks/pipeline_vs_loop.py --data-dir D --arms plain      # one arm (the JSON keeps the other)
    python benchmarks/pipeline_vs_loop.py --data-dir D --epochs 2 --max-samples 120   # a quick look
    python benchmarks/pipeline_vs_loop.py --data-dir D --arms platform platform-fast plain
    python benchmarks/pipeline_vs_loop.py --data-dir D --arms platform plain-matched plain-matched platform

Two arms on the same files, cores, recipe (``configs/avmnist.yaml``: its models, optimisers,
epochs, batch size, early stopping on validation accuracy) and seed:

- **platform**: ``experiments/avmnist.py --data-dir D`` as a user runs it (a local Ray, Ray
  Data reading and preprocessing, the three components fitted concurrently by Ray Train, then
  intra and I2M2 from their weights, MLflow records, checkpoints), with what the plain loop
  does not do switched off: the compute-matched control ``inter_extended``, the robustness
  sweeps and the bootstrap intervals (``evaluation.*``). Its wall time includes starting Ray.
- **platform-fast**: the same with ``run.deterministic=false``: blocks may overtake each
  other, and the fit left running takes the cores the finished ones left idle
  (:mod:`i2m2_ray.training.cores`); results differ from run to run in their last digits.
- **plain**: the public code's way, one process, no Ray: the same five models one after
  another, each file read into memory once through the project's reader, a random
  permutation per epoch, torch's default threads (every core), validation after every epoch,
  the best weights kept, intra and I2M2 started from the components' best weights.
- **plain-matched**: the plain loop run for exactly the epochs per model of the platform's
  latest run (in this command or in the results file), without early stopping (the best
  weights on validation are still kept). The two loops draw different shuffles, so early
  stopping ends them at different epochs; this arm compares the same work. The default
  platform arm (``run.deterministic: true``) runs the same epochs every time.

An arm may be named more than once (``platform plain-matched plain-matched platform``, the
order that cancels a drift of the machine's speed during the run): every run is kept in the
JSON's ``runs``, and the ratio printed at the end is a platform arm's mean wall time over a
plain arm's.

Both print per-model test accuracy (the runs are not the same random numbers: the figures
agree in level, not to the digit) and the JSON holds the wall times, the load average before
and after each arm, and the command.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.perf import loadavg, machine  # noqa: E402

MODELS = ["unimodal_image", "unimodal_audio", "inter", "intra", "i2m2"]
# what the plain loop does not do either (see the module's docstring)
PLATFORM_EXTRAS_OFF = ["evaluation.inter_extended=false", "evaluation.robustness=false", "evaluation.bootstrap=0"]


def settings(args: argparse.Namespace) -> list[str]:
    """The overrides both arms apply to configs/avmnist.yaml."""
    out = ["run.use_gpu=false", f"run.seed={args.seed}"]
    if args.epochs is not None:
        out += [f"train.epochs={args.epochs}", f"product.epochs={args.epochs}"]
    if args.max_samples is not None:
        out.append(f"data.max_samples={args.max_samples}")
    return out + list(args.set)


# the platform's arms: name -> overrides of its own
PLATFORM_ARMS = {"platform": [], "platform-fast": ["run.deterministic=false"]}
PLAIN_ARMS = ("plain", "plain-matched")


# what a process of the platform's run is, from its title (Ray names its workers ray::<what
# they run>); first match wins, the command's own process is "driver"
CPU_KINDS = [
    ("training workers", ("RayTrainWorker",)),
    ("Train controllers", ("TrainController", "TrainStateActor", "Synchronization")),
    (
        "Ray services",
        (
            "gcs_server",
            "raylet",
            "dashboard",
            "log_monitor",
            "monitor.py",
            "Agent",
            "Autoscaling",
            "PlacementGroupCleaner",
        ),
    ),  # fmt: skip
    ("Ray Data", ("Read", "Map", "Split", "Stats", "Output", "Dataset")),  # DatasetManager too
    ("idle Ray workers", ("ray::IDLE",)),
]


def cpu_kind(title: str) -> str:
    return next((kind for kind, marks in CPU_KINDS if any(m in title for m in marks)), "other")


class ProcessCpu:
    """CPU seconds (user + system) of a process and all its descendants, sampled every
    ``every`` s from /proc and summed by kind (:data:`CPU_KINDS`), each interval's CPU going
    to the title the process had then (a Ray worker's title follows what it runs). A process
    that ends loses at most its last interval. Linux only."""

    def __init__(self, root: int, every: float = 1.0) -> None:
        import threading

        self.root, self.every = root, every
        self.tick = os.sysconf("SC_CLK_TCK")
        self.last: dict[int, float] = {}
        self.by_kind: dict[str, float] = {}
        self.by_title: dict[str, float] = {}  # the first 60 characters of the title
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> dict[int, tuple[int, float, str]]:
        """pid -> (parent, CPU s, title) of every process now."""
        procs = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            procs[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick, title)
        return procs

    def sample(self) -> None:
        procs = self._tree()
        mine, todo = set(), [self.root]
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in procs.items():
            children.setdefault(parent, []).append(pid)
        while todo:
            pid = todo.pop()
            if pid in procs and pid not in mine:
                mine.add(pid)
                todo.extend(children.get(pid, []))
        for pid in mine:
            _, cpu, title = procs[pid]
            kind, spent = "driver" if pid == self.root else cpu_kind(title), cpu - self.last.get(pid, 0.0)
            self.by_kind[kind] = self.by_kind.get(kind, 0.0) + spent
            self.by_title[title[:60]] = self.by_title.get(title[:60], 0.0) + spent
            self.last[pid] = cpu

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    def __enter__(self) -> ProcessCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    @staticmethod
    def summary(spent: dict[str, float], top: int = 20) -> dict[str, float]:
        return {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:top]}


def run_platform(args: argparse.Namespace, out: Path, arm: str = "platform") -> dict[str, Any]:
    """The pipeline as a user runs it; wall time of the whole command, and the CPU seconds
    of its processes by kind."""
    folder = out / arm
    sets = [*settings(args), *PLATFORM_EXTRAS_OFF, *PLATFORM_ARMS[arm]]
    cmd = [sys.executable, "experiments/avmnist.py", "--data-dir", str(args.data_dir), "--output-dir", str(folder)]
    cmd += ["--overwrite", *[a for s in sets for a in ("--set", s)]]
    print(f"{arm}:", " ".join(cmd), flush=True)
    before, t0 = loadavg(), time.perf_counter()
    log = out / f"{arm}.log"
    with open(log, "w") as sink:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=env)
        with ProcessCpu(child.pid) as cpu:
            child.wait()
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise SystemExit(f"{arm} arm failed (exit {child.returncode}); log: {log}")
    summary = json.loads((folder / "summary.json").read_text())
    results = folder / "results"
    fitted = {m: json.loads((results / f"{m}.json").read_text()) for m in MODELS if (results / f"{m}.json").is_file()}
    return {
        "command": cmd,
        "wall_s": wall,
        "load_before": before,
        "load_after": loadavg(),
        "test_accuracy": {m: summary[m]["accuracy"] for m in MODELS if m in summary},
        "epochs_run": {m: fitted[m]["epochs_run"] for m in MODELS if m in fitted},
        "model_wall_s": {m: fitted[m]["wall_seconds"] for m in MODELS if m in fitted},
        "cpu_s_by_kind": cpu.summary(cpu.by_kind),
        "cpu_s_by_title": cpu.summary(cpu.by_title),
    }


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_split(reader: Any, rows: Any, digits: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    from i2m2_ray.data.avmnist import HEAD
    from i2m2_ray.spec import label_column

    col = label_column(HEAD)
    arrays = reader({"row": np.asarray(rows, dtype=np.int64), col: np.asarray(digits[rows], dtype=np.int64)})
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def plain_fit(
    lc: Any, t: Any, data: dict[str, dict[str, Any]], seed: int, epochs_fixed: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """One model: epochs of a random permutation, validation after each, the best weights
    (strict gain on ``t.monitor``), stopping after ``t.patience`` epochs without one; with
    ``epochs_fixed``, exactly that many epochs and no early stopping."""
    import torch

    from i2m2_ray.training.loop import (
        StepSettings,
        make_optimizer,
        make_scheduler,
        param_groups,
        predict,
        steps_per_epoch,
        train_epoch,
    )
    from i2m2_ray.training.metrics import compute_metrics, is_better
    from i2m2_ray.training.worker import make_model, seed_everything

    seed_everything(seed)
    model = make_model(lc)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(param_groups(model, t.head_lr_mult), t)
    n = len(next(iter(data["train"].values())))
    scheduler = make_scheduler(optimizer, t, steps_per_epoch(n, 1, t.batch_size, t.grad_accum_steps))
    weights = {h: torch.tensor(w) for h, w in lc.class_weights.items()} if t.class_weighted else {}
    step = StepSettings.from_config(t)
    g = torch.Generator().manual_seed(seed)

    def batches(split: str, order: Any = None) -> Any:
        rows = data[split]
        idx = order if order is not None else torch.arange(len(next(iter(rows.values()))))
        return ({k: v[i] for k, v in rows.items()} for i in idx.split(t.batch_size))

    best, best_epoch, best_state, epochs = None, -1, None, 0
    for epoch in range(t.epochs if epochs_fixed is None else epochs_fixed):
        train_epoch(model, batches("train", torch.randperm(n, generator=g)), lc.spec, optimizer, params, weights, step,
                    scheduler)  # fmt: skip
        value = compute_metrics(*predict(model, batches("val"), lc.spec))[t.monitor]
        epochs = epoch + 1
        if is_better(value, best, t.monitor_mode):
            best, best_epoch, best_state = value, epochs, copy.deepcopy(model.state_dict())
        if epochs_fixed is None and best_epoch > 0 and epochs - best_epoch >= t.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    test = compute_metrics(*predict(model, batches("test"), lc.spec))
    return model, {"accuracy": test["accuracy"], "epochs_run": epochs, "best_epoch": best_epoch}


def run_plain(args: argparse.Namespace, out: Path, match: dict[str, int] | None = None) -> dict[str, Any]:
    """The five models one after another in this process (no Ray); ``match``: the epochs to
    run per model (no early stopping)."""
    import numpy as np
    import torch

    from i2m2_ray.config import load_config
    from i2m2_ray.data.avmnist import (
        AUDIO_SIDE,
        CLASSES,
        HEAD,
        MODALITIES,
        AVMNISTReader,
        options,
        read_split,
        train_val_sizes,
    )
    from i2m2_ray.data.base import spaced
    from i2m2_ray.spec import TaskSpec, component_paradigm, is_product
    from i2m2_ray.training.checkpoint import save_checkpoint
    from i2m2_ray.training.metrics import class_weights
    from i2m2_ray.training.worker import LoopConfig

    cfg = load_config(REPO / "configs" / "avmnist.yaml", settings(args))
    opts = options(cfg)
    before, t0, cpu0 = loadavg(), time.perf_counter(), process_cpu_s()
    torch.set_num_threads(os.cpu_count() or 1)  # one process, torch's default: every core
    train_paths, train_digits = read_split(args.data_dir, "train")
    test_paths, test_digits = read_split(args.data_dir, "test")
    n_train, n_val = train_val_sizes(len(train_digits))
    cap = cfg.data.max_samples  # the rows the pipeline takes (avmnist.prepare)
    rows = {"train": spaced(n_train, cap), "val": n_train + spaced(n_val, cap), "test": spaced(len(test_digits), cap)}
    data = {}
    for split, idx in rows.items():
        paths, digits = (test_paths, test_digits) if split == "test" else (train_paths, train_digits)
        reader = AVMNISTReader(str(paths["image"]), str(paths["audio"]), opts["audio_pool"])
        data[split] = load_split(reader, idx, digits)
    read_s = time.perf_counter() - t0
    spec = TaskSpec(MODALITIES, {HEAD: CLASSES})
    side = AUDIO_SIDE // opts["audio_pool"]
    info = {"inputs": {"image": [1, 28, 28], "audio": [1, side, side]}, "encoders": ["lenet"]}
    weights = class_weights({HEAD: [int(c) for c in np.bincount(train_digits[rows["train"]], minlength=CLASSES)]})
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="i2m2plain") as tmp:
        saved: dict[str, str] = {}
        for name in MODELS:
            m0 = time.perf_counter()
            product = is_product(name)
            init = {e: saved[component_paradigm(e)] for e in spec.components(name)} if product else {}
            lc = LoopConfig(
                name=name,
                paradigm=name,
                spec=spec,
                input_facts=info,
                experiment=cfg.to_dict(),
                class_weights=weights,
                init_checkpoints=init if cfg.product.init == "components" else {},
                freeze=list(cfg.product.freeze) if product else [],
                product_weights=dict(cfg.product.weights) if product else {},
                train_size=len(rows["train"]),
            )
            fixed = None if match is None else int(match[name])
            model, res = plain_fit(lc, cfg.training(name), data, cfg.run.seed, fixed)
            saved[name] = str(Path(tmp) / f"{name}.pt")
            save_checkpoint(saved[name], model.state_dict(), name, cfg.to_dict(), spec, {})
            results[name] = {**res, "wall_s": time.perf_counter() - m0}
            print(f"plain {name}: test accuracy {res['accuracy']:.3f}, {res['epochs_run']} epochs, "
                  f"{results[name]['wall_s']:.0f} s", flush=True)  # fmt: skip
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": round(process_cpu_s() - cpu0, 1),
        "epochs_matched": match is not None,
        "read_s": read_s,
        "threads": torch.get_num_threads(),
        "load_before": before,
        "load_after": loadavg(),
        "sizes": {k: len(v) for k, v in rows.items()},
        "test_accuracy": {m: r["accuracy"] for m, r in results.items()},
        "epochs_run": {m: r["epochs_run"] for m, r in results.items()},
        "model_wall_s": {m: r["wall_s"] for m, r in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="AV-MNIST files (benchmarks/real_data.py build)")
    ap.add_argument(
        "--arms",
        nargs="+",
        choices=[*PLATFORM_ARMS, *PLAIN_ARMS],
        default=["platform", "plain"],
        help="platform-fast: the platform with run.deterministic=false (fits share idle cores); plain-matched: the "
        "plain loop for the platform's epochs; an arm named twice runs twice",
    )
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs and product.epochs (default: the recipe's)")
    ap.add_argument("--max-samples", type=int, default=None, help="data.max_samples (default: every row)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides, both arms")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "pipeline_vs_loop")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    result.update({"machine": machine(), "command": [sys.executable, *sys.argv], "settings": settings(args)})
    result.setdefault("runs", [])
    for arm in args.arms:
        if arm in PLATFORM_ARMS:
            run = run_platform(args, args.out, arm)
        else:
            run = run_plain(args, args.out, platform_epochs(result) if arm == "plain-matched" else None)
        result[arm] = run
        result["runs"].append({"arm": arm, **run})
        path.write_text(json.dumps(result, indent=1))
    print_summary(result)
    print(f"-> {path}")
    return 0


def platform_epochs(result: dict[str, Any]) -> dict[str, int]:
    """The epochs per model of the latest platform run on record (what plain-matched runs)."""
    for run in reversed(result.get("runs", [])):
        if run["arm"] in PLATFORM_ARMS and all(run["epochs_run"].get(m) for m in MODELS):
            return {m: int(run["epochs_run"][m]) for m in MODELS}
    raise SystemExit("plain-matched runs the platform's epochs: run a platform arm first (e.g. --arms platform "
                     "plain-matched)")  # fmt: skip


def print_summary(result: dict[str, Any]) -> None:
    """Per arm: test accuracy of its latest run, each run's wall time and epochs, and each
    platform arm's mean wall time over each plain arm's."""
    arms = [a for a in (*PLATFORM_ARMS, *PLAIN_ARMS) if a in result]
    print(f"{'test accuracy':16} " + " ".join(f"{a:>13}" for a in arms))
    for m in MODELS:
        got = [result[a].get("test_accuracy", {}).get(m) for a in arms]
        print(f"{m:16} " + " ".join(f"{v:>13.3f}" if v is not None else f"{'-':>13}" for v in got))
    walls: dict[str, list[float]] = {}
    for run in result.get("runs", []):
        walls.setdefault(run["arm"], []).append(run["wall_s"])
        epochs = " / ".join(str(run["epochs_run"].get(m)) for m in MODELS)
        print(f"{run['arm']:14} wall {run['wall_s']:6.0f} s  epochs {epochs}  load {run['load_before']} -> "
              f"{run['load_after']}")  # fmt: skip
        if "cpu_s_by_kind" in run:
            print(f"{'':14} CPU s: " + ", ".join(f"{k} {v:.0f}" for k, v in run["cpu_s_by_kind"].items()))
        elif "cpu_s" in run:
            print(f"{'':14} CPU s: {run['cpu_s']:.0f}")
    for a in PLATFORM_ARMS:
        for b in PLAIN_ARMS:
            if a in walls and b in walls:
                ratio = sum(walls[a]) / len(walls[a]) / (sum(walls[b]) / len(walls[b]))
                print(
                    f"{a} / {b} wall time: {ratio:.2f} (means of {len(walls[a])} and {len(walls[b])} runs; goal <= 1)"
                )


if __name__ == "__main__":
    raise SystemExit(main())
