"""``--smoke-test`` with ``--data-dir``: real files at their real size (fastMRI volumes of
640 rows, about 368 columns, zero-filled to 400 and cropped to 320, as configs/fastmri.yaml
says) run every stage tiny (configs/smoke/fastmri_real.yaml: a few volumes and slices, a
tiny network, one epoch, one CPU worker) on a local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2m2_ray.data.fastmri_sample import write_sample

from .conftest import REPO

PARADIGMS = ["unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2"]


@pytest.mark.slow
def test_smoke_test_runs_on_real_size_fastmri_volumes(tmp_path: Path) -> None:
    # 8 volumes of the real size, 3 slices each (the real ones hold ~35): the smoke settings
    # take the first 6 usable ones, so a 7th and 8th are there to be left out
    data_dir, ann_dir = write_sample(
        tmp_path / "real", volumes=8, slices=3, height=640, width=368, pad_width=400, crop=320, seed=0
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "experiments/fastmri.py", "--smoke-test", "--data-dir", str(data_dir)]
    cmd += ["--annotations", str(ann_dir), "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    # the real sizes are kept: k-space zero-filled to 400, 320 x 320 crops
    assert "'inputs': {'magnitude': [1, 320, 320], 'phase': [1, 320, 320]}" in proc.stdout, log
    assert "'volumes': 6" in proc.stdout and "'train_volumes': 4" in proc.stdout, log
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == PARADIGMS
    assert all("auroc_mean" in m and m["wall_seconds"] > 0 for m in summary.values())

    from i2m2_ray.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / "checkpoints" / "i2m2.pt", paradigm="i2m2")
    data = ckpt["config"]["data"]
    assert (data["crop_size"], data["pad_width"], data["max_volumes"]) == (320, 400, 6)
    assert ckpt["config"]["run"]["use_gpu"] is False and ckpt["config"]["model"]["width"] == 4
