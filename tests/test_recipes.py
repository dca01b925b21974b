"""Parity of the real configs with the public I2M2 code's recipes (../shared/reference/recipes.md):
every model built from ``configs/<name>.yaml`` has the recipe's parameter count, layer shapes
and output shapes, and each config carries the recipe's optimisation settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from i2m2_ray.config import ExperimentConfig, load_config
from i2m2_ray.models.build import build_model
from i2m2_ray.models.registry import encoder_factory
from i2m2_ray.spec import TaskSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_all(cfg: ExperimentConfig, spec: TaskSpec, encoders: Callable[..., nn.Module]) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {p: build_model(p, spec, cfg.model, encoders) for p in spec.paradigms()}


# ---- AV-MNIST (recipes.md §1) ----------------------------------------------------------


def test_avmnist_models_have_the_recipes_sizes() -> None:
    build_encoder = encoder_factory({"inputs": {"image": [1, 28, 28], "audio": [1, 112, 112]}})  # AV-MNIST's
    cfg = load_config(CONFIGS / "avmnist.yaml")
    spec = TaskSpec(("image", "audio"), {"digit": 10})
    models = build_all(cfg, spec, build_encoder)
    sizes = {p: count(m) for p, m in models.items()}
    # the public code's registered parameters (I2M2 counts 3 more: unused mixing scalars)
    assert sizes == {
        "unimodal_image": 7_077,
        "unimodal_audio": 66_405,
        "inter": 260_922,
        "intra": 7_077 + 66_405,
        "i2m2": 334_404,
    }
    x = {"image": torch.rand(2, 1, 28, 28), "audio": torch.rand(2, 1, 112, 112)}
    for model in models.values():
        model.eval()
        assert model(x)["digit"].shape == (2, 10)
    image = models["unimodal_image"]
    convs = [m for m in image.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(3, 1, 5, 5), (6, 3, 3, 3), (12, 6, 3, 3), (24, 12, 3, 3)]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in image.modules()) == 4
    inter_convs = [m for m in models["inter"].modules() if isinstance(m, nn.Conv2d)]
    assert inter_convs[0].out_channels == 6 and len(inter_convs) == 4 + 6  # width 6, image 4 + audio 6 layers


def test_avmnist_config_is_the_recipes_optimisation() -> None:
    cfg = load_config(CONFIGS / "avmnist.yaml")
    lrs = {p: cfg.training(p).lr for p in ("unimodal_image", "unimodal_audio", "inter", "intra", "i2m2")}
    assert lrs == {"unimodal_image": 0.01, "unimodal_audio": 0.01, "inter": 0.1, "intra": 0.1, "i2m2": 0.01}
    for p in lrs:
        t = cfg.training(p)
        assert (t.optimizer, t.momentum, t.weight_decay, t.epochs, t.batch_size, t.grad_clip) == (
            "sgd",
            0.0,
            1e-4,
            30,
            40,
            8.0,
        )
        assert t.monitor == "accuracy" and t.shuffle
    assert cfg.training("unimodal_audio").patience >= 30  # no early stopping
    assert cfg.training("inter").patience == cfg.training("i2m2").patience == 11  # > 10 epochs without gain
    assert cfg.product.init == "components"


# ---- MIMIC-III (recipes.md §2) ---------------------------------------------------------


@pytest.mark.parametrize("task,classes,sizes", [
    ("mortality", 6, {"unimodal_static": 856, "unimodal_timeseries": 19_111, "inter": 33_616}),
    ("icd9_1", 2, {"unimodal_static": 692, "unimodal_timeseries": 18_947, "inter": 33_452}),
])  # fmt: skip
def test_mimic_models_have_the_recipes_sizes(task: str, classes: int, sizes: dict[str, int]) -> None:
    build_encoder = encoder_factory({"inputs": {"static": [5], "timeseries": [24, 12]}})  # MIMIC's
    cfg = load_config(CONFIGS / "mimic.yaml", [f"data.options.task={task}"])
    spec = TaskSpec(("static", "timeseries"), {task: classes})
    models = build_all(cfg, spec, build_encoder)
    got = {p: count(m) for p, m in models.items()}
    assert {p: got[p] for p in sizes} == sizes  # the public inter counts 3 more: unused scalars
    assert got["intra"] == sizes["unimodal_static"] + sizes["unimodal_timeseries"]
    assert got["i2m2"] == sum(sizes.values())
    x = {"static": torch.randn(3, 5), "timeseries": torch.randn(3, 24, 12)}
    for model in models.values():
        assert model(x)[task].shape == (3, classes)
    # unimodal series: a per-step Linear(30 -> 15) flattened; inter: every GRU state flattened
    series = models["unimodal_timeseries"].encoder
    assert series.out_features == 24 * 15 and series.step_linear.weight.shape == (15, 30)
    assert models["inter"].fusion.out_features == 10 + 24 * 30


def test_mimic_config_is_the_recipes_optimisation() -> None:
    cfg = load_config(CONFIGS / "mimic.yaml")
    for p in ("unimodal_static", "unimodal_timeseries", "inter", "intra", "i2m2"):
        t = cfg.training(p)
        assert (t.optimizer, t.lr, t.weight_decay, t.epochs, t.batch_size, t.grad_clip) == (
            "rmsprop",
            1e-3,
            0.0,
            20,
            40,
            8.0,
        )
        assert not t.class_weighted and t.monitor == "accuracy"
    assert cfg.product.init == "scratch" and cfg.data.options["zscore"] == "all"
    from i2m2_ray.data.mimic import MONITOR

    assert MONITOR == {"mortality": "accuracy", "icd9_1": "auprc", "icd9_7": "auprc"}


# ---- fastMRI (recipes.md §3) -----------------------------------------------------------


def test_fastmri_knee_network_has_the_recipes_layers() -> None:
    from i2m2_ray.data.fastmri import LABELS

    cfg = load_config(CONFIGS / "fastmri.yaml")
    build_encoder = encoder_factory({"inputs": {m: [1, 320, 320] for m in ("magnitude", "phase")}})  # fastMRI's
    spec = TaskSpec(("magnitude", "phase"), {h: 2 for h in LABELS})
    mag = build_model("unimodal_magnitude", spec, cfg.model, build_encoder)
    inter = build_model("inter", spec, cfg.model, build_encoder)
    # 11,577,690 in the public code, which also registers a second stem, GroupNorm(32, 512),
    # Conv3d(15, 1, 1), BatchNorm2d(512) and BatchNorm3d(1) that its forward never uses
    unused_in_public = {"mag": 2 * 64 * 9 + 1024 + 16 + 1024 + 2, "magphase": 64 * 9 + 1024 + 16 + 1024 + 2}
    assert count(mag) == 11_574_472 == 11_577_690 - unused_in_public["mag"]
    assert count(inter) == 11_575_048 == 11_577_690 - unused_in_public["magphase"]
    enc: Any = mag.encoder
    assert isinstance(enc.stem, nn.Conv2d) and enc.stem.kernel_size == (3, 3) and enc.stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in enc.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in enc.final)  # no norm or ReLU after the last block
    norms = [m for m in enc.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    assert [m.out_channels for m in enc.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][
        ::4
    ] == [64, 64, 128, 256, 512]
    assert enc.out_features == 51_200
    heads = mag.heads.heads
    assert sorted(heads) == sorted(LABELS) and all(tuple(h.weight.shape) == (2, 51_200) for h in heads.values())
    with torch.no_grad():  # 40x40 maps after three stride-2 stages of a 320x320 crop: pooled to 10x10
        out = enc.final(torch.zeros(1, 512, 40, 40))
    assert out.shape == (1, 512, 10, 10)


def test_fastmri_config_is_the_recipes_optimisation() -> None:
    cfg = load_config(CONFIGS / "fastmri.yaml")
    i2m2, intra = cfg.training("i2m2"), cfg.training("intra")
    assert (i2m2.optimizer, i2m2.lr, i2m2.weight_decay, i2m2.batch_size) == ("adamw", 1e-6, 1e-2, 16)
    assert (intra.lr, intra.weight_decay) == (1e-6, 1e-2)
    assert cfg.product.init == "scratch"
    for p in ("unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2"):
        t = cfg.training(p)
        assert (t.patience, t.monitor, t.head_reduction, t.class_weighted) == (5, "auroc_mean", "sum", True)
    assert (cfg.data.crop_size, cfg.data.pad_width, cfg.data.split, cfg.data.split_seed) == (
        320,
        400,
        [0.7, 0.15, 0.15],
        0,
    )


# ---- VQA-VS and NLVR2 (recipes.md §4) --------------------------------------------------


@pytest.mark.parametrize("name,inputs,answers,params", [
    ("vqa", 768, 3129, 5_993_529),  # the public text and image heads
    ("vqa", 1536, 3129, 7_173_177),  # the public inter head (FIBER's 1,536 joint features)
    ("nlvr2", 768, 2, 768 * 1536 + 1536 + 2 * 1536 + 1536 * 2 + 2),
])  # fmt: skip
def test_vl_heads_are_linear_layernorm_gelu_linear(name: str, inputs: int, answers: int, params: int) -> None:
    from i2m2_ray.models.build import _heads

    cfg = load_config(CONFIGS / f"{name}.yaml")
    head = _heads(inputs, TaskSpec(("image", "text"), {"y": answers}), cfg.model)
    assert count(head) == params
    kinds = [type(m).__name__ for m in head.trunk if not isinstance(m, nn.Dropout)]
    assert kinds == ["Linear", "LayerNorm", "GELU"] and head.trunk[1].out_features == 1536


@pytest.mark.parametrize("name", ["vqa", "nlvr2"])
def test_vl_configs_train_the_heads_of_frozen_backbones(name: str) -> None:
    from i2m2_ray.cli.common import smoke_overrides
    from i2m2_ray.models.transformers_experts import TransformersEncoders

    cfg = load_config(CONFIGS / f"{name}.yaml")
    t = cfg.training("i2m2")
    assert cfg.model.freeze_backbone
    assert (t.optimizer, t.betas, t.eps, t.weight_decay, t.schedule) == ("adamw", [0.9, 0.98], 1e-8, 0.01, "constant")
    # the same settings with tiny random backbones (nothing downloaded): only heads train
    tiny = load_config(CONFIGS / f"{name}.yaml", [o for o in smoke_overrides(name) if o.startswith("model.")])
    assert tiny.model.freeze_backbone
    encoders = TransformersEncoders(vocab_size=50, image_size=32, num_images=2 if name == "nlvr2" else 1)
    model = build_model("i2m2", TaskSpec(("image", "text"), {"y": 2}), tiny.model, encoders)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".heads." in f".{n}" for n in trainable)
    assert any(not p.requires_grad for n, p in model.named_parameters() if "backbone" in n)
