"""The shared command line: dataset flags declared as data, --data-dir into the config,
smoke settings from configs/smoke/, the report section of every shipped config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from i2m2_ray.cli.common import CONFIG_DIR, add_flag, build_parser, resolve_config, smoke_file, smoke_overrides
from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.data import BUILTINS, Flag

TINY_TRANSFORMERS = [
    "data.options.image_size=16",
    "data.options.max_text_length=12",
    "model.options.text={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
    "model.options.image={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32,"
    " patch_size: 8}",
    "model.options.inter={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32,"
    " patch_size: 8}",
    "model.head_hidden=16",
    "train.epochs=1",
    "train.batch_size=32",
    "product.epochs=1",
    "product.init=components",
]
# Stage 3 at a smoke size, added to every smoke file with the evaluation section
SMOKE_EVALUATION = [
    "evaluation.bootstrap=200",
    "evaluation.robustness=false",
    "evaluation.noise_levels=[0.0, 0.5, 1.0]",
    "evaluation.stats_samples=256",
    "evaluation.inter_extended=false",
]
# The SMOKE_OVERRIDES the data modules held before the smoke settings became configs/smoke/*.yaml
OLD_SMOKE = {
    "fastmri": [
        "data.crop_size=32",
        "data.pad_width=40",
        "data.sample={volumes: 14, slices: 4, height: 64, width: 36, seed: 0}",
        "model.width=4",
        "model.blocks=[1]",
        "model.groups=2",
        "train.epochs=2",
        "train.batch_size=16",
        "product.epochs=1",
        "product.init=components",
    ],
    "avmnist": [
        "data.sample={train: 240, test: 80, seed: 0}",
        "data.options={audio_pool: 4}",
        "model.width=4",
        "model.blocks=[1, 1]",
        "model.head_hidden=8",
        "train.epochs=1",
        "train.batch_size=40",
        "product.epochs=1",
    ],
    "mimic": [
        "data.sample={samples: 300, seed: 0}",
        "model.width=8",
        "model.hidden=[8]",
        "model.head_hidden=8",
        "train.epochs=1",
        "train.batch_size=32",
        "product.epochs=1",
    ],
    "vqa": ["data.sample={train: 60, val: 20, test: 20, ood: 8, seed: 0}", *TINY_TRANSFORMERS],
    "nlvr2": ["data.sample={train: 60, val: 20, test: 20, seed: 0}", *TINY_TRANSFORMERS],
}
# ... and the SUMMARY_COLUMNS, now report.metrics of every shipped config
OLD_COLUMNS = {
    "fastmri": [
        "auroc_mean", "balanced_accuracy_mean", "auroc_abnormal", "auroc_acl", "auroc_cartilage", "auroc_mtear",
    ],  # fmt: skip
    "avmnist": ["accuracy", "f1_macro"],
    "mimic": ["accuracy", "balanced_accuracy", "auroc", "auprc"],
    "vqa": ["vqa_score", "ood_mean_vqa_score", "ood_qt_vqa_score", "ood_ko_vqa_score", "ood_qt_kw_ko_vqa_score"],
    "nlvr2": ["accuracy", "balanced_accuracy", "auroc"],
}


@pytest.mark.parametrize("name", sorted(BUILTINS))
@pytest.mark.parametrize("kind", ["", "_demo"])
def test_smoke_files_give_the_old_smoke_settings(name: str, kind: str) -> None:
    config = CONFIG_DIR / f"{name}{kind}.yaml"
    assert smoke_file(name, config) == CONFIG_DIR / "smoke" / f"{name}.yaml"
    assert load_config(config, smoke_overrides(name)) == load_config(config, OLD_SMOKE[name] + SMOKE_EVALUATION)


@pytest.mark.parametrize("name", sorted(BUILTINS))
@pytest.mark.parametrize("kind", ["", "_demo"])
def test_every_shipped_config_names_its_report_metrics(name: str, kind: str) -> None:
    assert load_config(CONFIG_DIR / f"{name}{kind}.yaml").report.metrics == OLD_COLUMNS[name]


def test_report_section_default_and_check() -> None:
    assert load_config(None).report.metrics == ["accuracy", "balanced_accuracy"]
    assert load_config(None, ["report.metrics=[vqa_score]"]).report.metrics == ["vqa_score"]
    with pytest.raises(ConfigError, match=r"report.metrics must name at least one metric"):
        load_config(None, ["report.metrics=[]"])
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['columns'\] in 'report'"):
        load_config(None, ["report.columns=[accuracy]"])


def test_paths_smoke_settings_and_flags_resolve_into_the_config() -> None:
    argv = ["--data-dir", "/data/knee", "--annotations", "/data/ann", "--smoke-test", "--set", "train.epochs=7"]
    cfg = resolve_config("fastmri", build_parser("fastmri").parse_args(argv))
    assert (cfg.data.data_dir, cfg.data.annotations) == ("/data/knee", "/data/ann")
    # configs/smoke/fastmri_real.yaml over fastmri.yaml: the real sizes kept, a few volumes, a tiny model on CPU
    assert (cfg.data.crop_size, cfg.data.pad_width, cfg.data.max_volumes) == (320, 400, 6)
    assert cfg.model.width == 4 and not cfg.run.use_gpu
    assert cfg.train.epochs == 7 and cfg.model.options["stem"] == "knee"  # --set last; the real config below
    sample = resolve_config("fastmri", build_parser("fastmri").parse_args(["--smoke-test"]))
    assert (sample.data.crop_size, sample.data.pad_width) == (32, 40)  # configs/smoke/fastmri.yaml: the tiny sample
    plain = resolve_config("fastmri", build_parser("fastmri").parse_args([]))
    assert plain.data.data_dir is None and plain.data.crop_size == 64  # the demo config, as it is
    args = build_parser("mimic").parse_args(["--task", "icd9_7"])
    assert args.task == "icd9_7" and resolve_config("mimic", args).train.monitor == "auprc"


def test_a_smoke_file_beside_the_config_comes_first(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("experiment: avmnist\nmodel: {encoder: lenet, blocks: [2, 2]}\n")
    assert smoke_file("avmnist", config) == CONFIG_DIR / "smoke" / "avmnist.yaml"  # none beside it yet
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "avmnist.yaml").write_text("train: {epochs: 2}\nmodel: {head_hidden: 3}\n")
    assert smoke_overrides("avmnist", config) == ["train.epochs=2", "model.head_hidden=3"]
    args = build_parser("avmnist").parse_args(["--config", str(config), "--smoke-test"])
    cfg = resolve_config("avmnist", args)
    assert (cfg.train.epochs, cfg.model.head_hidden, cfg.model.blocks) == (2, 3, [2, 2])


def test_values_read_back_as_written(tmp_path: Path) -> None:
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "x.yaml").write_text(
        "train: {lr: 1.0e-10, monitor: 'null', betas: [0.9, 0.98]}\nmodel: {options: {text: {a: 1}}}\n"
    )
    overrides = smoke_overrides("x", tmp_path / "x.yaml")
    cfg = load_config(None, overrides)
    assert cfg.train.lr == 1e-10 and cfg.train.monitor == "null" and cfg.train.betas == [0.9, 0.98]
    assert cfg.model.options == {"text": {"a": 1}}


def test_a_flag_clashing_with_a_shared_option_is_named() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed")
    with pytest.raises(ConfigError, match=r"dataset 'toy' declares flag --seed, which clashes"):
        add_flag(parser, Flag("--seed", "data.options.seed"), "toy")
    add_flag(parser, Flag("--level", "data.options.level", choices=("a", "b")), "toy")
    assert parser.parse_args(["--level", "b"]).level == "b"
    with pytest.raises(SystemExit):
        parser.parse_args(["--level", "c"])


def test_placement_flags_set_the_config_and_are_explicit() -> None:
    from i2m2_ray.cli.common import explicit_run_keys

    p = build_parser("avmnist")
    args = p.parse_args(["--data-dir", "/d", "--no-use-gpu"])
    assert resolve_config("avmnist", args).run.use_gpu is False  # configs/avmnist.yaml asks for a GPU
    assert explicit_run_keys(args) == {"run.use_gpu"}
    args = p.parse_args(["--data-dir", "/d"])
    assert resolve_config("avmnist", args).run.use_gpu is True and explicit_run_keys(args) == set()
    args = p.parse_args(["--use-gpu", "--num-workers", "2", "--set", "run.cpus_per_worker=2", "--set", "train.lr=1"])
    assert explicit_run_keys(args) == {"run.use_gpu", "run.num_workers", "run.cpus_per_worker"}
    assert p.parse_args(["--overwrite"]).overwrite and not p.parse_args([]).overwrite
