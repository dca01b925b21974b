"""fastMRI I2M2 training throughput on one GPU, the paper's knee network, lever by lever.

Builds the I2M2 model of ``configs/fastmri.yaml`` (magnitude and phase, 320x320; three
PreAct-ResNet-18 knee networks: 3x3 stride-1 stem, no max-pool, GroupNorm 32, 10x10 pool,
51,200 features, four 2-way heads; early-fusion inter expert) and trains it with the
project's step (``i2m2_ray.training.loop.train_epoch``) on random data, side by side:

* the current path: images already on the device; fp32, bf16 autocast, + channels_last;
* the levers, added one at a time: fused AdamW; the two unimodal experts as one grouped
  network (``i2m2_ray.models.grouped``), then all three; raw complex k-space slices of the
  real size (640 x 368, zero-filled to 400, cropped to 320) turned into magnitude and
  phase on the device inside the step (``i2m2_ray.models.kspace``);
* larger batches per GPU, the learning rate scaled linearly (``lr = product.lr x B / 16``,
  the config's batch 16);
* ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) at the fastest batch;
* the data wait per step: the compiled (or best) model fed by a loader-like thread that
  pins host k-space batches and copies them on a side stream, against batches already on
  the device.

Reported per row: samples/s, model TFLOP/s (FLOPs per sample counted once with
``torch.utils.flop_counter.FlopCounterMode``), the fraction of a bf16 matrix product
measured in the same run (and of the datasheet), peak GPU memory and the time each step
waited for its batch. Results are written after every row, so a run cut short keeps them.

No Ray, MLflow or data files: it measures the training step, the part a GPU changes.

    python benchmarks/gpu_fastmri.py --out outputs/benchmarks/gpu_fastmri/results.json
    python benchmarks/gpu_fastmri.py --tiny          # CPU, seconds: what the smoke test runs
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from i2m2_ray.config import ModelConfig, load_config  # noqa: E402
from i2m2_ray.models.build import build_model  # noqa: E402
from i2m2_ray.models.encoders import PreActResNet  # noqa: E402
from i2m2_ray.models.experts import ProductOfExperts  # noqa: E402
from i2m2_ray.models.grouped import GroupedProduct  # noqa: E402
from i2m2_ray.models.kspace import FromKspace, KspaceToModalities  # noqa: E402
from i2m2_ray.spec import TaskSpec  # noqa: E402
from i2m2_ray.training.loop import StepSettings, train_epoch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LABELS = ("abnormal", "acl", "cartilage", "mtear")
SPEC = TaskSpec(("magnitude", "phase"), {h: 2 for h in LABELS})
KSPACE_SPEC = TaskSpec(("kspace",), {h: 2 for h in LABELS})  # the step's input when k-space is shipped
# bf16 dense tensor-core peak from the datasheets (no sparsity), TFLOP/s
DATASHEET_BF16 = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
KNEE_OPTIONS = {"stem": "knee", "pool_size": 10, "final_norm": False}  # the recipe's knee network
Batch = dict[str, Tensor]


# ----------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Sizes:
    """k-space ``height x width`` zero-filled to ``pad`` columns, cropped to ``crop``."""

    height: int
    width: int
    pad: int
    crop: int


@dataclass(frozen=True)
class Variant:
    """One way of running the I2M2 step."""

    name: str
    batch: int
    precision: str = "fp32"
    channels_last: bool = False
    fused: bool = False  # torch.optim.AdamW(fused=True)
    grouped: tuple[str, ...] = ()  # experts run as one grouped network
    kspace: bool = False  # the step is fed k-space and computes magnitude/phase on the device
    compile_mode: str = ""  # torch.compile mode ("" = eager)

    def settings(self) -> StepSettings:
        # the loop's channels_last only touches 4-D inputs: k-space (3-D) passes as it is
        return StepSettings(precision=self.precision, channels_last=self.channels_last, head_reduction="sum")


def encoder_factory(cfg: ModelConfig) -> Callable[[Sequence[str], ModelConfig], nn.Module]:
    opts = {**KNEE_OPTIONS, **cfg.options}

    def build(modalities: Sequence[str], c: ModelConfig) -> nn.Module:
        return PreActResNet(
            in_channels=len(modalities),
            width=c.width,
            blocks=c.blocks,
            groups=c.groups,
            stem=str(opts["stem"]),
            pool_size=int(opts["pool_size"]),
            final_norm=bool(opts["final_norm"]),
        )

    return build


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_kspace(n: int, sizes: Sizes, generator: torch.Generator) -> Tensor:
    shape = (n, sizes.height, sizes.width)
    return torch.complex(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))


def labels(n: int, generator: torch.Generator) -> Batch:
    return {f"y_{h}": torch.randint(0, 2, (n,), generator=generator) for h in LABELS}


def kspace_batches(count: int, batch: int, sizes: Sizes, seed: int = 0) -> list[Batch]:
    """Host batches of raw k-space (``(B, H, W)`` complex64) and labels."""
    g = torch.Generator().manual_seed(seed)
    return [{"kspace": random_kspace(batch, sizes, g), **labels(batch, g)} for _ in range(count)]


def to_device(batches: Sequence[Batch], device: torch.device, sizes: Sizes, images: bool) -> list[Batch]:
    """The batches on the device, as k-space or as the images the CPU pipeline would ship."""
    transform = KspaceToModalities(sizes.pad, sizes.crop)
    out = []
    for b in batches:
        d = {k: v.to(device) for k, v in b.items()}
        if images:
            d.update(transform(d.pop("kspace")))
        out.append(d)
    return out


# ----------------------------------------------------------------------------- models


class StepBegin(nn.Module):
    """Marks a new iteration for CUDA-graph trees before each call (the previous step's
    graph outputs are dead by then), so replays never wait on outputs still alive."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        torch.compiler.cudagraph_mark_step_begin()
        out: dict[str, Tensor] = self.inner(inputs)
        return out


def build_i2m2(
    cfg: ModelConfig, device: torch.device, v: Variant, sizes: Sizes
) -> tuple[nn.Module, list[nn.Parameter]]:
    """The I2M2 model of a variant (wrapped for k-space input and compilation) and its
    trainable parameters."""
    torch.manual_seed(0)
    product = build_model("i2m2", SPEC, cfg, encoder_factory(cfg))
    assert isinstance(product, ProductOfExperts)
    model: nn.Module = GroupedProduct(product, v.grouped) if v.grouped else product
    del product
    model = model.to(device)
    if v.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for p in model.parameters() if p.requires_grad]
    if v.compile_mode:
        model = torch.compile(model, mode=v.compile_mode)  # type: ignore[assignment]
        if v.compile_mode == "reduce-overhead":
            model = StepBegin(model)
    if v.kspace:
        model = FromKspace(KspaceToModalities(sizes.pad, sizes.crop), model)
    return model, params


def flops_per_sample(cfg: ModelConfig, device: torch.device, batch: Batch, sizes: Sizes) -> float:
    """Forward + backward FLOPs of one I2M2 step per sample (convolutions and matrix
    products; the FFT and the optimizer are not counted)."""
    model, params = build_i2m2(cfg, device, Variant("count", 0), sizes)
    opt = torch.optim.SGD(params, lr=0.0)
    counter = FlopCounterMode(display=False)
    with counter:
        train_epoch(model, [batch], SPEC, opt, params, {}, StepSettings(head_reduction="sum"))
    n = next(iter(batch.values())).shape[0]
    return counter.get_total_flops() / n


# ----------------------------------------------------------------------------- feeding


class TimedIter:
    """Yields from ``source`` and records how long each ``next`` blocked: the step's wait
    for its batch."""

    def __init__(self, source: Iterable[Batch]) -> None:
        self.source = source
        self.wait_s: list[float] = []

    def __iter__(self) -> Iterator[Batch]:
        it = iter(self.source)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.wait_s.append(time.perf_counter() - t0)
            yield item


class HostFeeder:
    """``n`` host batches moved to the device as a data loader's prefetching thread moves
    them: a producer thread pins each batch (as ``iter_torch_batches(pin_memory=True)``
    does), copies it to the device on a side stream without blocking and queues it with an
    event, up to ``depth`` batches ahead; the consumer's stream waits on the event (no host
    synchronisation). On the CPU the copy is a clone."""

    def __init__(self, host: Sequence[Batch], n: int, device: torch.device, depth: int = 2) -> None:
        self.host, self.n, self.device = host, n, device
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for i in range(self.n):
                src = self.host[i % len(self.host)]
                event = None
                if self.stream is not None:
                    pinned = {k: v.pin_memory() for k, v in src.items()}
                    with torch.cuda.stream(self.stream):
                        batch = {k: v.to(self.device, non_blocking=True) for k, v in pinned.items()}
                        event = torch.cuda.Event()
                        event.record(self.stream)
                else:
                    batch = {k: v.clone() for k, v in src.items()}
                if not self._put((batch, event)):
                    return
            self._put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def __iter__(self) -> Iterator[Batch]:
        thread = threading.Thread(target=self._produce, daemon=True)
        thread.start()
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for v in batch.values():
                        v.record_stream(current)  # allocated on the side stream, used on this one
                yield batch
        finally:
            self.stop.set()
            thread.join()


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    step_s: list[float] = field(default_factory=list)  # per repeat: seconds per step
    wait_s: list[float] = field(default_factory=list)  # per repeat: batch wait per step
    warmup_s: float = 0.0
    steps: int = 0


def time_steps(
    run: Callable[[int], tuple[float, float]],
    warmup: int,
    repeats: int,
    target_s: float,
    max_steps: int,
) -> Timing:
    """``run(n)`` trains ``n`` steps and returns (seconds, seconds waited for batches).
    After ``warmup`` steps (compilation, cuDNN autotuning, allocator growth) and one probe
    step, ``repeats`` timings of as many steps as fill ``target_s`` between them."""
    t = Timing()
    t0 = time.perf_counter()
    run(warmup)
    t.warmup_s = time.perf_counter() - t0
    probe, _ = run(1)
    t.steps = max(2, min(max_steps, math.ceil(target_s / repeats / max(probe, 1e-6))))
    for _ in range(repeats):
        sec, wait = run(t.steps)
        t.step_s.append(sec / t.steps)
        t.wait_s.append(wait / t.steps)
    return t


def matmul_tflops(device: torch.device, n: int) -> float:
    """bf16 matrix product rate on random data: this card's practical ceiling."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def h2d_copy(device: torch.device, tensors: Mapping[str, Tensor]) -> dict[str, float]:
    """Host-to-device GB/s of each tensor, pageable and pinned."""
    if device.type != "cuda":
        return {}
    out: dict[str, float] = {}
    for label, x in tensors.items():
        for kind, src in (("pageable", x), ("pinned", x.pin_memory())):
            for _ in range(2):
                src.to(device, non_blocking=True)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(5):
                src.to(device, non_blocking=True)
            sync(device)
            out[f"{label}_{kind}_gb_per_s"] = x.numel() * x.element_size() * 5 / (time.perf_counter() - t0) / 1e9
        out[f"{label}_mb"] = x.numel() * x.element_size() / 1e6
    return out


def transform_rate(device: torch.device, sizes: Sizes, slices: int) -> float:
    """Slices/s of the k-space -> magnitude/phase transform on the device."""
    g = torch.Generator().manual_seed(0)
    k = random_kspace(slices, sizes, g).to(device)
    transform = KspaceToModalities(sizes.pad, sizes.crop)
    for _ in range(3):
        transform(k)
    sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        transform(k)
    sync(device)
    return slices * reps / (time.perf_counter() - t0)


def transform_check(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Largest differences between the device transform and the project's numpy
    preprocessing (``i2m2_ray.data.fastmri``) on the same k-space."""
    try:
        import numpy as np

        from i2m2_ray.data.fastmri import image_to_modalities, kspace_to_image
    except ImportError as exc:  # the CPU reference moved or numpy/scipy missing: say so, go on
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    k = random_kspace(2, sizes, torch.Generator().manual_seed(1))
    ref = image_to_modalities(kspace_to_image(k.numpy(), sizes.pad, sizes.crop))
    out = {m: v.cpu().numpy() for m, v in KspaceToModalities(sizes.pad, sizes.crop)(k.to(device)).items()}
    phase = np.abs((out["phase"] - ref["phase"] + 1.0) % 2.0 - 1.0)  # phase / pi, modulo 2
    return {
        "magnitude_max_abs_diff": float(np.abs(out["magnitude"] - ref["magnitude"]).max()),
        "phase_max_abs_diff_mod_2": float(phase.max()),
    }


# ----------------------------------------------------------------------------- the run


class Bench:
    """Measures variants one after another within a time budget, saving after each."""

    def __init__(self, args: argparse.Namespace, cfg: Any, device: torch.device, sizes: Sizes) -> None:
        self.args, self.cfg, self.device, self.sizes = args, cfg, device, sizes
        self.start = time.perf_counter()
        self.host: dict[int, list[Batch]] = {}
        self.out_path = Path(args.out)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        t = cfg.training("i2m2")
        self.base_lr, self.base_batch, self.weight_decay = t.lr, t.batch_size, t.weight_decay
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        self.result: dict[str, Any] = {
            "device": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "tiny": args.tiny,
            "sizes": asdict(sizes),
            "model": {
                "width": cfg.model.width,
                "blocks": cfg.model.blocks,
                "groups": cfg.model.groups,
                "options": {**KNEE_OPTIONS, **cfg.model.options},
                "inter_fusion": cfg.model.inter_fusion,
            },
            "lr_rule": f"lr = {self.base_lr:g} x batch / {self.base_batch} (product.lr at train.batch_size, linear)",
            "weight_decay": self.weight_decay,
            "datasheet_bf16_tflops": next((v for k, v in DATASHEET_BF16.items() if k in name), float("nan")),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "variants": [],
            "experts": {},
            "skipped": [],
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save(self) -> None:
        self.result["total_wall_s"] = self.elapsed()
        self.out_path.write_text(json.dumps(self.result, indent=2))

    def skip(self, what: str, why: str) -> None:
        print(f"{what}: skipped ({why})", flush=True)
        self.result["skipped"].append({"name": what, "reason": why})
        self.save()

    def host_batches(self, batch: int) -> list[Batch]:
        if batch not in self.host:
            self.host[batch] = kspace_batches(2, batch, self.sizes, seed=batch)
        return self.host[batch]

    def lr(self, batch: int) -> float:
        return self.base_lr * batch / self.base_batch

    def affordable(self, what: str, cost_s: float) -> bool:
        if self.elapsed() + cost_s > self.args.budget_s:
            self.skip(
                what, f"time budget: {self.elapsed():.0f} s used of {self.args.budget_s:.0f}, ~{cost_s:.0f} needed"
            )
            return False
        return True

    def cuda_only(self, v: Variant) -> str:
        """Why a variant cannot run here ('' when it can)."""
        if self.device.type != "cuda" and v.compile_mode == "reduce-overhead":
            return "CUDA graphs need a CUDA device"
        if self.device.type != "cuda" and v.compile_mode:
            return "torch.compile is measured on the GPU only (minutes of C++ compilation on a CPU)"
        return ""

    def measure(self, v: Variant, feeds: Sequence[str] = ("device",), cost_s: float | None = None) -> dict[str, Any]:
        """Time variant ``v`` fed from each of ``feeds`` (``device``: batches already there;
        ``host``: the loader-like thread). Returns the row (also stored)."""
        reason = self.cuda_only(v)
        if reason:
            self.skip(v.name, reason)
            return {}
        if cost_s is None:
            cost_s = self.args.eager_cost_s * (1 + (len(feeds) - 1) / 2) + (
                self.args.compile_cost_s if v.compile_mode else 0
            )
        if not self.affordable(v.name, cost_s):
            return {}
        row: dict[str, Any] = {**asdict(v), "lr": self.lr(v.batch)}
        self.release()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            self._measure(v, feeds, row)
        except Exception as exc:  # one failing variant (out of memory, say) must not lose the rest
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            print(f"{v.name} @ {v.batch}: failed: {message}", flush=True)
            row["error"] = message
        row["wall_s"] = time.perf_counter() - t0
        self.release()
        self.result["variants"].append(row)
        self.save()
        return row

    def _measure(self, v: Variant, feeds: Sequence[str], row: dict[str, Any]) -> None:
        a, device = self.args, self.device
        model, params = build_i2m2(self.cfg.model, device, v, self.sizes)
        opt = torch.optim.AdamW(params, lr=self.lr(v.batch), weight_decay=self.weight_decay, fused=v.fused or None)
        spec = KSPACE_SPEC if v.kspace else SPEC
        resident = to_device(self.host_batches(v.batch), device, self.sizes, images=not v.kspace)
        host = self.host_batches(v.batch)

        def source(feed: str, n: int) -> Iterable[Batch]:
            if feed == "device":
                return (resident[i % len(resident)] for i in range(n))
            if not v.kspace:
                raise ValueError("the host feeder ships k-space: give the variant kspace=True")
            return HostFeeder(host, n, device, depth=a.prefetch)

        for feed in feeds:

            def run(n: int, feed: str = feed) -> tuple[float, float]:
                batches = TimedIter(source(feed, n))
                sync(device)
                t0 = time.perf_counter()
                train_epoch(model, batches, spec, opt, params, {}, v.settings())  # ends reading the loss
                sync(device)
                return time.perf_counter() - t0, sum(batches.wait_s)

            t = time_steps(run, a.warmup if feed == feeds[0] else 1, a.repeats, a.target_s, a.max_steps)
            step = statistics.median(t.step_s)
            key = "" if feed == "device" else "fed_"
            row.update(
                {
                    f"{key}step_ms": step * 1e3,
                    f"{key}step_ms_all": [s * 1e3 for s in t.step_s],
                    f"{key}samples_per_s": v.batch / step,
                    f"{key}data_wait_ms_per_step": statistics.median(t.wait_s) * 1e3,
                    f"{key}warmup_s": t.warmup_s,
                    f"{key}steps_per_repeat": t.steps,
                }
            )
            if self.result.get("flops_per_sample"):
                tflops = self.result["flops_per_sample"] * v.batch / step / 1e12
                row[f"{key}tflops"] = tflops
                row[f"{key}of_measured_bf16"] = tflops / self.result["matmul_bf16_tflops"]
                row[f"{key}of_datasheet_bf16"] = tflops / self.result["datasheet_bf16_tflops"]
            tflops, frac = row.get(f"{key}tflops", math.nan), row.get(f"{key}of_measured_bf16", math.nan)
            print(
                f"{v.name:44s} b{v.batch:<4d} {feed:6s} {v.batch / step:9.1f} samples/s {step * 1e3:8.1f} ms/step "
                f"{tflops:7.1f} TFLOP/s {frac:6.1%}  wait {row[f'{key}data_wait_ms_per_step']:.2f} ms  "
                f"(warm-up {t.warmup_s:.0f} s)",
                flush=True,
            )
        if "fed_step_ms" in row:  # what feeding from the host adds to a step, waits on the GPU included
            row["fed_overhead_ms_per_step"] = row["fed_step_ms"] - row["step_ms"]
        if device.type == "cuda":
            row["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        if v.compile_mode:
            from torch._dynamo.utils import counters

            row["inductor_counters"] = {k: dict(c) for k, c in counters.items() if k in ("inductor", "stats") and c}
            skips = counters["inductor"].get("cudagraph_skips", 0)
            if v.compile_mode == "reduce-overhead":
                print(f"  compiled: CUDA graphs skipped {skips} time(s) (0: the step ran as graph replays)", flush=True)

    def release(self) -> None:
        """Hand the last model's GPU memory back (after an out-of-memory error too)."""
        if self.device.type == "cuda":
            gc.collect()  # ~1 s with dynamo loaded: only where memory is at stake
            torch.cuda.empty_cache()

    def best(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        ok = [r for r in rows if "samples_per_s" in r]
        return max(ok, key=lambda r: r["samples_per_s"]) if ok else None

    def run(self) -> None:
        a, device, sizes = self.args, self.device, self.sizes
        r = self.result
        r["matmul_bf16_tflops"] = matmul_tflops(device, a.matmul_n)
        host = self.host_batches(a.batch_size)[0]
        images = to_device([host], torch.device("cpu"), sizes, images=True)[0]
        r["h2d"] = h2d_copy(
            device,
            {
                "kspace_batch": host["kspace"],
                "image_batch": torch.cat([images["magnitude"], images["phase"]], 1),
            },
        )
        r["transform_slices_per_s"] = transform_rate(device, sizes, a.transform_slices)
        r["transform_check"] = transform_check(device, sizes)
        self.save()
        print(
            f"{r['device']}: bf16 matmul {r['matmul_bf16_tflops']:.0f} TFLOP/s; k-space -> magnitude/phase "
            f"{r['transform_slices_per_s']:.0f} slices/s; vs numpy {r['transform_check']}; h2d {r['h2d']}",
            flush=True,
        )
        count = to_device(kspace_batches(1, 2, sizes, seed=99), device, sizes, images=True)[0]
        r["flops_per_sample"] = flops_per_sample(self.cfg.model, device, count, sizes)
        self.save()
        print(f"i2m2 train step: {r['flops_per_sample'] / 1e9:.1f} GFLOP per sample (fwd+bwd)", flush=True)

        # 1. the current path, then the levers one at a time, at one batch
        b = a.batch_size
        cl = Variant("bf16+channels_last", b, "bf16", True)
        fused = replace(cl, name="+fused AdamW", fused=True)
        g2 = replace(fused, name="+grouped magnitude/phase", grouped=("magnitude", "phase"))
        g3 = replace(fused, name="+grouped all three", grouped=("magnitude", "phase", "inter"))
        levers = [Variant("fp32", b), Variant("bf16", b, "bf16"), cl, fused, g2, g3]
        lever_rows = [self.measure(v) for v in levers]
        best_eager = self.best(lever_rows[3:]) or self.best(lever_rows) or asdict(fused)
        best_grouped = tuple(best_eager.get("grouped", ()))
        ks = replace(fused, name="+k-space on the device", grouped=best_grouped, kspace=True)
        ks_row = self.measure(ks)

        # 2. batch per GPU, learning rate scaled linearly
        sweep_rows = [ks_row] if ks_row else []
        for bs in a.batches:
            if bs != b:
                sweep_rows.append(self.measure(replace(ks, name="batch sweep (as k-space row)", batch=bs)))
        best_sweep = self.best(sweep_rows)
        big = int(best_sweep["batch"]) if best_sweep else b

        # 3. compiled with CUDA graphs at the fastest batch; the data wait with a real feeder
        fed_done = False
        for mode in a.compile_modes:
            v = replace(ks, name=f"+torch.compile {mode}", batch=a.compile_batch or big, compile_mode=mode)
            row = self.measure(v, feeds=("device", "host"))
            fed_done = fed_done or "fed_step_ms" in row
        if not fed_done:  # no compiled row (CPU, budget or failure): the eager best, fed from the host
            self.measure(replace(ks, name="eager, fed from the host", batch=big), feeds=("device", "host"))

        # 4. the I2M2 cost: each expert alone vs the product (eager, bf16 + channels_last)
        for paradigm in ("unimodal_magnitude", "unimodal_phase", "inter", "i2m2"):
            if not self.affordable(f"expert {paradigm}", a.eager_cost_s):
                break
            r["experts"][paradigm] = self.expert_step_ms(paradigm, b)
            self.release()
            print(f"  {paradigm:20s} {r['experts'][paradigm]:8.1f} ms/step", flush=True)
            self.save()
        e = r["experts"]
        if len(e) == 4:
            r["i2m2_cost_ratio"] = e["i2m2"] / (e["unimodal_magnitude"] + e["unimodal_phase"] + e["inter"])
        self.save()

    def expert_step_ms(self, paradigm: str, batch: int) -> float:
        a, device, cfg = self.args, self.device, self.cfg.model
        torch.manual_seed(0)
        model = build_model(paradigm, SPEC, cfg, encoder_factory(cfg)).to(device)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr(batch), weight_decay=self.weight_decay)
        data = to_device(self.host_batches(batch), device, self.sizes, images=True)
        settings = StepSettings(precision="bf16", channels_last=True, head_reduction="sum")

        def run(n: int) -> tuple[float, float]:
            sync(device)
            t0 = time.perf_counter()
            train_epoch(model, (data[i % len(data)] for i in range(n)), SPEC, opt, params, {}, settings)
            sync(device)
            return time.perf_counter() - t0, 0.0

        step = statistics.median(time_steps(run, a.warmup, a.repeats, a.target_s, a.max_steps).step_s)
        return step * 1e3

    def table(self) -> None:
        r = self.result
        print(
            f"\n{r['device']}, I2M2 fastMRI knee network, {r['sizes']['crop']}x{r['sizes']['crop']}, "
            f"{r.get('flops_per_sample', float('nan')) / 1e9:.1f} GFLOP/sample; bf16 matmul "
            f"{r.get('matmul_bf16_tflops', float('nan')):.0f} TFLOP/s; {r['lr_rule']}"
        )
        head = f"{'variant':34s} {'batch':>5s} {'samples/s':>10s} {'ms/step':>8s} {'TFLOP/s':>8s} {'of mm':>6s}"
        print(f"{head} {'mem GB':>7s} {'wait ms':>8s} {'fed s/s':>8s} {'fed wait':>8s}")
        for v in r["variants"]:
            if "error" in v and "step_ms" not in v:
                print(f"{v['name']:34s} {v['batch']:5d} failed: {v['error'][:70]}")
                continue
            fed = f"{v['fed_samples_per_s']:8.1f} {v['fed_data_wait_ms_per_step']:8.2f}" if "fed_step_ms" in v else ""
            print(
                f"{v['name']:34s} {v['batch']:5d} {v['samples_per_s']:10.1f} {v['step_ms']:8.1f} "
                f"{v.get('tflops', float('nan')):8.1f} {v.get('of_measured_bf16', float('nan')):6.1%} "
                f"{v.get('max_memory_gb', float('nan')):7.1f} {v['data_wait_ms_per_step']:8.2f} {fed}"
            )
        for s in r["skipped"]:
            print(f"{s['name']:34s} skipped: {s['reason']}")
        if "i2m2_cost_ratio" in r:
            print(f"I2M2 step / sum of expert steps: {r['i2m2_cost_ratio']:.3f}")
        print(f"wrote {self.out_path} ({r['total_wall_s']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/benchmarks/gpu_fastmri/results.json")
    ap.add_argument("--config", default=str(REPO / "configs" / "fastmri.yaml"), help="model, sizes and lr from here")
    ap.add_argument("--tiny", action="store_true", help="tiny model and images on the CPU (smoke test)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch of the lever comparison")
    ap.add_argument("--batches", type=int, nargs="*", default=[16, 64, 128], help="batch sweep (eager, all levers)")
    ap.add_argument("--compile-modes", nargs="*", default=["reduce-overhead"], help="torch.compile modes to time")
    ap.add_argument("--compile-batch", type=int, default=0, help="batch of the compiled rows (0: the sweep's fastest)")
    ap.add_argument("--kspace-height", type=int, default=640, help="k-space rows (single-coil knee: 640)")
    ap.add_argument("--kspace-width", type=int, default=368, help="k-space columns before zero-filling")
    ap.add_argument("--prefetch", type=int, default=2, help="batches the host feeder runs ahead")
    ap.add_argument("--budget-s", type=float, default=330.0, help="skip what would end after this many seconds")
    ap.add_argument("--eager-cost-s", type=float, default=20.0, help="budget held back for one eager row")
    ap.add_argument("--compile-cost-s", type=float, default=120.0, help="budget held back for a compilation")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        cfg.model = replace(cfg.model, width=4, blocks=[1, 1], groups=2, options={**cfg.model.options, "pool_size": 2})
        sizes = Sizes(32, 18, 20, 16)
        args.batch_size, args.batches = 4, [2, 8]
        args.warmup, args.repeats, args.target_s, args.max_steps = 1, 1, 0.0, 2
        args.matmul_n, args.transform_slices, args.eager_cost_s = 256, 4, 0.0
        torch.set_num_threads(1)
    else:
        sizes = Sizes(args.kspace_height, args.kspace_width, cfg.data.pad_width, cfg.data.crop_size)
        args.warmup, args.repeats, args.target_s, args.max_steps = 3, 3, 4.5, 20
        args.matmul_n, args.transform_slices = 8192, 256
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    bench = Bench(args, cfg, device, sizes)
    if device.type != "cuda":
        print(
            "CPU run: the compiled / CUDA-graph rows need a CUDA device and are skipped; fused AdamW runs on "
            "torch's CPU kernel, only to check the code path",
            flush=True,
        )
    bench.run()
    bench.table()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(min(16, os.cpu_count() or 1)))
    raise SystemExit(main())
