"""experiments/study.py: the comparison of several seeds' summaries (known numbers), and the
options the study keeps for itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i2m2_ray.cli.study import main, t_interval

I2M2 = [0.90, 0.92, 0.94]
INTER = [0.80, 0.83, 0.83]


def write_seeds(out: Path) -> None:
    for s, (a, b) in enumerate(zip(I2M2, INTER, strict=True)):
        folder = out / f"seed{s}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"inter": {"acc": b}, "i2m2": {"acc": a}}))
        (folder / "pipeline.json").write_text(json.dumps({"config": {"report": {"metrics": ["acc"]}}}))


def test_a_study_compares_its_seeds_with_paired_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_seeds(tmp_path)
    assert main(["--experiment", "toy", "--seeds", "0", "1", "2", "--output-dir", str(tmp_path), "--table-only"]) == 0
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["mean"]["i2m2"]["acc"] == pytest.approx(0.92)
    assert comparison["std"]["i2m2"]["acc"] == pytest.approx(0.02)
    paired = comparison["paired"]["inter"]["acc"]
    # differences 0.10, 0.09, 0.11: mean 0.10, sd 0.01, t(0.975, 2) = 4.303
    assert paired["mean_difference"] == pytest.approx(0.10)
    assert paired["ci_low"] == pytest.approx(0.10 - 4.3027 * 0.01 / 3**0.5, abs=1e-4)
    assert paired["p_value"] < 0.01
    assert "| inter | +0.100 [" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "comparison_acc.png").stat().st_size > 1000
    assert "i2m2 minus each model over 3 seeds" in capsys.readouterr().out


def test_t_interval_of_known_values() -> None:
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.3027 * 1.0 / 3**0.5, abs=1e-4) and mean - low == high - mean


@pytest.mark.parametrize("flag", ["--seed", "--resume", "--overwrite"])
def test_options_the_study_sets_per_seed_are_refused(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--experiment", "fastmri", "--output-dir", str(tmp_path), flag, "1"]) == 2
    assert f"error: {flag} is the study's to set for each seed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing started
