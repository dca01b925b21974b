"""Performance benchmarks of the platform (issue 6): one sub-command per table.

    python benchmarks/perf.py overhead   # Ray Train + Ray Data loop vs a plain PyTorch loop
    python benchmarks/perf.py overhead --datasets avmnist --repeats 5   # + 4 more interleaved rounds
    python benchmarks/perf.py pipeline   # fastMRI slices/s: Ray Data vs bare torch.fft, per core
    python benchmarks/perf.py cost       # I2M2 step time vs the sum of its experts' step times
    python benchmarks/perf.py scaling    # 1 vs 2 Ray Train workers
    python benchmarks/perf.py memory     # peak resident memory per worker, demo and 320x320
    python benchmarks/perf.py all        # all five, one local Ray
    ... --tiny                           # tiny sizes, seconds per table (the smoke test)

Each prints a table and writes ``<out-root>/<table>/results.json`` (default out-root
``outputs/benchmarks``), with the machine, its load average before and after, and the
command. Generated samples are cached under ``<out-root>/_samples``. Every training run
uses the project's one step function (``i2m2_ray.training.loop.train_epoch``) and one
thread per worker; see benchmarks/README.md for the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from i2m2_ray.config import ExperimentConfig, load_config  # noqa: E402

RAY_CPUS = 4  # logical CPUs of the local Ray, as in the tests: trainers plus the data pipeline

# Sample sizes: k-space (height x width) zero-filled to pad, centre crop.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(volumes=7, slices=4, height=64, width=36, pad_width=40, crop=32),
    "demo": dict(volumes=8, slices=10, height=128, width=72, pad_width=80, crop=64),  # configs/fastmri_demo.yaml
    "full": dict(volumes=7, slices=7, height=640, width=368, pad_width=400, crop=320),  # the real single-coil size
    # memory at full size: few slices, since a CPU step of the full model takes minutes
    "fullmem": dict(volumes=7, slices=2, height=640, width=368, pad_width=400, crop=320),
}
# Model numbers per size (fastmri_demo.yaml, the smoke test, fastmri.yaml)
MODELS: dict[str, list[str]] = {
    "tiny": ["model.width=4", "model.blocks=[1]", "model.groups=2", "train.batch_size=16"],
    "demo": [],
    "full": ["model.width=64", "model.blocks=[2, 2, 2, 2]", "model.groups=32", "train.batch_size=32"],
}
MODELS["fullmem"] = MODELS["full"]


# ---------------------------------------------------------------------------- helpers


def machine() -> dict[str, Any]:
    import ray
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "ray_logical_cpus": RAY_CPUS,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and all its descendants (a local Ray's GCS,
    raylet and workers are descendants of the driver that started it), counting children
    that already exited. On a machine shared with other jobs this, unlike wall time, is
    work done: rate per CPU-second is the rate per core."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        ppid = int(fields[1])
        cpu = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        stats[int(entry)] = (ppid, cpu)
    keep, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in keep:
                keep.add(pid)
                frontier.append(pid)
    return sum(stats[p][1] for p in keep if p in stats)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [list(headers)] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write(out_root: Path, name: str, result: dict[str, Any]) -> Path:
    path = out_root / name / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float))
    return path


def _patient_node_registration(wait_s: float = 180.0) -> None:
    """Let a local Ray's start wait up to ``wait_s`` for its raylet to register.

    Ray 2.60 gives the raylet a fixed 30 s (``raylet_start_wait_time_s`` in
    ``ray._private.node``); on this 2-core machine under a load average of 30-50 from
    other jobs it often needs more, and ``ray.init`` fails ("node timed out during
    startup"). Benchmarks only: each lookup of the node keeps asking for up to ``wait_s``.
    """
    import ray._private.services as services

    if getattr(services.get_node, "_patient", False):
        return
    plain = services.get_node

    def get_node(gcs_address: str, node_id: str) -> Any:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return plain(gcs_address, node_id)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    get_node._patient = True  # type: ignore[attr-defined]
    services.get_node = get_node


def _children() -> set[int]:
    """Ids of this process's direct children."""
    me, out = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2 :].split()[1]) == me:
                out.add(int(entry))
    return out


def start_ray() -> None:
    """A local Ray of its own (never ``ray stop``: other Rays on the machine stay up)."""
    import ray

    if ray.is_initialized():
        return
    _patient_node_registration()
    attempts = 4
    for attempt in range(attempts):
        before = _children()
        try:
            ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:  # a busy machine sometimes times the node start out: again
            # a failed start leaves its GCS and helpers running: end those (ours, by id)
            for pid in _children() - before:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if attempt == attempts - 1:
                raise
            print(f"ray.init failed ({exc}); retrying in 60 s (load {loadavg()})", flush=True)
            time.sleep(60)
    from i2m2_ray.data.base import quiet_data_context

    quiet_data_context()


def sample(out_root: Path, size: str) -> tuple[Path, Path]:
    """The generated fastMRI sample of one size, written once."""
    from i2m2_ray.data.fastmri_sample import write_sample

    s = SIZES[size]
    root = out_root / "_samples" / f"fastmri-{size}"
    marker = root / "sample.json"
    if not marker.is_file() or json.loads(marker.read_text()) != s:
        write_sample(root, seed=0, **s)
        marker.write_text(json.dumps(s))
    return root / "knee", root / "Annotations"


def fastmri_config(size: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    s = SIZES[size]
    return load_config(
        REPO / "configs" / "fastmri_demo.yaml",
        [
            f"data.crop_size={s['crop']}",
            f"data.pad_width={s['pad_width']}",
            *MODELS[size],
            "product.init=scratch",
            "train.patience=1000",
            "run.num_workers=1",
            "run.cpus_per_worker=1",
            *overrides,
        ],
    )


def median_after_first(values: Sequence[float]) -> float:
    """Median over epochs, leaving out the first (start-up) where there are more."""
    return float(statistics.median(values[1:] if len(values) > 1 else values))


# ---------------------------------------------------------------------------- training


def fit_request(cfg: ExperimentConfig, prepared: Any, folder: str, workers: int = 1) -> Any:
    """The project's request for the I2M2 model (as the pipeline builds it) on ``workers``."""
    from i2m2_ray.training.launch import FitRequest

    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, num_workers=workers))
    return FitRequest.from_config(
        cfg,
        prepared,
        "i2m2",
        storage_path=folder,
        checkpoint_path=Path(folder) / "model.pt",
        run_name=f"bench-i2m2-{workers}w-{time.time_ns()}",
    )


def ray_fit(
    cfg: ExperimentConfig, prepared: Any, workers: int, datasets: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train I2M2 with Ray Train (the project's ``fit``); per-epoch samples/s and peak RSS."""
    from i2m2_ray.training.launch import fit

    with tempfile.TemporaryDirectory(prefix="i2m2bench") as tmp:
        req = fit_request(cfg, prepared, tmp, workers)
        if datasets is not None:
            req.datasets = datasets
        t0 = time.perf_counter()
        res = fit(req)
        wall = time.perf_counter() - t0
    rates = [float(h["samples_per_s"]) for h in res.history]
    cpu_rates = [float(h.get("samples_per_cpu_s", float("nan"))) for h in res.history]
    return {
        "samples_per_s_epochs": rates,
        "samples_per_s": median_after_first(rates),
        "samples_per_cpu_s_epochs": cpu_rates,
        "samples_per_cpu_s": median_after_first(cpu_rates),
        "peak_rss_mb": max(float(h.get("peak_rss_mb", float("nan"))) for h in res.history),
        "wall_s": wall,
    }


def materialise(ds: Any) -> dict[str, np.ndarray]:
    """A Ray Dataset's columns as in-memory arrays (read once, before any timing)."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def plain_fit(cfg: ExperimentConfig, prepared: Any, arrays: dict[str, np.ndarray], epochs: int) -> dict[str, Any]:
    """The same model, step and batch size in one process: tensors in memory, a random
    permutation per epoch, no Ray."""
    import torch

    from i2m2_ray.training.loop import StepSettings, make_optimizer, param_groups, train_epoch
    from i2m2_ray.training.worker import make_model, seed_everything

    torch.set_num_threads(1)  # as each Ray Train worker (cpus_per_worker=1)
    seed_everything(cfg.run.seed)
    with tempfile.TemporaryDirectory(prefix="i2m2bench") as tmp:
        lc = fit_request(cfg, prepared, tmp).loop
    model = make_model(lc)
    t = cfg.training(lc.paradigm)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(param_groups(model, t.head_lr_mult), t)
    weights = {h: torch.tensor(w, dtype=torch.float32) for h, w in lc.class_weights.items()}
    data = {k: torch.from_numpy(v) for k, v in arrays.items()}
    n = len(next(iter(data.values())))
    bs = t.batch_size
    settings = StepSettings.from_config(t)
    g = torch.Generator().manual_seed(cfg.run.seed)
    rates, cpu_rates = [], []
    t_all = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        t0, c0 = time.perf_counter(), time.process_time()
        batches = ({k: v[idx] for k, v in data.items()} for idx in order.split(bs))
        seen, _ = train_epoch(model, batches, lc.spec, optimizer, params, weights, settings)
        rates.append(seen / (time.perf_counter() - t0))
        cpu_rates.append(seen / max(time.process_time() - c0, 1e-9))
    torch.set_num_threads(os.cpu_count() or 1)
    return {
        "samples_per_s_epochs": rates,
        "samples_per_s": median_after_first(rates),
        "samples_per_cpu_s_epochs": cpu_rates,
        "samples_per_cpu_s": median_after_first(cpu_rates),
        "wall_s": time.perf_counter() - t_all,
    }


def prepared_dataset(name: str, cfg: ExperimentConfig, out_root: Path, size: str) -> Any:
    from i2m2_ray.data import get_dataset

    return get_dataset(name).load(cfg, out_root / "_samples" / f"{name}-{size}")


def dataset_config(name: str, tiny: bool, epochs: int) -> ExperimentConfig:
    from i2m2_ray.cli.common import smoke_overrides

    common = [
        f"train.epochs={epochs}",
        f"product.epochs={epochs}",
        "train.patience=1000",
        "run.num_workers=1",
        "run.cpus_per_worker=1",
    ]
    smoke = smoke_overrides(name) if tiny else []  # configs/smoke/<name>.yaml
    return load_config(REPO / "configs" / f"{name}_demo.yaml", [*smoke, "product.init=scratch", *common])


# ---------------------------------------------------------------------------- tables


def bench_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Ray Train + Ray Data vs a plain loop: same model, data, batch size, one worker."""
    from i2m2_ray.data import dataset_names

    start_ray()
    epochs = 2 if args.tiny else args.epochs
    rows, out = [], {}
    for name in args.datasets:
        if name not in dataset_names():
            print(f"{name}: not a registered dataset; skipped", flush=True)
            continue
        try:
            res = _overhead_one(name, args, epochs)
        except Exception as exc:  # e.g. a dataset module still in progress: keep the others
            print(f"{name}: failed: {type(exc).__name__}: {exc}", flush=True)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[name] = res
        base = res["plain"]["samples_per_s"]
        rows.append([name, "plain PyTorch (in memory)", base, 1.0, res["plain"]["samples_per_cpu_s"], 1.0])
        for arm, label in OVERHEAD_ARMS.items():
            r = res[arm]
            rows.append([name, f"Ray Train + Ray Data ({label})", r["samples_per_s"], r["ratio_to_plain"],
                         r["samples_per_cpu_s"], r["cpu_ratio_to_plain"]])  # fmt: skip
        if "rounds" in res:
            rd = res["rounds"]
            label = f"held (default), median (range) of {len(rd['per_round'])} interleaved rounds"
            rows.append([name, label, "", spread(rd["ratio_median"], rd["ratio_range"]), "",
                         spread(rd["cpu_ratio_median"], rd["cpu_ratio_range"])])  # fmt: skip
    print(table(["dataset", "loop", "samples/s", "ratio", "samples per worker CPU-s", "ratio"], rows))
    return {"datasets": out, "target_ratio": 0.9}


OVERHEAD_ARMS = {
    "ray_streaming": "streaming, every epoch",
    "ray_materialized": "materialized",
    "ray_held": "held after epoch 1 (default)",
}


def with_train(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def _overhead_one(name: str, args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    """One dataset's arms: the plain loop; Ray Train + Ray Data streaming every epoch,
    materialized, and held in the worker after the first epoch (``train.in_memory_mb``)."""
    cfg = dataset_config(name, args.tiny, epochs)
    prepared = prepared_dataset(name, cfg, args.out_root, "tiny" if args.tiny else "demo")
    arrays = materialise(prepared.datasets["train"])
    res: dict[str, Any] = {
        "train_samples": prepared.sizes["train"],
        "batch_size": cfg.train.batch_size,
        "epochs": epochs,
        "model": dict(cfg.to_dict()["model"]),
    }
    res["load_before"] = loadavg()
    res["plain"] = plain_fit(cfg, prepared, arrays, epochs)
    res["load_after_plain"] = loadavg()
    streamed = with_train(cfg, in_memory_mb=0)  # every epoch through Ray Data, as before train.in_memory_mb
    res["ray_streaming"] = ray_fit(streamed, prepared, 1)
    res["load_after_streaming"] = loadavg()
    res["ray_materialized"] = ray_fit(streamed, prepared, 1, {k: v.materialize() for k, v in prepared.datasets.items()})
    res["load_after_materialized"] = loadavg()
    res["ray_held"] = ray_fit(cfg, prepared, 1)  # the pipelines' mode: streamed once, then held
    res["load_after"] = loadavg()
    for arm in OVERHEAD_ARMS:
        res[arm]["ratio_to_plain"] = res[arm]["samples_per_s"] / res["plain"]["samples_per_s"]
        res[arm]["cpu_ratio_to_plain"] = res[arm]["samples_per_cpu_s"] / res["plain"]["samples_per_cpu_s"]
    if args.repeats > 1:
        res["rounds"] = held_rounds(cfg, prepared, arrays, epochs, args.repeats, res)
    return res


def spread(median: float, bounds: Sequence[float]) -> str:
    return f"{median:.2f} ({bounds[0]:.2f}-{bounds[1]:.2f})"


def held_rounds(
    cfg: ExperimentConfig,
    prepared: Any,
    arrays: dict[str, np.ndarray],
    epochs: int,
    repeats: int,
    first: dict[str, Any],
) -> dict[str, Any]:
    """The default arm (held) against the plain loop, ``repeats`` times: the first round is
    the one above, each later one runs the two back to back, in alternating order, so that
    the machine's drift over minutes falls on both arms alike. Ratios per round and their
    median and range."""
    rounds = [
        {"plain": first["plain"], "ray_held": first["ray_held"], "order": "plain, held", "load": first["load_before"]}
    ]
    for r in range(1, repeats):
        load = loadavg()
        held_first = r % 2 == 1
        held = ray_fit(cfg, prepared, 1) if held_first else None
        plain = plain_fit(cfg, prepared, arrays, epochs)
        held = held or ray_fit(cfg, prepared, 1)
        order = "held, plain" if held_first else "plain, held"
        rounds.append({"plain": plain, "ray_held": held, "order": order, "load": load})
    for rd in rounds:
        rd["ratio"] = rd["ray_held"]["samples_per_s"] / rd["plain"]["samples_per_s"]
        rd["cpu_ratio"] = rd["ray_held"]["samples_per_cpu_s"] / rd["plain"]["samples_per_cpu_s"]
    ratios, cpu = [rd["ratio"] for rd in rounds], [rd["cpu_ratio"] for rd in rounds]
    return {
        "per_round": rounds,
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "cpu_ratio_median": statistics.median(cpu),
        "cpu_ratio_range": [min(cpu), max(cpu)],
    }


def torch_preprocess(slices: Sequence[Any], pad: int, crop: int) -> tuple[Any, Any]:
    """The preprocessing in bare torch: ``(H, W_i)`` complex k-space slices -> magnitude
    (standardised per slice) and phase / pi, ``(B, crop, crop)``."""
    import torch

    h = slices[0].shape[0]
    k = torch.zeros(len(slices), h, pad, dtype=torch.complex64)
    for i, sl in enumerate(slices):  # zero-fill to the pad width, centred
        left = (pad - sl.shape[-1]) // 2
        k[i, :, left : left + sl.shape[-1]] = torch.from_numpy(sl)
    img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    top, lft = (h - crop) // 2, (pad - crop) // 2
    img = img[..., top : top + crop, lft : lft + crop]
    mag = img.abs()
    mag = (mag - mag.mean(dim=(-2, -1), keepdim=True)) / (mag.std(dim=(-2, -1), keepdim=True) + 1e-8)
    return mag, img.angle() / torch.pi


def _pipeline_size(size: str, args: argparse.Namespace, cores: int, rounds: int) -> dict[str, Any]:
    import h5py
    import torch

    from i2m2_ray.data.base import label_column
    from i2m2_ray.data.fastmri import (
        LABELS,
        SlicePreprocessor,
        build_index,
        image_to_modalities,
        kspace_to_image,
        slice_batch_size,
        slice_dataset,
    )

    s = SIZES[size]
    data_dir, ann = sample(args.out_root, size)
    cfg = fastmri_config(size)
    index, _ = build_index(cfg, data_dir, ann)
    raw = []  # the same slices in memory, as read from the files
    for r in index:
        with h5py.File(r["path"], "r") as f:
            raw.append(f["kspace"][r["slice"]])
    # every path goes over the slices several times, so that a run lasts seconds: Ray's
    # per-execution start-up is amortised and CPU time (10 ms ticks) is resolved
    repeat = 1 if args.tiny else max(1, args.slices // len(raw))
    index, raw = index * repeat, raw * repeat
    n = len(raw)
    pad, crop, bs = s["pad_width"], s["crop"], 16
    chunks = [raw[i : i + bs] for i in range(0, n, bs)]

    def torch_fft() -> None:
        for chunk in chunks:
            torch_preprocess(chunk, pad, crop)

    def numpy_compute() -> None:
        for chunk in chunks:
            k = np.zeros((len(chunk), chunk[0].shape[0], pad), dtype=np.complex64)
            for i, sl in enumerate(chunk):
                left = (pad - sl.shape[-1]) // 2
                k[i, :, left : left + sl.shape[-1]] = sl
            image_to_modalities(kspace_to_image(k, pad, crop))

    prep = SlicePreprocessor(pad, crop)
    cols = {"path": np.array([r["path"] for r in index]), "slice": np.array([r["slice"] for r in index])}
    cols.update({label_column(h): np.array([r[label_column(h)] for r in index]) for h in LABELS})

    udf_bs = slice_batch_size(crop)  # the batches Ray Data hands the same UDF

    def udf_in_process() -> None:
        for i in range(0, n, udf_bs):
            prep({k: v[i : i + udf_bs] for k, v in cols.items()})

    def ray_data() -> None:
        for _ in slice_dataset(index, pad, crop).iter_batches(batch_size=bs, batch_format="numpy"):
            pass

    cpu_rates: dict[str, float] = {}
    idle = {"cpu_per_s": 0.0}

    def rate(fn: Callable[[], None], slices: int = n) -> tuple[float, list[float]]:
        """Median slices/s over the rounds (wall clock); slices per CPU-second of this
        process tree (Ray's processes included) go to ``cpu_rates``, and the same less
        what an idle Ray uses in that wall time (its background threads and processes)."""
        fn()  # warm-up (Ray: worker start-up)
        rates, cpu, busy = [], [], []
        for _ in range(rounds):
            c0, t0 = tree_cpu_seconds(), time.perf_counter()
            fn()
            wall, used = time.perf_counter() - t0, tree_cpu_seconds() - c0
            rates.append(slices / wall)
            cpu.append(slices / max(used, 1e-9))
            busy.append(slices / max(used - idle["cpu_per_s"] * wall, 1e-9))
        cpu_rates[fn.__name__] = float(statistics.median(cpu))
        cpu_rates[fn.__name__ + "_less_idle"] = float(statistics.median(busy))
        return float(statistics.median(rates)), rates

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    res: dict[str, Any] = {"slices": n, "kspace": [s["height"], s["width"]], "pad": pad, "crop": crop}
    res["load_before"] = loadavg()
    res["torch_fft_1core"], res["torch_fft_rounds"] = rate(torch_fft)
    res["numpy_compute_1core"], _ = rate(numpy_compute)
    res["udf_in_process_1core"], _ = rate(udf_in_process)
    res["udf_batch"] = udf_bs
    torch.set_num_threads(threads)
    start_ray()  # only now: the in-process figures above run without Ray's processes
    time.sleep(2)
    c0, t0 = tree_cpu_seconds(), time.perf_counter()
    time.sleep(3 if args.tiny else 10)
    idle["cpu_per_s"] = (tree_cpu_seconds() - c0) / (time.perf_counter() - t0)
    res["ray_idle_cpu_per_s"] = idle["cpu_per_s"]
    res["ray_data"], res["ray_data_rounds"] = rate(ray_data)
    res["slices_per_run"] = n
    res["ray_data_per_core"] = res["ray_data"] / cores
    res["ratio_per_core"] = res["ray_data_per_core"] / res["torch_fft_1core"]
    # the same per CPU-second used (robust to other jobs on the machine)
    res["per_cpu_second"] = dict(cpu_rates)
    res["ratio_per_cpu_second"] = cpu_rates["ray_data"] / cpu_rates["torch_fft"]
    res["ratio_per_cpu_second_less_idle"] = cpu_rates["ray_data_less_idle"] / cpu_rates["torch_fft"]
    res["ray_data_to_udf_per_cpu_second"] = cpu_rates["ray_data"] / cpu_rates["udf_in_process"]  # Ray's own cost
    res["load_after"] = loadavg()
    return res


def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """fastMRI slices/s: read -> inverse FFT -> crop -> magnitude/phase."""
    sizes = ["tiny"] if args.tiny else args.sizes
    rounds = 2 if args.tiny else 3
    cores = min(RAY_CPUS, os.cpu_count() or 1)
    out: dict[str, Any] = {"cores_for_ray_data": cores, "sizes": {}}
    rows = []
    for size in sizes:
        s = SIZES[size]
        res = _pipeline_size(size, args, cores, rounds)
        pad, crop = s["pad_width"], s["crop"]
        out["sizes"][size] = res
        tag = f"{size} ({s['height']}x{s['width']}->{pad}, crop {crop})"
        c = res["per_cpu_second"]
        t = res["torch_fft_1core"]
        rows += [
            [tag, "bare torch.fft, in memory, 1 thread", t, 1.0, c["torch_fft"], 1.0],
            [
                tag,
                "project numpy/scipy compute, in memory",
                res["numpy_compute_1core"],
                res["numpy_compute_1core"] / t,
                c["numpy_compute"],
                c["numpy_compute"] / c["torch_fft"],
            ],  # fmt: skip
            [
                tag,
                f"project UDF in-process (HDF5 read + compute, {res['udf_batch']} per call)",
                res["udf_in_process_1core"],
                res["udf_in_process_1core"] / t,
                c["udf_in_process"],
                c["udf_in_process"] / c["torch_fft"],
            ],  # fmt: skip
            [
                tag,
                f"Ray Data map_batches (wall / {cores} cores)",
                res["ray_data_per_core"],
                res["ratio_per_core"],
                c["ray_data"],
                res["ratio_per_cpu_second"],
            ],  # fmt: skip
            [
                tag,
                "Ray Data, less idle Ray's CPU",
                "",
                "",
                c["ray_data_less_idle"],
                res["ratio_per_cpu_second_less_idle"],
            ],  # fmt: skip
        ]
    print(table(["size", "path", "slices/s/core (wall)", "ratio", "slices per CPU-s", "ratio"], rows))
    return {**out, "target_ratio": 0.8}


def bench_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Step time of I2M2 against the sum of its experts' step times (plain torch, 1 thread)."""
    import torch

    from i2m2_ray.data.fastmri import LABELS, MODALITIES
    from i2m2_ray.models import build_model, encoder_factory
    from i2m2_ray.spec import TaskSpec
    from i2m2_ray.training.loop import StepSettings, train_epoch

    spec = TaskSpec(MODALITIES, {h: 2 for h in LABELS})
    torch.set_num_threads(1)
    sizes = ["tiny"] if args.tiny else args.sizes
    models = ["unimodal_magnitude", "unimodal_phase", "inter", "i2m2"]
    out: dict[str, Any] = {"sizes": {}}
    rows = []
    for size in sizes:
        cfg = fastmri_config(size)
        crop, bs = cfg.data.crop_size, cfg.train.batch_size
        build_encoder = encoder_factory({"inputs": {m: [1, crop, crop] for m in MODALITIES}})  # the data's facts
        if size == "full":
            bs = args.full_batch  # a ResNet-18 step at 320x320 takes seconds per sample on one core
        g = torch.Generator().manual_seed(0)
        batch = {m: torch.randn(bs, 1, crop, crop, generator=g) for m in MODALITIES}
        batch.update({f"y_{h}": torch.randint(0, 2, (bs,), generator=g) for h in LABELS})
        built = {}
        for p in models:
            torch.manual_seed(0)
            model = build_model(p, spec, cfg.model, build_encoder)
            params = [q for q in model.parameters() if q.requires_grad]
            built[p] = (model, params, torch.optim.AdamW(params, lr=1e-4))
        steps = 1 if args.tiny or size == "full" else args.steps
        times: dict[str, list[float]] = {p: [] for p in models}
        cpu_times: dict[str, list[float]] = {p: [] for p in models}
        load_before = loadavg()
        rounds = 1 if args.tiny else (args.rounds if size != "full" else min(args.rounds, 2))
        for r in range(rounds + 1):  # round 0 warms up; models interleaved in every round
            for p in models:
                model, params, opt = built[p]
                t0, c0 = time.perf_counter(), time.process_time()
                train_epoch(model, [batch] * steps, spec, opt, params, {}, StepSettings())
                if r:
                    times[p].append((time.perf_counter() - t0) / steps)
                    cpu_times[p].append((time.process_time() - c0) / steps)
        med = {p: float(statistics.median(v)) for p, v in times.items()}
        cpu_med = {p: float(statistics.median(v)) for p, v in cpu_times.items()}
        ratio = med["i2m2"] / (med["unimodal_magnitude"] + med["unimodal_phase"] + med["inter"])
        cpu_ratio = cpu_med["i2m2"] / (cpu_med["unimodal_magnitude"] + cpu_med["unimodal_phase"] + cpu_med["inter"])
        out["sizes"][size] = {
            "crop": crop,
            "batch_size": bs,
            "model": dict(cfg.to_dict()["model"]),
            "step_s": med,
            "step_s_rounds": times,
            "ratio": ratio,
            # one thread: CPU time per step is the work done, whatever else runs on the machine
            "step_cpu_s": cpu_med,
            "cpu_ratio": cpu_ratio,
            "load_before": load_before,
            "load_after": loadavg(),
        }
        for p in models:
            rows.append([size, p, med[p] * 1e3, "", cpu_med[p] * 1e3, ""])
        rows.append([size, "i2m2 / sum of experts", "", ratio, "", cpu_ratio])
    torch.set_num_threads(os.cpu_count() or 1)
    print(table(["size", "model", "step ms (wall)", "ratio", "step CPU ms", "ratio"], rows))
    return {**out, "target_ratio": 1.05}


def bench_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Ray Train with 1 and 2 workers (1 CPU each) on the same data."""
    start_ray()
    size = "tiny" if args.tiny else "demo"
    epochs = 2 if args.tiny else args.epochs
    cfg = fastmri_config(size, [f"product.epochs={epochs}"])
    data_dir, ann = sample(args.out_root, "demo" if not args.tiny else "tiny")
    from i2m2_ray.data.fastmri import prepare

    prepared = prepare(cfg, data_dir, ann)
    out: dict[str, Any] = {"size": size, "train_samples": prepared.sizes["train"], "epochs": epochs, "runs": {}}
    rows = []
    for mode in args.data:
        datasets = prepared.datasets
        if mode == "materialized":
            datasets = {k: v.materialize() for k, v in datasets.items()}
        for workers in (1, 2):
            before = loadavg()
            res = ray_fit(cfg, prepared, workers, datasets)
            res.update(load_before=before, load_after=loadavg())
            out["runs"][f"{mode}-{workers}"] = res
        one, two = out["runs"][f"{mode}-1"]["samples_per_s"], out["runs"][f"{mode}-2"]["samples_per_s"]
        out["runs"][f"{mode}-2"]["speedup"] = two / one
        rows += [[mode, 1, one, 1.0], [mode, 2, two, two / one]]
    print(table(["data", "workers (1 CPU each)", "samples/s", "speed-up"], rows))
    return out


def _rss_column(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data UDF fused after the preprocessing: this worker's peak RSS so far (MiB)."""
    n = len(next(iter(batch.values())))
    return {"rss_mb": np.full(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)}


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak resident memory: the Ray Train worker (I2M2, 1 epoch) and the Ray Data workers."""
    from i2m2_ray.data.fastmri import build_index, prepare, slice_dataset

    start_ray()
    sizes = ["tiny"] if args.tiny else args.sizes
    out: dict[str, Any] = {"sizes": {}}
    rows = []
    runs = [(size, None) for size in sizes if size != "full"]
    if "full" in sizes:  # the full model at a few small batches (a CPU step at 32 takes minutes)
        runs += [("full", b) for b in args.memory_batches]
    for size, batch in runs:
        data_size = "fullmem" if size == "full" else size
        cfg = fastmri_config(data_size, ["product.epochs=1", *([f"train.batch_size={batch}"] if batch else [])])
        data_dir, ann = sample(args.out_root, data_size)
        index, _ = build_index(cfg, data_dir, ann)
        ds = slice_dataset(index, cfg.data.pad_width, cfg.data.crop_size).map_batches(_rss_column, batch_format="numpy")
        data_rss = max(float(b["rss_mb"].max()) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
        prepared = prepare(cfg, data_dir, ann)
        before = loadavg()
        res = ray_fit(cfg, prepared, 1)
        key = f"{size}-batch{cfg.train.batch_size}"
        out["sizes"][key] = {
            "crop": cfg.data.crop_size,
            "batch_size": cfg.train.batch_size,
            "model": dict(cfg.to_dict()["model"]),
            "train_samples": prepared.sizes["train"],
            "train_worker_peak_rss_mb": res["peak_rss_mb"],
            "data_worker_peak_rss_mb": data_rss,
            "train_wall_s": res["wall_s"],
            "load_before": before,
            "load_after": loadavg(),
        }
        rows.append([size, cfg.data.crop_size, cfg.train.batch_size, res["peak_rss_mb"], data_rss])
    print(table(["size", "crop", "batch", "train worker peak RSS MiB", "data worker peak RSS MiB"], rows))
    return out


BENCHES: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "overhead": ("ray_overhead", bench_overhead),
    "pipeline": ("data_pipeline", bench_pipeline),
    "cost": ("i2m2_cost", bench_cost),
    "scaling": ("scaling", bench_scaling),
    "memory": ("memory", bench_memory),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", choices=[*BENCHES, "all"])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: the smoke test")
    ap.add_argument("--out-root", type=Path, default=REPO / "outputs" / "benchmarks")
    ap.add_argument("--datasets", nargs="+", default=["fastmri", "avmnist"], help="overhead: datasets")
    ap.add_argument("--epochs", type=int, default=5, help="overhead, scaling: epochs per run")
    ap.add_argument("--repeats", type=int, default=1,
                    help="overhead: rounds of the default (held) arm against the plain loop, interleaved")  # fmt: skip
    ap.add_argument("--sizes", nargs="+", default=["demo", "full"], choices=list(SIZES), help="pipeline, cost, memory")
    ap.add_argument("--slices", type=int, default=400, help="pipeline: slices per timed run (the index repeated)")
    ap.add_argument("--steps", type=int, default=5, help="cost: steps per timing")
    ap.add_argument("--rounds", type=int, default=5, help="cost: timed rounds (models interleaved)")
    ap.add_argument("--full-batch", type=int, default=2, help="cost: batch at 320x320 on the CPU")
    ap.add_argument("--memory-batches", nargs="+", type=int, default=[2, 4], help="memory: batches at full size")
    ap.add_argument("--data", nargs="+", default=["streaming", "materialized"], help="scaling: data modes")
    args = ap.parse_args(argv)
    if args.tiny:
        args.rounds = 1
    names = list(BENCHES) if args.table == "all" else [args.table]
    info = machine()
    for key in names:
        name, fn = BENCHES[key]
        print(f"== {key}: load average {loadavg()} on {info['logical_cpus']} CPUs ({info['cpu']})", flush=True)
        t0 = time.perf_counter()
        result = fn(args)
        result.update(
            machine=info,
            command=" ".join(["python", "benchmarks/perf.py", *(argv if argv is not None else sys.argv[1:])]),
            tiny=args.tiny,
            wall_s=time.perf_counter() - t0,
            finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
        print(f"wrote {write(args.out_root, name, result)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
