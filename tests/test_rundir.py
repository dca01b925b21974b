"""The output folder: an earlier run is refused without --resume / --overwrite (nothing is
touched), --overwrite discards only what it says, --resume compares config and data."""

from __future__ import annotations

from pathlib import Path

import pytest

from i2m2_ray.config import load_config
from i2m2_ray.rundir import (
    RUN_OUTPUTS,
    RunDirError,
    check_output_dir,
    comparable,
    config_changes,
    data_paths,
    discard_earlier_run,
    earlier_run,
)


def finished_run(out: Path) -> dict[str, tuple[int, int]]:
    """A folder as a finished pipeline leaves it; returns name -> (size, mtime) of every file."""
    for rel in ("pipeline.json", "summary.json", "results/inter.json", "results/inter_test.npz",
                "checkpoints/inter.pt", "plots/roc_inter.png", "mlflow.db", "sample_data/a.npy"):  # fmt: skip
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("{}" if rel == "pipeline.json" else rel)
    (out / "pipeline.json").write_text('{"id": "0ld1d"}')
    (out / "ray_results" / "inter-0ld1d").mkdir(parents=True)
    (out / "ray_results" / "inter-other").mkdir(parents=True)
    return snapshot(out)


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))}


def test_an_earlier_run_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_output_dir(out, resume=False, overwrite=False)  # nothing there: fine
    before = finished_run(out)
    assert earlier_run(out) == "a finished run (summary.json; 1 model(s) in results/)"
    refused = r"holds a finished run.*continue it with --resume, start afresh with --overwrite"
    with pytest.raises(RunDirError, match=refused):
        check_output_dir(out, resume=False, overwrite=False)
    assert snapshot(out) == before
    check_output_dir(out, resume=True, overwrite=False)
    check_output_dir(out, resume=False, overwrite=True)  # allowed; nothing discarded yet
    assert snapshot(out) == before
    with pytest.raises(RunDirError, match="choose one"):
        check_output_dir(out, resume=True, overwrite=True)
    (out / "summary.json").unlink()
    assert earlier_run(out) == "an unfinished run (1 finished model(s) in results/: ['inter'])"
    with pytest.raises(RunDirError, match=r"--resume: .*pipeline.json not found"):
        check_output_dir(tmp_path / "empty", resume=True, overwrite=False)


def test_overwrite_discards_the_earlier_run_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished_run(out)
    gone = discard_earlier_run(out, str(out / "ray_results"))
    assert sorted(Path(g).name for g in gone) == sorted([*RUN_OUTPUTS, "inter-0ld1d"])
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert left == ["mlflow.db", "ray_results", "ray_results/inter-other", "sample_data", "sample_data/a.npy"]
    assert earlier_run(out) is None


def test_resume_compares_what_is_trained_not_where() -> None:
    saved = load_config(None, ["run.num_workers=4", "run.use_gpu=true", "data.data_dir=/d"]).to_dict()
    now = load_config(None, ["run.num_workers=1", "data.data_dir=/e"]).to_dict()
    assert config_changes(comparable(saved), comparable(now)) == []  # placement and paths: compared apart
    changed = load_config(None, ["train.lr=0.5"]).to_dict()
    assert config_changes(comparable(saved), comparable(changed)) == ["train.lr: 0.001 -> 0.5"]
    cfg = load_config(None, [])
    assert data_paths(cfg, Path("/o")) == {"sample": Path("/o/sample_data"), "annotations": None}
    cfg.data.data_dir = "/d"
    assert data_paths(cfg, Path("/o")) == {"data_dir": "/d", "annotations": None}
