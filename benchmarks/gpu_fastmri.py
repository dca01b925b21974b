"""fastMRI I2M2 training throughput on one GPU: fp32, bf16, channels_last, torch.compile.

Builds the full-size fastMRI models of ``configs/fastmri.yaml`` (magnitude and phase,
320x320; pre-activation ResNet-18 experts, blocks [2, 2, 2, 2], width 64, GroupNorm 32;
early-fusion inter expert; four 2-way heads), trains them on random batches already on
the device with the project's step function (``i2m2_ray.training.loop.train_epoch``:
bf16 autocast, channels_last, AdamW) and reports samples/s, FLOPs per sample counted with
``torch.utils.flop_counter.FlopCounterMode`` and the achieved TFLOP/s against the card's
bf16 dense peak (datasheet) and a bf16 matrix product measured in the same run.

No Ray, MLflow or data files: it measures the model step, the part a GPU changes.

    python benchmarks/gpu_fastmri.py --out outputs/benchmarks/gpu_fastmri/results.json
    python benchmarks/gpu_fastmri.py --tiny          # CPU, seconds: what the smoke test runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from i2m2_ray.config import ModelConfig  # noqa: E402
from i2m2_ray.models import TaskSpec, build_model  # noqa: E402
from i2m2_ray.models.encoders import PreActResNet  # noqa: E402
from i2m2_ray.training.loop import StepSettings, train_epoch  # noqa: E402

LABELS = ("abnormal", "acl", "cartilage", "mtear")
SPEC = TaskSpec(("magnitude", "phase"), {h: 2 for h in LABELS})
# bf16 dense tensor-core peak from the datasheets (no sparsity), TFLOP/s
DATASHEET_BF16 = {"H100 80GB HBM3": 989.4, "H100": 989.4, "H200": 989.4, "A100": 312.0}


def encoders(modalities: Any, cfg: ModelConfig) -> nn.Module:
    return PreActResNet(in_channels=len(modalities), width=cfg.width, blocks=cfg.blocks, groups=cfg.groups)


def make_batches(n: int, batch: int, crop: int, device: torch.device, seed: int = 0) -> list[dict[str, Tensor]]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(n):
        b = {m: torch.randn(batch, 1, crop, crop, generator=g) for m in SPEC.modalities}
        b.update({f"y_{h}": torch.randint(0, 2, (batch,), generator=g) for h in LABELS})
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(paradigm: str, cfg: ModelConfig, device: torch.device, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(paradigm, SPEC, cfg, encoders).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def flops_per_step(model: nn.Module, batch: dict[str, Tensor], settings: StepSettings) -> int:
    """Forward + backward FLOPs of one step (convolutions and matrix products)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    counter = FlopCounterMode(display=False)
    with counter:
        train_epoch(model, [batch], SPEC, opt, params, {}, settings)
    return int(counter.get_total_flops())


def time_steps(
    model: nn.Module,
    batches: list[dict[str, Tensor]],
    settings: StepSettings,
    warmup: int,
    steps: int,
    repeats: int,
    device: torch.device,
) -> list[float]:
    """Seconds per step, one figure per repeat (each ``steps`` steps between synchronisations)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def run(n: int) -> None:
        train_epoch(model, (batches[i % len(batches)] for i in range(n)), SPEC, opt, params, {}, settings)

    run(warmup)  # compilation, cuDNN autotuning, allocator growth
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)  # train_epoch ends by reading the loss: a synchronisation
        sync(device)
        out.append((time.perf_counter() - t0) / steps)
    return out


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


def h2d_copy(device: torch.device, batch: int, crop: int) -> dict[str, float]:
    """Host-to-device GB/s of one batch of both modalities, pageable vs pinned memory."""
    if device.type != "cuda":
        return {}
    x = torch.randn(batch, 2, crop, crop)
    out: dict[str, float] = {}
    for name, src in (("pageable", x), ("pinned", x.pin_memory())):
        for _ in range(3):
            src.to(device, non_blocking=True)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(20):
            src.to(device, non_blocking=True)
        sync(device)
        out[f"{name}_gb_per_s"] = x.numel() * 4 * 20 / (time.perf_counter() - t0) / 1e9
    return out


def fft_rate(device: torch.device, slices: int, height: int, pad: int, crop: int) -> float:
    """Slices/s of the fastMRI preprocessing on the device: zero-filled k-space -> centred
    inverse FFT -> crop -> magnitude (standardised) and phase."""
    g = torch.Generator().manual_seed(0)
    k = torch.complex(torch.randn(slices, height, pad, generator=g), torch.randn(slices, height, pad, generator=g))
    k = k.to(device)

    def run() -> Tensor:
        img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        top, left = (height - crop) // 2, (pad - crop) // 2
        img = img[..., top : top + crop, left : left + crop]
        mag = img.abs()
        mag = (mag - mag.mean(dim=(-2, -1), keepdim=True)) / (mag.std(dim=(-2, -1), keepdim=True) + 1e-8)
        return torch.stack([mag, img.angle() / torch.pi], 1)

    for _ in range(3):
        run()
    sync(device)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        run()
    sync(device)
    return slices * reps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/benchmarks/gpu_fastmri/results.json")
    ap.add_argument("--tiny", action="store_true", help="tiny model and images on the CPU (smoke test)")
    ap.add_argument("--batch-size", type=int, default=32, help="per-step batch (configs/fastmri.yaml: 32)")
    ap.add_argument("--large-batch", type=int, default=128, help="also time the best variant at this batch (0: no)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--budget-s", type=float, default=330.0, help="skip what would start after this many seconds")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        crop, cfg, batch = 32, ModelConfig(width=4, blocks=[1], groups=2, inter_fusion="early"), 4
        warmup, steps, repeats, n_matmul = 1, 2, 2, 256
        torch.set_num_threads(1)
    else:
        crop, cfg, batch = 320, ModelConfig(width=64, blocks=[2, 2, 2, 2], groups=32, inter_fusion="early"), 0
        batch = args.batch_size
        warmup, steps, repeats, n_matmul = 5, 10, 5, 8192
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in DATASHEET_BF16.items() if k in name), float("nan"))
    result: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "crop": crop,
        "model": {"width": cfg.width, "blocks": cfg.blocks, "groups": cfg.groups, "inter_fusion": cfg.inter_fusion},
        "batch_size": batch,
        "datasheet_bf16_tflops": peak,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "variants": [],
        "experts": {},
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every measurement: a run cut short still leaves its figures
        out_path.write_text(json.dumps(result, indent=2))

    result["matmul_bf16_tflops"] = matmul_tflops(device, n_matmul)
    result["h2d"] = h2d_copy(device, batch, crop)
    if args.tiny:
        result["fft_slices_per_s"] = fft_rate(device, 4, 64, 40, crop)
    else:  # k-space 640 x 368 zero-filled to 400, crop 320: the real single-coil size
        result["fft_slices_per_s"] = fft_rate(device, 256, 640, 400, 320)
    save()
    print(
        f"{name}: bf16 matmul {result['matmul_bf16_tflops']:.0f} TFLOP/s; h2d {result['h2d']}; "
        f"preprocessing {result['fft_slices_per_s']:.0f} slices/s",
        flush=True,
    )

    batches = make_batches(3, batch, crop, device)
    flops = flops_per_step(build("i2m2", cfg, device, False), batches[0], StepSettings())
    result["flops_per_sample"] = flops / batch
    print(f"i2m2 train step: {flops / batch / 1e9:.2f} GFLOP per sample (fwd+bwd)", flush=True)

    variants = [
        ("fp32", StepSettings(precision="fp32"), False),
        ("bf16", StepSettings(precision="bf16"), False),
        ("bf16+channels_last", StepSettings(precision="bf16", channels_last=True), False),
    ]
    if not args.no_compile and not args.tiny:
        variants.append(("bf16+channels_last+compile", StepSettings(precision="bf16", channels_last=True), True))

    def measure(label: str, paradigm: str, settings: StepSettings, compiled: bool, bs: int) -> dict[str, Any] | None:
        # compiling takes a minute or two: start it only with that much time left
        if time.perf_counter() - start > args.budget_s - (150 if compiled else 0):
            print(f"{label}: skipped (time budget)", flush=True)
            return None
        try:
            model = build(paradigm, cfg, device, settings.channels_last)
            if compiled:
                model.compile()
            data = batches if bs == batch else make_batches(3, bs, crop, device, seed=1)
            if settings.channels_last:
                data = [
                    {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in b.items()}
                    for b in data
                ]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            per_step = time_steps(model, data, settings, warmup, steps, repeats, device)
        except Exception as exc:  # report and go on: one failing variant must not lose the rest
            print(f"{label}: failed: {type(exc).__name__}: {exc}", flush=True)
            return {"name": label, "error": f"{type(exc).__name__}: {exc}"}
        step = statistics.median(per_step)
        row: dict[str, Any] = {
            "name": label,
            "paradigm": paradigm,
            "batch_size": bs,
            "step_ms": step * 1e3,
            "step_ms_all": [s * 1e3 for s in per_step],
            "samples_per_s": bs / step,
            "wall_s": time.perf_counter() - t0,
        }
        if device.type == "cuda":
            row["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        del model, data
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row

    for label, settings, compiled in variants:
        row = measure(label, "i2m2", settings, compiled, batch)
        if row is None:
            continue
        if "step_ms" in row:
            row["tflops"] = result["flops_per_sample"] * row["samples_per_s"] / 1e12
            row["fraction_of_datasheet_bf16"] = row["tflops"] / peak
            row["fraction_of_measured_matmul"] = row["tflops"] / result["matmul_bf16_tflops"]
            print(
                f"{label:28s} {row['samples_per_s']:8.1f} samples/s  {row['step_ms']:7.1f} ms/step  "
                f"{row['tflops']:6.1f} TFLOP/s  (wall {row['wall_s']:.0f} s)",
                flush=True,
            )
        result["variants"].append(row)
        save()

    ok = [r for r in result["variants"] if "step_ms" in r]
    best = min(ok, key=lambda r: r["step_ms"]) if ok else None
    best_settings = next((s for lab, s, _ in variants if best and lab == best["name"]), StepSettings())
    best_compiled = bool(best and "compile" in best["name"])
    # the I2M2 cost on the GPU: each expert alone, bf16 + channels_last (not compiled: four
    # more compilations would not fit the lease)
    eager = variants[-1][1] if args.tiny or args.no_compile else variants[2][1]
    result["experts_settings"] = {"precision": eager.precision, "channels_last": eager.channels_last}
    for paradigm in ("unimodal_magnitude", "unimodal_phase", "inter", "i2m2"):
        row = measure(f"{paradigm}", paradigm, eager, False, batch)
        if row is not None and "step_ms" in row:
            result["experts"][paradigm] = row["step_ms"]
            print(f"  {paradigm:20s} {row['step_ms']:7.1f} ms/step", flush=True)
        save()
    e = result["experts"]
    if all(k in e for k in ("unimodal_magnitude", "unimodal_phase", "inter", "i2m2")):
        result["i2m2_cost_ratio"] = e["i2m2"] / (e["unimodal_magnitude"] + e["unimodal_phase"] + e["inter"])

    if best is not None and args.large_batch and not args.tiny:
        label = f"{best['name']} @ batch {args.large_batch}"
        row = measure(label, "i2m2", best_settings, best_compiled, args.large_batch)
        if row is not None and "step_ms" in row:
            row["tflops"] = result["flops_per_sample"] * row["samples_per_s"] / 1e12
            row["fraction_of_datasheet_bf16"] = row["tflops"] / peak
            result["variants"].append(row)
        save()

    result["total_wall_s"] = time.perf_counter() - start
    save()
    print(f"\n{name}, I2M2 fastMRI {crop}x{crop}, {result['flops_per_sample'] / 1e9:.2f} GFLOP/sample")
    print(f"{'variant':36s} {'batch':>5s} {'samples/s':>10s} {'ms/step':>8s} {'TFLOP/s':>8s} {'of peak':>8s}")
    for r in result["variants"]:
        if "step_ms" in r:
            print(
                f"{r['name']:36s} {r['batch_size']:5d} {r['samples_per_s']:10.1f} {r['step_ms']:8.1f} "
                f"{r.get('tflops', float('nan')):8.2f} {r.get('fraction_of_datasheet_bf16', float('nan')):8.1%}"
            )
        else:
            print(f"{r['name']:36s} failed: {r['error'][:80]}")
    if "i2m2_cost_ratio" in result:
        print(f"I2M2 step / sum of expert steps: {result['i2m2_cost_ratio']:.3f}")
    print(f"wrote {out_path} ({result['total_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "8")
    raise SystemExit(main())
