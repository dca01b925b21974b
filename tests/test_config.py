from pathlib import Path

import pytest

from i2m2_ray.config import ConfigError, config_from_dict, load_config, parse_override

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_overrides_are_typed_and_nested() -> None:
    assert parse_override("train.epochs=3") == {"train": {"epochs": 3}}
    cfg = load_config(None, ["train.epochs=3", "model.blocks=[1, 2]", "train.lr=1e-2", "product.freeze=[inter]"])
    assert cfg.train.epochs == 3 and cfg.model.blocks == [1, 2] and cfg.train.lr == 0.01
    assert cfg.product.freeze == ["inter"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key\(s\) \['epochz'\] in 'train'"):
        load_config(p)


@pytest.mark.parametrize(
    "override,message",
    [
        ("run.num_workers=-1", "run.num_workers must be >= 1"),
        ("train.lr=0", "train.lr must be > 0"),
        ("data.split=[0.5, 0.5, 0.5]", "data.split must be three fractions"),
        ("model.inter_fusion=attention", "model.inter_fusion must be one of"),
        ("train.epochs=three", "config key 'train.epochs': expected an integer"),
        ("product.init=pretrained", "product.init must be"),
        ("model.head_activation=tanh", "model.head_activation must be one of relu, gelu; got 'tanh'"),
        ("model.head_norm=sometimes", "config key 'model.head_norm': expected true/false"),
    ],
)
def test_out_of_range_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.grad_accum_steps=0", "train.grad_accum_steps must be >= 1"),
        ("train.precision=fp16", "train.precision must be 'fp32' or 'bf16'"),
        ("train.prefetch_batches=-1", "train.prefetch_batches must be >= 0"),
        ("train.channels_last=maybe", "config key 'train.channels_last': expected true/false"),
    ],
)
def test_performance_options_are_validated(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_performance_options_default_to_the_plain_loop() -> None:
    t = load_config(None).train
    assert (t.grad_accum_steps, t.precision, t.channels_last, t.compile) == (1, "fp32", False, False)
    t = load_config(None, ["train.grad_accum_steps=4", "train.precision=bf16", "train.compile=true"]).train
    assert (t.grad_accum_steps, t.precision, t.compile) == (4, "bf16", True)


def test_each_model_gets_its_training_settings() -> None:
    cfg = load_config(
        None,
        [
            "train.lr=0.1",
            "product.lr=0.01",
            "product.epochs=4",
            "per_paradigm={unimodal: {lr: 0.02, patience: 30}, unimodal_audio: {lr: 0.03}, intra: {lr: 0.5}}",
        ],
    )
    got = {p: cfg.training(p).lr for p in ("unimodal_image", "unimodal_audio", "inter", "intra", "i2m2")}
    assert got == {"unimodal_image": 0.02, "unimodal_audio": 0.03, "inter": 0.1, "intra": 0.5, "i2m2": 0.01}
    assert cfg.training("unimodal_audio").patience == 30 and cfg.training("inter").patience == 5
    assert cfg.training("i2m2").epochs == 4 and cfg.training("inter").epochs == cfg.train.epochs


@pytest.mark.parametrize(
    "override,message",
    [
        ("per_paradigm={late: {lr: 0.1}}", r"per_paradigm.late: expected a paradigm"),
        ("per_paradigm={inter: {lrr: 0.1}}", r"unknown config key\(s\) \['lrr'\] in 'per_paradigm.inter'"),
        ("per_paradigm={i2m2: {lr: -1}}", "per_paradigm.i2m2.lr must be > 0"),
        ("train.optimizer=adam", "train.optimizer must be one of adamw, sgd, rmsprop"),
        ("train.schedule=cosine", "train.schedule must be one of constant, linear"),
        ("train.betas=[0.9]", "train.betas must be two numbers"),
        ("train.head_reduction=max", "train.head_reduction must be one of mean, sum"),
        ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
        ("model.inter_expert={widht: 3}", r"unknown config key\(s\) \['widht'\] in 'model.inter_expert'"),
    ],
)
def test_new_training_keys_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_the_inter_expert_gets_its_own_model_keys() -> None:
    cfg = load_config(
        None, ["model.width=3", "model.options={a: 1, b: 2}", "model.inter_expert={width: 6, options: {b: 3}}"]
    )
    inter = cfg.model.for_expert("inter")
    assert (inter.width, inter.options, inter.inter_expert) == (6, {"a": 1, "b": 3}, {})
    assert cfg.model.for_expert("image") is cfg.model
