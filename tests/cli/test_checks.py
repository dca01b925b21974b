"""Checks the command lines run before Ray starts: the output folder, and a search space
against the settings its trials will run with (smoke settings included)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from i2m2_ray.cli.checks import check_search_space, check_writable_dir
from i2m2_ray.cli.common import CONFIG_DIR, resolve_config, smoke_file
from i2m2_ray.cli.search import build_parser
from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.tuning.space import TrialRecipe, check_space, default_search_file, load_search_file, parse_search_file


def test_an_output_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"--output-dir .*/f is a file; give a folder"):
        check_writable_dir(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"--output-dir .*/f/out lies under .*/f, which is a file"):
        check_writable_dir(tmp_path / "f" / "out")
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created


def test_an_output_dir_that_cannot_be_written_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ConfigError, match=r"--output-dir .*/out \(its nearest existing folder .*\) cannot be written "
                       r"\(Permission denied\); give a folder you can write to"):  # fmt: skip
        check_writable_dir(tmp_path / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_named(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(ConfigError, match=r"cannot be written \(Permission denied\)"):
        check_writable_dir(tmp_path / "ro" / "out")


def sweep_base(argv: list[str], space: Path | None = None) -> tuple[Any, Any]:
    """What experiments/search.py builds before Ray starts: the search file and the base
    config its trials start from (the search file's base config, the smoke settings, its
    overrides, --set)."""
    args = build_parser("fastmri").parse_args(["--experiment", "fastmri", *argv])
    search = load_search_file(space or default_search_file("fastmri", bool(args.data_dir)))
    args.config = str(search.base_config)
    args.overrides = [*search.overrides, *args.overrides]
    return search, resolve_config("fastmri", args)


def test_a_space_that_does_not_fit_the_smoke_settings_is_refused_before_ray() -> None:
    """The sweep of the issue: the demo space samples crops of 48 and 64, which the smoke
    sample (zero-filled to 40, 64 rows) cannot hold; every trial sampling one failed."""
    search, base = sweep_base(["--smoke-test"])
    with pytest.raises(ConfigError, match=r"search space 'data.crop_size' = 48: data.crop_size \(48\) must be <= "
                       r"data.pad_width \(40\)"):  # fmt: skip
        check_search_space("fastmri", search, base)
    search, base = sweep_base([])
    check_search_space("fastmri", search, base)  # the demo's own settings hold both crops


def test_the_smoke_space_fits_the_smoke_settings() -> None:
    path = default_search_file("fastmri", real_data=False, smoke=True)
    assert path == CONFIG_DIR / "search" / "smoke" / "fastmri.yaml"
    search, base = sweep_base(["--smoke-test"], path)
    assert base.product.epochs == 1 and base.data.pad_width == 40
    check_search_space("fastmri", search, base)
    assert default_search_file("avmnist", real_data=False, smoke=True) == CONFIG_DIR / "search" / "avmnist_demo.yaml"


def test_a_crop_the_generated_sample_cannot_hold_is_refused_by_the_datasets_check() -> None:
    search, base = sweep_base(["--set", "data.sample={height: 56}"])  # the demo's crop 64 > 56 rows
    with pytest.raises(ConfigError, match=r"^data.crop_size \(64\) must be <= data.sample.height \(56\)"):
        check_search_space("fastmri", search, base)  # the base itself
    search, base = sweep_base(["--set", "data.sample={height: 56}", "--set", "data.crop_size=48"])
    with pytest.raises(ConfigError, match=r"search space 'data.crop_size' = 64: data.crop_size \(64\) must be <= "
                       r"data.sample.height \(56\)"):  # fmt: skip
        check_search_space("fastmri", search, base)


def test_two_choices_that_conflict_only_together_are_named_together(tmp_path: Path) -> None:
    space = {
        "params": {
            "product.init": {"choices": ["components", "scratch"]},
            "data.pad_width": {"choices": [64, 80], "when": {"product.init": "scratch"}},
            "data.crop_size": {"choices": [32, 72], "when": {"product.init": "scratch"}},
        }
    }
    search = parse_search_file(space, tmp_path / "s.yaml")
    base = load_config(CONFIG_DIR / "fastmri_demo.yaml").to_dict()
    with pytest.raises(ConfigError, match=r"search space: a trial may sample data.pad_width=64, data.crop_size=72 "
                       r"together: data.crop_size \(72\) must be <= data.pad_width \(64\)"):  # fmt: skip
        check_space(TrialRecipe(search.space, base))
    # conditions are honoured: a parameter is combined only where a trial would sample it
    space["params"]["data.crop_size"]["when"] = {"data.pad_width": 80}
    check_space(TrialRecipe(parse_search_file(space, tmp_path / "s.yaml").space, base))


def test_smoke_settings_for_real_data_keep_the_real_sizes(tmp_path: Path) -> None:
    for name in ("fastmri", "avmnist", "mimic", "vqa", "nlvr2"):
        assert (
            smoke_file(name, CONFIG_DIR / f"{name}.yaml", real_data=True) == CONFIG_DIR / "smoke" / f"{name}_real.yaml"
        )
        settings = yaml.safe_load((CONFIG_DIR / "smoke" / f"{name}_real.yaml").read_text())
        assert settings["run"] == {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1}
        assert "crop_size" not in settings.get("data", {}) and "pad_width" not in settings.get("data", {})
        assert "image_size" not in settings["data"].get("options", {})
    # a dataset without a _real file keeps its one smoke file
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "toy.yaml").write_text("train: {epochs: 1}\n")
    assert smoke_file("toy", tmp_path / "toy.yaml", real_data=True) == tmp_path / "smoke" / "toy.yaml"


FACTS = {
    "fastmri": {"inputs": {"magnitude": [1, 320, 320], "phase": [1, 320, 320]}},
    "avmnist": {"inputs": {"image": [1, 28, 28], "audio": [1, 112, 112]}, "encoders": ["lenet"]},
    "mimic": {"inputs": {"static": [5], "timeseries": [24, 12]}, "encoders": ["mlp_gru"]},
    "vqa": {"inputs": {"image": [3, 384, 384], "text": [50]}, "vocab_size": 100, "pad_token_id": 0},
    "nlvr2": {"inputs": {"image": [2, 3, 384, 384], "text": [40]}, "vocab_size": 100, "pad_token_id": 0},
}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_every_real_data_smoke_file_makes_a_config_its_data_and_model_accept(name: str) -> None:
    from i2m2_ray.cli.common import smoke_overrides
    from i2m2_ray.data import check_data_config, get_dataset
    from i2m2_ray.models.registry import check_model
    from i2m2_ray.spec import TaskSpec

    cfg = load_config(CONFIG_DIR / f"{name}.yaml", [*smoke_overrides(name, real_data=True), "data.data_dir=/data"])
    check_data_config(get_dataset(name), cfg)
    spec = TaskSpec(tuple(FACTS[name]["inputs"]), {"y": 2})
    check_model(cfg, spec, FACTS[name])
    assert cfg.train.epochs == cfg.product.epochs == 1 and cfg.run.num_workers == 1


def test_an_asha_grace_period_that_can_never_stop_a_trial_is_refused_before_ray(tmp_path: Path) -> None:
    """Found by the suite: a space with ``asha.grace_period: 1`` over smoke settings of one
    product epoch ran the components' fits first, then stopped; now it stops before Ray."""
    import subprocess
    import sys

    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"experiment": "mimic", "asha": {"grace_period": 1}, "params": {"product.lr": {"low": 1e-4, "high": 1e-2}}}
        )
    )
    cmd = [sys.executable, "experiments/search.py", "--experiment", "mimic", "--smoke-test", "--space", str(space)]
    cmd += ["--trials", "2", "--output-dir", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    proc = subprocess.run(cmd, cwd=CONFIG_DIR.parent, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "asha.grace_period (1) must be below product.epochs (1), or ASHA can never stop a trial" in proc.stderr
    assert not (tmp_path / "out" / "ray_results").exists()  # nothing ran
