"""Smoke test of the benchmark scripts: each runs on tiny sizes and writes its JSON.

Only that the figures exist and are positive is checked: timings on a shared machine are
not something a test can assert.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _run(args: list[str], timeout: float) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_gpu_script_runs_tiny_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    stdout = _run(["benchmarks/gpu_fastmri.py", "--tiny", "--out", str(out)], timeout=300)
    assert "I2M2 step / sum of expert steps" in stdout
    assert "+torch.compile reduce-overhead: skipped (CUDA graphs need a CUDA device)" in stdout
    r = json.loads(out.read_text())
    assert r["tiny"] and r["sizes"] == {"height": 32, "width": 18, "pad": 20, "crop": 16}
    assert r["model"]["options"]["stem"] == "knee"
    assert _positive(r["flops_per_sample"]) and _positive(r["transform_slices_per_s"])
    check = r["transform_check"]  # the device transform against the numpy preprocessing
    assert check["magnitude_max_abs_diff"] < 1e-4 and check["phase_max_abs_diff_mod_2"] < 1e-4
    rows = r["variants"]
    names = [v["name"] for v in rows]
    assert names == [
        "fp32",
        "bf16",
        "bf16+channels_last",
        "+fused AdamW",
        "+grouped magnitude/phase",
        "+grouped all three",
        "+k-space on the device",
        "batch sweep (as k-space row)",
        "batch sweep (as k-space row)",
        "eager, fed from the host",
    ]
    for v in rows:
        assert "error" not in v, v
        assert _positive(v["samples_per_s"]) and _positive(v["step_ms"]), v
        assert v["data_wait_ms_per_step"] >= 0
        assert math.isclose(v["lr"], 1e-6 * v["batch"] / 16), v  # product.lr at batch 16, scaled linearly
    assert [v["batch"] for v in rows[6:9]] == [4, 2, 8] and all(v["kspace"] for v in rows[6:])
    fed = rows[-1]
    assert _positive(fed["fed_samples_per_s"]) and fed["fed_data_wait_ms_per_step"] >= 0
    assert [s["name"] for s in r["skipped"]] == ["+torch.compile reduce-overhead"]
    assert set(r["experts"]) == {"unimodal_magnitude", "unimodal_phase", "inter", "i2m2"}
    assert _positive(r["i2m2_cost_ratio"])


@pytest.mark.slow
@pytest.mark.timeout(2400)  # seven small Ray Train runs; minutes on a busy 2-core machine
def test_perf_tables_run_tiny(tmp_path: Path) -> None:
    args = ["all", "--tiny", "--datasets", "fastmri", "--data", "materialized", "--repeats", "2"]
    args += ["--out-root", str(tmp_path)]
    stdout = _run(["benchmarks/perf.py", *args], timeout=2300)
    for header in ("samples/s", "slices/s", "step ms", "speed-up", "peak RSS"):
        assert header in stdout

    def load(name: str) -> dict[str, Any]:
        r: dict[str, Any] = json.loads((tmp_path / name / "results.json").read_text())
        assert r["tiny"] and r["machine"]["logical_cpus"] >= 1 and "command" in r
        return r

    over = load("ray_overhead")["datasets"]["fastmri"]
    for arm in ("plain", "ray_streaming", "ray_materialized", "ray_held"):
        assert _positive(over[arm]["samples_per_s"]), arm
    assert _positive(over["ray_streaming"]["ratio_to_plain"]) and _positive(over["ray_held"]["cpu_ratio_to_plain"])
    rounds = over["rounds"]  # --repeats 2: the first round and one more, held first
    assert [r["order"] for r in rounds["per_round"]] == ["plain, held", "held, plain"]
    assert rounds["per_round"][0]["cpu_ratio"] == over["ray_held"]["cpu_ratio_to_plain"]
    lo, hi = rounds["cpu_ratio_range"]
    assert 0 < lo <= rounds["cpu_ratio_median"] <= hi

    pipe = load("data_pipeline")["sizes"]["tiny"]
    for key in ("torch_fft_1core", "numpy_compute_1core", "udf_in_process_1core", "ray_data", "ratio_per_core"):
        assert _positive(pipe[key]), key

    cost = load("i2m2_cost")["sizes"]["tiny"]
    assert set(cost["step_s"]) == {"unimodal_magnitude", "unimodal_phase", "inter", "i2m2"}
    assert all(_positive(v) for v in cost["step_s"].values()) and _positive(cost["ratio"])

    runs = load("scaling")["runs"]
    assert {"materialized-1", "materialized-2"} <= set(runs)
    assert all(_positive(r["samples_per_s"]) for r in runs.values())

    mem = load("memory")["sizes"]["tiny-batch16"]
    assert _positive(mem["train_worker_peak_rss_mb"]) and _positive(mem["data_worker_peak_rss_mb"])


def test_seed_table_gives_each_seed_and_the_mean_and_std(tmp_path: Path) -> None:
    """Hand-made summaries with known values: 0.8 and 0.6 -> 0.700 ± 0.100."""
    for seed, (i2m2, inter) in enumerate([(0.8, 0.5), (0.6, 0.7)]):
        d = tmp_path / f"avmnist_s{seed}"
        d.mkdir()
        summary = {"inter": {"accuracy": inter, "f1_macro": inter}, "i2m2": {"accuracy": i2m2, "f1_macro": 0.5}}
        (d / "summary.json").write_text(json.dumps(summary))
        (d / "wall.json").write_text(json.dumps({"wall_seconds": 100.0 + seed, "load_average": 1.5, "returncode": 0}))
    stdout = _run(["benchmarks/seeds.py", "avmnist", "--seeds", "0", "1", "--root", str(tmp_path)], timeout=60)
    rows = {line.split(" | ")[0].strip("| "): line for line in stdout.splitlines() if line.startswith("| ")}
    assert rows["i2m2"] == "| i2m2 | 0.800 | 0.600 | 0.700 ± 0.100 | 0.500 ± 0.000 |"
    assert rows["inter"] == "| inter | 0.500 | 0.700 | 0.600 ± 0.100 | 0.600 ± 0.100 |"
    assert "seed 0: 100 s (load 1.5); seed 1: 101 s (load 1.5)" in stdout


def test_validation_choice_reads_budgets_off_one_long_run(tmp_path: Path) -> None:
    """Hand-made validation histories (no test figure anywhere): what each epoch budget would
    have selected is the best of the first E epochs, averaged over seeds."""
    histories = {0: [0.5, 0.7, 0.6, 0.9], 1: [0.6, 0.5, 0.8, 0.8]}
    for seed, curve in histories.items():
        results = tmp_path / "vqa" / f"long_s{seed}" / "results"
        results.mkdir(parents=True)
        history = [{"epoch": e, "val_vqa_score": v} for e, v in enumerate(curve)]
        (results / "i2m2.json").write_text(json.dumps({"val": {"val_vqa_score": max(curve)}, "history": history}))
    stdout = _run(
        ["benchmarks/validation_choice.py", "vqa", "--seeds", "0", "1", "--variant", "long", "product.epochs=4",
         "--curve", "i2m2", "--root", str(tmp_path), "--table-only"],
        timeout=60,
    )
    assert "| i2m2 | 0.900 | 0.800 | 0.850 ± 0.071 |" in stdout
    assert "i2m2, validation vqa_score by epoch (mean over 2 seeds): 1: 0.550, 2: 0.600, 3: 0.700, 4: 0.850" in stdout
    # budget 1: 0.5, 0.6; budget 2: 0.7, 0.6; budget 3: 0.7, 0.8; budget 4: 0.9, 0.8
    assert ("selected with a budget of E epochs (best of the first E; mean ± std): 1: 0.550 ± 0.071, "
            "2: 0.650 ± 0.071, 3: 0.750 ± 0.071, 4: 0.850 ± 0.071") in stdout
