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


# ---- issue 16: every numeric value has a range; overrides name themselves ---------------


@pytest.mark.parametrize(
    "override,message",
    [
        # NaN never passes, infinity not where a finite number is meant
        ("train.lr=.nan", r"config key 'train.lr': expected a number, got NaN"),
        ("train.lr=nan", r"config key 'train.lr': expected a number, got NaN"),  # a string for a number
        ("train.lr=.inf", r"train.lr must be > 0 and finite, got inf"),
        ("train.grad_clip=.inf", r"train.grad_clip must be >= 0 and finite"),
        ("product.lr=-1e-3", r"product.lr must be > 0 and finite, got -0.001"),
        ("product.weight_decay=-0.1", r"product.weight_decay must be >= 0 and finite, got -0.1"),
        ("product.weights={inter: -1}", r"product.weights.inter must be a finite exponent >= 0"),
        ("product.weights={inter: many}", r"config key 'product.weights.inter': expected a number, got 'many'"),
        ("run.cpus_per_worker=0", r"run.cpus_per_worker must be > 0 and finite, got 0.0"),
        ("run.seed=-1", r"run.seed must be >= 0, got -1"),
        ("run.seed=1.5", r"config key 'run.seed': expected an integer, got 1.5"),
        ("run.max_failures=-2", r"run.max_failures must be >= 0 \(or -1: no limit\), got -2"),
        ("model.width=0", r"model.width must be >= 1, got 0"),
        ("model.blocks=[]", r"model.blocks must list at least one stage of >= 1 blocks, got \[\]"),
        ("model.blocks=[2, 0]", r"model.blocks must list at least one stage of >= 1 blocks, got \[2, 0\]"),
        ("model.groups=0", r"model.groups must be >= 1, got 0"),
        ("model.hidden=[16, -4]", r"model.hidden must list layer widths >= 1"),
        ("model.head_hidden=-1", r"model.head_hidden must be >= 0 \(0: a linear head\), got -1"),
        ("model.fusion_dim=0", r"model.fusion_dim must be >= 1, got 0"),
        ("model.inter_expert={width: 0}", r"model.inter_expert.width must be >= 1, got 0"),
        ("data.crop_size=48", r"data.crop_size \(48\) must be <= data.pad_width \(40\)"),
        ("data.max_volumes=0", r"data.max_volumes must be >= 1 \(or null: all\), got 0"),
        ("data.max_samples=-5", r"data.max_samples must be >= 1 \(or null: all\), got -5"),
        ("data.max_samples=ten", r"config key 'data.max_samples': expected"),
        ("data.split_seed=-3", r"data.split_seed must be >= 0"),
        ("train.monitor=''", r"train.monitor must name a validation metric"),
        ("evaluation.bootstrap=-1", r"evaluation.bootstrap must be >= 0 resamples \(0: no intervals\), got -1"),
        ("evaluation.ece_bins=0", r"evaluation.ece_bins must be >= 1, got 0"),
        ("evaluation.noise_levels=[0.0, -0.5]", r"evaluation.noise_levels must list finite levels >= 0"),
        ("evaluation.noise_levels=[0.5, 1.0]", r"evaluation.noise_levels must rise from 0 \(the clean score\)"),
        ("evaluation.fill=median", r"evaluation.fill must be 'mean' or 'zeros', got 'median'"),
        ("evaluation.stats_samples=0", r"evaluation.stats_samples must be >= 1, got 0"),
    ],
)
def test_every_numeric_value_has_a_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.pad_width=40", "data.crop_size=32", override])


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "train.epochz=3",
            r"override 'train.epochz=3': unknown config key\(s\) \['epochz'\] in 'train' "
            r"\(did you mean 'train.epochs'\?\); known: \[",
        ),
        ("trian.lr=0.1", r"override 'trian.lr=0.1': unknown config key\(s\) \['trian'\] in the top level"),
        ("experiment.name=x", r"override 'experiment.name=x': 'experiment' is a value, not a section"),
        ("model.blocks=[1,", r"override 'model.blocks=\[1,': the value is not valid YAML"),
    ],
)
def test_an_override_with_an_unknown_key_or_bad_yaml_is_named(tmp_path: Path, override: str, message: str) -> None:
    """``--set`` (and the smoke and search overrides) name the override itself, not the
    config file it was merged into."""
    config = tmp_path / "c.yaml"
    config.write_text("train: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(config, [override])


def test_keys_inside_free_form_mappings_pass_the_override_check() -> None:
    overrides = ["data.options.task=icd9_1", "model.options.text.hidden_size=16", "per_paradigm.inter.lr=1"]
    cfg = load_config(None, overrides)
    assert cfg.data.options == {"task": "icd9_1"} and cfg.model.options == {"text": {"hidden_size": 16}}
    assert cfg.training("inter").lr == 1.0


def test_the_inter_control_trains_as_the_products_do() -> None:
    cfg = load_config(None, ["product.lr=0.002", "product.epochs=7", "product.weight_decay=0.3", "train.lr=0.1"])
    control, inter = cfg.training("inter_extended"), cfg.training("inter")
    assert (control.lr, control.epochs, control.weight_decay) == (0.002, 7, 0.3)
    assert inter.lr == 0.1
    cfg = load_config(None, ["per_paradigm={inter_extended: {epochs: 2}}"])
    assert cfg.training("inter_extended").epochs == 2  # by name, as any model
