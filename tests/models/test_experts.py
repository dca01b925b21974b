import itertools

import pytest
import torch

from i2m2_ray import product_of_experts
from i2m2_ray.models import MultiHead, ProductOfExperts, UnimodalExpert


def reference_product(logits: list[torch.Tensor]) -> torch.Tensor:
    """Normalised product of softmaxes, computed in probability space."""
    p = torch.ones_like(logits[0])
    for z in logits:
        p = p * torch.softmax(z, dim=-1)
    return torch.log(p / p.sum(dim=-1, keepdim=True))


@pytest.mark.parametrize("n_experts,classes", itertools.product([1, 2, 3, 4], [2, 3, 10]))
def test_product_equals_normalised_product_of_softmaxes(n_experts: int, classes: int) -> None:
    g = torch.Generator().manual_seed(n_experts * 100 + classes)
    logits = [torch.randn(5, classes, generator=g, dtype=torch.float64) for _ in range(n_experts)]
    out = product_of_experts(logits)
    torch.testing.assert_close(out, reference_product(logits))
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(5, dtype=torch.float64))


def test_product_known_values() -> None:
    # two experts over two classes: p1 = (0.5, 0.5), p2 = softmax(0, ln 3) = (0.25, 0.75)
    z1 = torch.tensor([[0.0, 0.0]])
    z2 = torch.tensor([[0.0, torch.log(torch.tensor(3.0)).item()]])
    out = product_of_experts([z1, z2]).exp()
    torch.testing.assert_close(out, torch.tensor([[0.25, 0.75]]))
    # a third expert agreeing with the second: (1*1, 3*3) / 10
    out3 = product_of_experts([z1, z2, z2]).exp()
    torch.testing.assert_close(out3, torch.tensor([[0.1, 0.9]]))


def test_single_expert_is_its_softmax() -> None:
    z = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(product_of_experts([z]), torch.log_softmax(z, -1))


def test_weights_are_exponents() -> None:
    z = torch.tensor([[0.0, torch.log(torch.tensor(3.0)).item()]])
    # weight 2 on one expert == that expert twice
    torch.testing.assert_close(product_of_experts([z], [2.0]), product_of_experts([z, z]))


def test_product_rejects_mismatched_shapes_and_empty() -> None:
    with pytest.raises(ValueError, match="expert 1 has logits of shape"):
        product_of_experts([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="at least one"):
        product_of_experts([])


class Const(torch.nn.Module):
    """Encoder returning a fixed feature vector per sample (for exact expected outputs)."""

    def __init__(self, value: list[float]) -> None:
        super().__init__()
        self.value = torch.tensor(value)
        self.out_features = len(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], -1)


def _expert(modality: str, heads: dict[str, int]) -> UnimodalExpert:
    return UnimodalExpert(modality, torch.nn.Linear(3, 4), MultiHead(4, heads))


def test_product_model_applies_rule_per_head() -> None:
    torch.manual_seed(0)
    heads = {"acl": 2, "digit": 5}
    experts = {"a": _expert("a", heads), "b": _expert("b", heads)}
    model = ProductOfExperts(experts)
    x = {"a": torch.randn(6, 3), "b": torch.randn(6, 3)}
    out = model(x)
    assert set(out) == {"acl", "digit"}
    for head in heads:
        expected = product_of_experts([experts["a"](x)[head], experts["b"](x)[head]])
        torch.testing.assert_close(out[head], expected)


def test_missing_modality_is_named() -> None:
    model = _expert("magnitude", {"acl": 2})
    with pytest.raises(KeyError, match="missing modality 'magnitude'"):
        model({"phase": torch.zeros(1, 3)})


def test_freeze_stops_gradients_of_named_expert_only() -> None:
    heads = {"y": 2}
    model = ProductOfExperts({"a": _expert("a", heads), "b": _expert("b", heads)})
    model.freeze(["a"])
    assert all(not p.requires_grad for p in model.experts["a"].parameters())
    assert all(p.requires_grad for p in model.experts["b"].parameters())
    out = model({"a": torch.randn(2, 3), "b": torch.randn(2, 3)})
    out["y"].sum().backward()
    assert all(p.grad is None for p in model.experts["a"].parameters())
    assert all(p.grad is not None for p in model.experts["b"].parameters())
    with pytest.raises(KeyError, match="unknown expert 'c'"):
        model.freeze(["c"])


def test_head_layernorm_gelu_known_values() -> None:
    """Linear, LayerNorm, GELU, Linear (ViLT's head): the hidden units of every input have
    mean 0 and variance 1 before the GELU, so some stay on whatever the input."""
    torch.manual_seed(0)
    head = MultiHead(4, {"y": 2}, hidden=8, activation="gelu", norm=True)
    linear, norm, act = head.trunk[1], head.trunk[2], head.trunk[3]
    assert isinstance(norm, torch.nn.LayerNorm) and isinstance(act, torch.nn.GELU)
    x = torch.randn(5, 4) * 50 - 20  # large, shifted inputs
    pre = norm(linear(x))
    torch.testing.assert_close(pre.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(pre.var(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
    expected = head.heads["y"](torch.nn.functional.gelu(pre))
    torch.testing.assert_close(head(x)["y"], expected)
    assert ((head.trunk[:4](x)) > 0).any(-1).all()  # every input keeps some units on


def test_default_head_is_linear_relu_without_norm() -> None:
    head = MultiHead(4, {"y": 2}, hidden=8)
    assert [type(m).__name__ for m in head.trunk] == ["Dropout", "Linear", "ReLU", "Dropout"]
    x = torch.randn(3, 4)
    expected = head.heads["y"](torch.relu(head.trunk[1](x)))
    torch.testing.assert_close(head(x)["y"], expected)
    with pytest.raises(ValueError, match="head activation must be one of \\['gelu', 'relu'\\]; got 'tanh'"):
        MultiHead(4, {"y": 2}, hidden=8, activation="tanh")
