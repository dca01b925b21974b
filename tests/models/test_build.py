from collections.abc import Sequence

import pytest
import torch

from i2m2_ray.config import ModelConfig
from i2m2_ray.models import LateFusionExpert, ProductOfExperts, TaskSpec, build_model, load_components
from i2m2_ray.models.encoders import GRUEncoder, LeNet, MLPEncoder, PreActResNet

SPEC = TaskSpec(("magnitude", "phase"), {"acl": 2, "mtear": 2})


def tiny_encoders(modalities: Sequence[str], cfg: ModelConfig) -> torch.nn.Module:
    return PreActResNet(in_channels=len(modalities), width=4, blocks=[1], groups=2)


def inputs(batch: int = 3) -> dict[str, torch.Tensor]:
    return {"magnitude": torch.randn(batch, 1, 16, 16), "phase": torch.randn(batch, 1, 16, 16)}


@pytest.mark.parametrize("paradigm", SPEC.paradigms())
@pytest.mark.parametrize("fusion", ["early", "concat", "lrtf"])
def test_every_paradigm_builds_and_predicts_every_head(paradigm: str, fusion: str) -> None:
    model = build_model(paradigm, SPEC, ModelConfig(inter_fusion=fusion, fusion_rank=3, fusion_dim=8), tiny_encoders)
    out = model(inputs())
    assert set(out) == {"acl", "mtear"}
    assert all(v.shape == (3, 2) for v in out.values())
    if paradigm in ("intra", "i2m2"):
        assert isinstance(model, ProductOfExperts)
        assert sorted(model.experts) == sorted(SPEC.components(paradigm))
    if paradigm == "inter" and fusion != "early":
        assert isinstance(model, LateFusionExpert)


def test_paradigm_names_and_components() -> None:
    assert SPEC.paradigms() == ["unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2"]
    assert SPEC.components("i2m2") == ["magnitude", "phase", "inter"]
    with pytest.raises(ValueError, match="unknown paradigm"):
        SPEC.components("late")


def test_product_loads_component_weights_exactly() -> None:
    cfg = ModelConfig()
    mag = build_model("unimodal_magnitude", SPEC, cfg, tiny_encoders)
    inter = build_model("inter", SPEC, cfg, tiny_encoders)
    i2m2 = build_model("i2m2", SPEC, cfg, tiny_encoders)
    assert isinstance(i2m2, ProductOfExperts)
    load_components(i2m2, {"magnitude": mag.state_dict(), "inter": inter.state_dict()})
    x = inputs()
    torch.testing.assert_close(i2m2.experts["magnitude"](x)["acl"], mag(x)["acl"])
    torch.testing.assert_close(i2m2.experts["inter"](x)["mtear"], inter(x)["mtear"])


def test_component_from_other_paradigm_or_shape_is_refused() -> None:
    cfg = ModelConfig()
    i2m2 = build_model("i2m2", SPEC, cfg, tiny_encoders)
    assert isinstance(i2m2, ProductOfExperts)
    inter = build_model("inter", SPEC, ModelConfig(inter_fusion="concat"), tiny_encoders)
    with pytest.raises(ValueError, match="ckpt.pt: checkpoint for expert 'inter' does not fit"):
        load_components(i2m2, {"inter": inter.state_dict()}, source="ckpt.pt")

    def wider(modalities: Sequence[str], c: ModelConfig) -> torch.nn.Module:
        return PreActResNet(in_channels=len(modalities), width=8, blocks=[1], groups=2)

    other = build_model("unimodal_magnitude", SPEC, cfg, wider)
    with pytest.raises(ValueError, match="has shape"):
        load_components(i2m2, {"magnitude": other.state_dict()}, source="ckpt.pt")


def test_encoders_output_their_declared_features() -> None:
    assert PreActResNet(1, 4, [1, 1], 2)(torch.randn(2, 1, 32, 32)).shape == (2, 8 * 10 * 10)
    imagenet = PreActResNet(1, 4, [1, 1], 2, stem="imagenet", pool_size=1, final_norm=True)
    assert imagenet(torch.randn(2, 1, 32, 32)).shape == (2, 8)
    assert LeNet(1, 6, 2)(torch.randn(2, 1, 28, 28)).shape == (2, 12)
    assert MLPEncoder(5, [16, 8])(torch.randn(2, 5)).shape == (2, 8)
    assert GRUEncoder(12, 10)(torch.randn(2, 24, 12)).shape == (2, 10)
    assert GRUEncoder(12, 10, readout="flatten", steps=24)(torch.randn(2, 24, 12)).shape == (2, 240)
    assert GRUEncoder(12, 10, readout="linear", steps=24, readout_features=3)(torch.randn(2, 24, 12)).shape == (2, 72)


def test_head_options_reach_every_expert() -> None:
    cfg = ModelConfig(head_hidden=6, head_activation="gelu", head_norm=True)
    model = build_model("i2m2", SPEC, cfg, tiny_encoders)
    assert isinstance(model, ProductOfExperts)
    for name, expert in model.experts.items():
        kinds = [type(m).__name__ for m in expert.heads.trunk]
        assert kinds == ["Dropout", "Linear", "LayerNorm", "GELU", "Dropout"], name
    assert all(v.shape == (3, 2) for v in model(inputs()).values())
