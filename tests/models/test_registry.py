"""The encoder registry: model.encoder -> builder, sized from the data's facts; the checks
that run before any training, naming the key."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from i2m2_ray.config import ConfigError, ModelConfig, load_config
from i2m2_ray.models import build_model, registry
from i2m2_ray.models.encoders import PreActResNet
from i2m2_ray.models.registry import (
    check_model,
    encoder_factory,
    encoder_names,
    experts_of,
    get_encoder,
    register_encoder,
)
from i2m2_ray.spec import TaskSpec

FASTMRI = TaskSpec(("magnitude", "phase"), {"acl": 2})
FASTMRI_FACTS = {"inputs": {"magnitude": [1, 16, 16], "phase": [1, 16, 16]}}
TINY = ["model.width=4", "model.blocks=[1]", "model.groups=2", "model.options={stem: imagenet, pool_size: 1}"]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_builtins_are_registered_and_an_unknown_name_lists_them() -> None:
    assert encoder_names() == ["lenet", "mlp_gru", "preact_resnet", "transformers"]
    with pytest.raises(ConfigError, match=r"model.encoder='resnet' is not a registered encoder; known: \['lenet',"):
        get_encoder("resnet")
    cfg = load_config(None, ["model.encoder=resnet"])
    with pytest.raises(ConfigError, match="model.encoder='resnet' is not a registered encoder"):
        check_model(cfg, FASTMRI, FASTMRI_FACTS)


def test_preact_resnet_takes_its_channels_from_the_facts() -> None:
    """Early fusion stacks the channels of the modalities it sees, as fastMRI's encoder did."""
    cfg = load_config(None, TINY).model
    build = encoder_factory(FASTMRI_FACTS)
    torch.manual_seed(0)
    inter = build(["magnitude", "phase"], cfg)
    direct = PreActResNet(in_channels=2, width=4, blocks=[1], groups=2, stem="imagenet", pool_size=1)
    assert count(inter) == count(direct) and inter.out_features == direct.out_features == 4
    three = encoder_factory({"inputs": {"rgb": [3, 16, 16]}})(["rgb"], cfg)
    assert three.stem[0].in_channels == 3
    model = build_model("i2m2", FASTMRI, cfg, build)
    out = model({"magnitude": torch.randn(2, 1, 16, 16), "phase": torch.randn(2, 1, 16, 16)})
    assert out["acl"].shape == (2, 2)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.options={stem: vgg}", r"model.options.stem must be one of knee, imagenet, got 'vgg'"),
        ("model.options={pool_size: 0}", r"model.options.pool_size must be a positive integer, got 0"),
        ("model.options={final_norm: 1}", r"model.options.final_norm must be true or false, got 1"),
        ("model.options={stride: 2}", r"unknown model.options key\(s\) \['stride'\] for preact_resnet"),
        ("model.inter_expert={options: {stem: vgg}}", r"model.options.stem must be one of"),  # the inter expert's
    ],
)
def test_preact_resnet_options_are_checked(override: str, message: str) -> None:
    cfg = load_config(None, [override])
    with pytest.raises(ConfigError, match=message):
        check_model(cfg, FASTMRI, FASTMRI_FACTS)


def test_only_the_experts_to_fit_are_checked() -> None:
    spec = TaskSpec(("image", "audio"), {"digit": 10})
    assert experts_of(spec, ["unimodal"]) == ["image", "audio"]
    assert experts_of(spec, ["inter"]) == ["inter"]
    assert experts_of(spec, ["unimodal_audio", "i2m2"]) == ["image", "audio", "inter"]
    facts = {"inputs": {"image": [1, 28, 28], "audio": [1, 112, 112]}}
    cfg = load_config(None, ["experiment=avmnist", "model.encoder=lenet", "model.blocks=[1, 1]"])
    check_model(cfg, spec, facts, ["unimodal"])  # early fusion is no matter without the inter expert
    with pytest.raises(ConfigError, match=r"but avmnist's image \(1x28x28\) and audio \(1x112x112\) differ in shape"):
        check_model(cfg, spec, facts, ["i2m2"])


def test_the_inter_expert_may_use_another_encoder() -> None:
    """``model.inter_expert`` picks the inter expert's encoder: LeNets per modality for the
    unimodal experts, a PreAct-ResNet over the stacked modalities for the inter one."""
    spec = TaskSpec(("a", "b"), {"y": 3})
    facts = {"inputs": {"a": [1, 12, 12], "b": [1, 12, 12]}}
    inter = "model.inter_expert={encoder: preact_resnet, blocks: [1], width: 4, groups: 2}"
    cfg = load_config(None, ["model.encoder=lenet", "model.blocks=[1, 1]", "model.width=2", inter])
    check_model(cfg, spec, facts)
    model = build_model("i2m2", spec, cfg.model, encoder_factory(facts))
    assert type(model.experts["inter"].encoder).__name__ == "PreActResNet"
    assert type(model.experts["a"].encoder).__name__ == "LeNet"
    out = model({"a": torch.randn(2, 1, 12, 12), "b": torch.randn(2, 1, 12, 12)})
    assert out["y"].shape == (2, 3)
    flat = r"model.encoder='lenet' reads \(C, H, W\) inputs, but modality 'a' is \(12\)"
    with pytest.raises(ConfigError, match=flat):
        check_model(cfg, spec, {"inputs": {"a": [12], "b": [12]}}, ["unimodal"])


def test_mlp_gru_reads_flat_and_series_inputs() -> None:
    facts = {"inputs": {"x": [5], "s": [6, 3]}}
    cfg = load_config(None, ["model.encoder=mlp_gru", "model.hidden=[7]", "model.width=4",
                             "model.options={series_readout: flatten}"]).model  # fmt: skip
    build = encoder_factory(facts)
    assert build(["x"], cfg).out_features == 7 and build(["s"], cfg).out_features == 6 * 4
    with pytest.raises(ConfigError, match=r"reads flat \(F,\) or series \(T, F\) inputs, but modality 'img'"):
        encoder_factory({"inputs": {"img": [1, 8, 8]}})(["img"], cfg)


VL_FACTS = {"inputs": {"image": [2, 3, 16, 16], "text": [6]}, "vocab_size": 30, "pad_token_id": 0}
VL = TaskSpec(("image", "text"), {"label": 2})
TINY_VL = "{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, patch_size: 8}"


def test_transformers_builds_from_the_tokeniser_and_image_facts() -> None:
    cfg = load_config(None, ["model.encoder=transformers", "model.inter_fusion=joint",
                             f"model.options={{text: {TINY_VL}, image: {TINY_VL}, inter: {TINY_VL}}}"])  # fmt: skip
    check_model(cfg, VL, VL_FACTS)
    build = encoder_factory(VL_FACTS)
    inter = build(["image", "text"], cfg.model)
    assert inter.num_images == 2 and inter.out_features == 2 * 16  # one ViLT pass per image
    assert inter.backbone.config.vocab_size == 30 and inter.backbone.config.image_size == 16
    assert build(["text"], cfg.model).backbone.config.max_position_embeddings == 64  # max(64, L)


@pytest.mark.parametrize(
    "model,facts,overrides,message",
    [
        ("unimodal_text", VL_FACTS, [], r"model.options.text is not set"),
        ("inter", VL_FACTS, [f"model.options.text={TINY_VL}"], r"model.options.inter is not set"),
        ("unimodal_text", {**VL_FACTS, "vocab_size": None}, [f"model.options.text={TINY_VL}"],
         r"needs the tokeniser's vocab_size"),
        ("unimodal_image", {**VL_FACTS, "inputs": {"image": [1, 16, 16], "text": [6]}},
         [f"model.options.image={TINY_VL}"], r"reads images \(3, S, S\) or \(N, 3, S, S\)"),
        ("unimodal_text", VL_FACTS, ["model.options={txt: bert}"],
         r"unknown model.options key\(s\) \['txt'\] for transformers"),
    ],
)  # fmt: skip
def test_transformers_settings_are_checked(model: str, facts: dict, overrides: Sequence[str], message: str) -> None:
    cfg = load_config(None, ["model.encoder=transformers", "model.inter_fusion=joint", *overrides])
    with pytest.raises(ConfigError, match=message):
        check_model(cfg, VL, facts, [model])


def test_an_encoder_of_ones_own_registers_by_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_builders", dict(registry._builders))

    @register_encoder("flat_linear")
    class FlatLinear:
        def check(self, modalities: Sequence[str], cfg: ModelConfig, facts: dict) -> None:
            if cfg.width < 1:
                raise ConfigError("model.width must be >= 1 for flat_linear")

        def build(self, modalities: Sequence[str], cfg: ModelConfig, facts: dict) -> nn.Module:
            size = sum(int(torch.tensor(facts["inputs"][m]).prod()) for m in modalities)
            layer = nn.Sequential(nn.Flatten(), nn.Linear(size, cfg.width))
            layer.out_features = cfg.width  # type: ignore[assignment]
            return layer

    assert "flat_linear" in encoder_names()
    facts = {"inputs": {"a": [2, 3], "b": [2, 3]}}
    cfg = load_config(None, ["model.encoder=flat_linear", "model.width=5", "model.inter_fusion=early"])
    check_model(cfg, TaskSpec(("a", "b"), {"y": 2}), facts)
    model = build_model("inter", TaskSpec(("a", "b"), {"y": 2}), cfg.model, encoder_factory(facts))
    assert model({"a": torch.randn(4, 2, 3), "b": torch.randn(4, 2, 3)})["y"].shape == (4, 2)
    with pytest.raises(ConfigError, match="model.width must be >= 1 for flat_linear"):
        encoder_factory(facts)(["a"], ModelConfig(encoder="flat_linear", width=0))
