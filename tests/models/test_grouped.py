"""Grouped networks compute what the separate networks compute, with the same weights:
same outputs, same gradients, same training step; weights map both ways."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from i2m2_ray.config import ModelConfig
from i2m2_ray.models.build import build_model
from i2m2_ray.models.encoders import PreActResNet
from i2m2_ray.models.experts import ProductOfExperts
from i2m2_ray.models.grouped import GroupedNetworks, GroupedProduct, ParallelConv, group_modules
from i2m2_ray.spec import TaskSpec

TOL: dict[str, Any] = {"atol": 1e-5, "rtol": 1e-5}
SPEC = TaskSpec(("magnitude", "phase"), {"abnormal": 2, "acl": 2, "cartilage": 2, "mtear": 2})


def nets(in_channels: Sequence[int], seed: int = 0, **kw: Any) -> list[PreActResNet]:
    """Tiny PreAct-ResNets (width 4, blocks (1, 1)), one per input channel count."""
    torch.manual_seed(seed)
    out = []
    for c in in_channels:
        net = PreActResNet(in_channels=c, width=4, blocks=(1, 1), groups=2, **{"pool_size": 2, **kw})
        for p in net.parameters():  # GroupNorms start at 1 / 0: move them so a mix-up shows
            if p.dim() == 1:
                nn.init.normal_(p, std=0.3)
        out.append(net)
    return out


def separate(networks: Sequence[PreActResNet], x: torch.Tensor) -> torch.Tensor:
    """Each network on its own channels of ``x``: ``(B, k, features)``."""
    stems: list[Any] = [n.stem if isinstance(n.stem, nn.Conv2d) else n.stem[0] for n in networks]  # type: ignore[index]
    parts = x.split([int(s.in_channels) for s in stems], 1)
    return torch.stack([n(p) for n, p in zip(networks, parts, strict=True)], dim=1)


@pytest.mark.parametrize(
    "channels,kw",
    [
        ((1, 1), {}),  # magnitude and phase: one grouped stem
        ((1, 1, 2), {}),  # with the inter expert: stems side by side, the rest grouped
        ((1, 1), {"stem": "imagenet", "final_norm": True, "pool_size": 1}),  # max-pool and final GroupNorm
    ],
)
def test_grouped_networks_equal_the_separate_ones(channels: tuple[int, ...], kw: dict[str, Any]) -> None:
    networks = nets(channels, **kw)
    grouped = GroupedNetworks(networks)
    x = torch.randn(3, sum(channels), 16, 16)
    out = grouped(x)
    assert out.shape == (3, len(channels), networks[0].out_features)
    torch.testing.assert_close(out, separate(networks, x), **TOL)
    # the same gradients, mapped back to the networks' own keys
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (separate(networks, x) * weight).sum().backward()
    grads = {k: p.grad for k, p in grouped.named_parameters() if p.grad is not None}
    for net, g in zip(networks, grouped.split_state_dicts(grads), strict=True):
        expected = {k: p.grad for k, p in net.named_parameters()}
        assert set(g) == set(expected)
        for k in g:
            torch.testing.assert_close(g[k], expected[k], **TOL, msg=k)


def test_stems_with_different_inputs_run_side_by_side() -> None:
    body: Any = GroupedNetworks(nets((1, 1, 2))).body
    assert isinstance(body.stem, ParallelConv) and body.stem.splits == [1, 1, 2]
    assert isinstance(body.layers[0].conv1, nn.Conv2d) and body.layers[0].conv1.groups == 3
    assert body.layers[0].norm1.num_groups == 6 and body.layers[0].norm1.num_channels == 12


def test_weights_map_both_ways() -> None:
    networks = nets((1, 1, 2))
    grouped = GroupedNetworks(networks)
    split = grouped.split_state_dicts()
    for net, state in zip(networks, split, strict=True):
        ref = net.state_dict()
        assert set(state) == set(ref)
        for k in ref:
            assert torch.equal(state[k], ref[k]), k
    # other weights in, the networks' outputs out
    others = nets((1, 1, 2), seed=1)
    grouped.load_state_dict(grouped.merge_state_dicts([n.state_dict() for n in others]))
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(grouped(x), separate(others, x), **TOL)


def test_mismatched_or_ungroupable_modules_are_refused() -> None:
    with pytest.raises(ValueError, match="different"):
        group_modules([nn.Conv2d(1, 4, 3), nn.Conv2d(1, 8, 3)])
    with pytest.raises(TypeError, match="different types"):
        group_modules([nn.Conv2d(1, 4, 3), nn.Conv1d(1, 4, 3)])
    with pytest.raises(TypeError, match="mix channels"):
        group_modules([nn.Linear(4, 4), nn.Linear(4, 4)])
    with pytest.raises(ValueError, match="different children"):
        GroupedNetworks([nets((1,))[0], PreActResNet(1, width=4, blocks=(1,), groups=2, pool_size=2)])


def encoder(modalities: Sequence[str], cfg: ModelConfig) -> nn.Module:
    return PreActResNet(len(modalities), cfg.width, cfg.blocks, cfg.groups, pool_size=2)


def i2m2() -> ProductOfExperts:
    torch.manual_seed(0)
    cfg = ModelConfig(width=4, blocks=[1, 1], groups=2, inter_fusion="early")
    model = build_model("i2m2", SPEC, cfg, encoder, weights={"inter": 0.5})
    assert isinstance(model, ProductOfExperts)
    for p in model.parameters():
        if p.dim() == 1:
            nn.init.normal_(p, std=0.3)
    return model


def batch(n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, 1, 16, 16, generator=g) for m in SPEC.modalities}


@pytest.mark.parametrize("grouped", [("magnitude", "phase"), ("magnitude", "phase", "inter"), ("inter",)])
def test_grouped_product_gives_the_products_logits(grouped: tuple[str, ...]) -> None:
    product = i2m2()
    model = GroupedProduct(product, grouped)
    x = batch()
    out, ref = model(x), product(x)
    assert list(out) == list(ref) == sorted(SPEC.heads)
    for h in ref:
        torch.testing.assert_close(out[h], ref[h], **TOL)


def test_grouped_product_trains_like_the_product_and_saves_in_its_keys() -> None:
    product = i2m2()
    model = GroupedProduct(product, ("magnitude", "phase"))
    assert set(model.product_state_dict()) == set(product.state_dict())
    for m in (model, product):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        out = m(batch())
        torch.stack([nn.functional.cross_entropy(o, torch.tensor([0, 1, 1])) for o in out.values()]).sum().backward()
        opt.step()
    after = model.product_state_dict()
    for k, v in product.state_dict().items():
        torch.testing.assert_close(after[k], v, **TOL, msg=k)
    # a checkpoint of the grouped model loads into the plain product, and back
    fresh = copy.deepcopy(product)
    fresh.load_state_dict(after)
    x = batch(seed=1)
    for h, o in model(x).items():
        torch.testing.assert_close(fresh(x)[h], o, **TOL)
    other = GroupedProduct(i2m2(), ("magnitude", "phase"))
    other.load_product_state_dict(after)
    for h, o in model(x).items():
        torch.testing.assert_close(other(x)[h], o, **TOL)


def test_grouped_product_refuses_unknown_or_repeated_experts() -> None:
    with pytest.raises(KeyError, match="unknown experts"):
        GroupedProduct(i2m2(), ("magnitude", "audio"))
    with pytest.raises(ValueError, match="distinct"):
        GroupedProduct(i2m2(), ("magnitude", "magnitude"))
    with pytest.raises(KeyError, match="missing modality 'phase'"):
        GroupedProduct(i2m2(), ("magnitude", "phase"))({"magnitude": torch.zeros(1, 1, 16, 16)})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grouped_product_on_the_gpu_in_bf16_channels_last() -> None:
    product = i2m2().cuda().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = GroupedProduct(product, ("magnitude", "phase", "inter"))
    x = {k: v.cuda() for k, v in batch().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, ref = model(x), product(x)
    for h in ref:
        torch.testing.assert_close(out[h].float(), ref[h].float(), atol=3e-2, rtol=3e-2)
