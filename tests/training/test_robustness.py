"""Missing and noisy modalities, with known answers (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from i2m2_ray.models.experts import MultiHead, ProductOfExperts, UnimodalExpert
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.loop import predict
from i2m2_ray.training.robustness import InputStats, corrupt, fill_like, input_stats, predict_degraded, robustness

SPEC = TaskSpec(("a", "b", "c"), {"y": 3})


class Fixed(nn.Module):
    """An expert with fixed logits that reads the given modalities (and fails if one is absent)."""

    def __init__(self, reads: list[str], logits: list[float]) -> None:
        super().__init__()
        self.modalities = reads
        self.logits = torch.tensor([logits])

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        n = len(inputs[self.modalities[0]])
        for m in self.modalities:
            assert m in inputs, f"expert read missing modality {m}"
        return {"y": self.logits.expand(n, -1)}


def product() -> ProductOfExperts:
    return ProductOfExperts(
        {
            "a": Fixed(["a"], [0.0, 1.0, 2.0]),
            "b": Fixed(["b"], [2.0, 0.0, 0.0]),
            "c": Fixed(["c"], [0.0, 0.0, math.log(4.0)]),
            "inter": Fixed(["a", "b"], [1.0, 1.0, 0.0]),
        }
    )


def by_hand(*logit_rows: list[float]) -> np.ndarray:
    p = np.ones(3)
    for z in logit_rows:
        e = np.exp(z)
        p = p * e / e.sum()
    return p / p.sum()


def test_dropping_an_expert_is_the_renormalised_product_of_the_others() -> None:
    model = product()
    inputs = {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1)}  # "c" is absent: its expert must not run
    out = model(inputs, available=["a", "b"])["y"].exp()
    expected = by_hand([0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-6)
    # without "b", both experts that read it (b and inter) leave the product
    out = model({"a": torch.zeros(1, 1), "c": torch.zeros(1, 1)}, available=["a", "c"])["y"].exp()
    np.testing.assert_allclose(out[0].numpy(), by_hand([0.0, 1.0, 2.0], [0.0, 0.0, math.log(4.0)]), rtol=1e-6)
    with pytest.raises(ValueError, match="no expert of this product reads only"):
        ProductOfExperts({"inter": Fixed(["a", "b"], [0.0, 0.0, 0.0])})({}, available=["a"])
    with pytest.raises(KeyError):  # without `available`, every expert is required, as in training
        model({"a": torch.zeros(1, 1)})


def test_a_missing_modality_is_never_read_and_single_experts_get_its_training_mean() -> None:
    batches = [{"a": torch.zeros(2, 1), "b": torch.zeros(2, 1), "c": torch.zeros(2, 1), "y_y": torch.tensor([0, 2])}]
    stats = InputStats(mean={m: torch.full((1,), 5.0) for m in "abc"}, std={m: torch.ones(1) for m in "abc"}, samples=9)
    # the product drops expert c (it would fail on the absent input), the single expert is filled
    _, probs = predict_degraded(product(), batches, SPEC, stats, missing=["c"])
    np.testing.assert_allclose(probs["y"][0], by_hand([0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]), rtol=1e-5)

    class Echo(nn.Module):  # a single expert: its prediction shows what input it got
        modalities = ["c"]

        def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
            x = inputs["c"][:, 0]
            return {"y": torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], 1)}

    filled = predict_degraded(Echo(), batches, SPEC, stats, missing=["c"])[1]["y"]
    np.testing.assert_allclose(filled[0], by_hand([5.0, 0.0, 0.0]), rtol=1e-5)  # the mean, 5, stood in
    zeros = predict_degraded(Echo(), batches, SPEC, stats, missing=["c"], fill="zeros")[1]["y"]
    np.testing.assert_allclose(zeros[0], [1 / 3, 1 / 3, 1 / 3], rtol=1e-5)
    assert fill_like(torch.tensor([[7, 8, 9]]), "t", stats, "mean", pad_id=0).tolist() == [[0, 0, 0]]


def test_noise_level_zero_reproduces_the_clean_predictions_exactly() -> None:
    torch.manual_seed(0)
    enc = nn.Linear(4, 8)
    model = UnimodalExpert("a", enc, MultiHead(8, {"y": 3}))
    spec = TaskSpec(("a",), {"y": 3})
    g = torch.Generator().manual_seed(1)
    batches = [{"a": torch.randn(5, 4, generator=g), "y_y": torch.randint(0, 3, (5,), generator=g)} for _ in range(3)]
    stats = input_stats(batches, ["a"])
    clean = predict(model, batches, spec)
    same = predict_degraded(model, batches, spec, stats, noise=("a", 0.0))
    np.testing.assert_array_equal(clean[1]["y"], same[1]["y"])
    report = robustness(model, lambda: batches, spec, stats, [0.0, 0.5, 1.0])
    curve = report["noise"]["a"]["metrics"]  # type: ignore[index]
    assert curve[0]["accuracy"] == pytest.approx(float((clean[1]["y"].argmax(1) == clean[0]["y"]).mean()))
    assert report["missing"] == {}  # one modality: nothing to leave out
    noisy = predict_degraded(model, batches, spec, stats, noise=("a", 1.0))[1]["y"]
    assert not np.allclose(noisy, clean[1]["y"])


def test_statistics_and_noise_have_the_training_scale() -> None:
    batches = [{"a": torch.tensor([[1.0, 10.0], [3.0, 10.0]])}, {"a": torch.tensor([[5.0, 10.0], [7.0, 10.0]])}]
    stats = input_stats(batches, ["a"], max_samples=3)  # the first three samples: 1, 3, 5
    assert stats.samples == 3
    torch.testing.assert_close(stats.mean["a"], torch.tensor([3.0, 10.0]))
    torch.testing.assert_close(stats.std["a"], torch.tensor([math.sqrt(8 / 3), 0.0]))
    big = torch.zeros(20000, 2)
    noisy = corrupt(big, "a", 0.5, stats, torch.Generator().manual_seed(0), pad_id=0)
    assert float(noisy[:, 0].std()) == pytest.approx(0.5 * math.sqrt(8 / 3), rel=0.03)
    assert float(noisy[:, 1].abs().max()) == 0.0  # a constant feature gets no noise
    ids = torch.tensor([[101, 5, 6, 7, 0, 0]] * 500)
    dropped = corrupt(ids, "t", 0.5, stats, torch.Generator().manual_seed(0), pad_id=0)
    assert (dropped[:, 0] == 101).all() and (dropped[:, 4:] == 0).all()
    assert 0.4 < float((dropped[:, 1:4] == 0).float().mean()) < 0.6
