"""Transformers experts (tiny random BERT / ViT / ViLT from configs; nothing downloaded),
the per-answer product of experts, the multi-label loss and the VQA score: known numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from i2m2_ray.config import load_config
from i2m2_ray.models import ProductOfExperts, binary_product_of_experts, build_model
from i2m2_ray.models.transformers_experts import TransformersEncoders
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.loop import loss_fn
from i2m2_ray.training.metrics import compute_metrics, group_means, prefixed_metrics, vqa_score

TINY = "{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, patch_size: 8}"


def tiny_model_config() -> object:
    return load_config(
        None,
        [
            "model.inter_fusion=joint",
            "model.head_hidden=8",
            "model.options={text: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,"
            " intermediate_size: 32}, image: " + TINY + ", inter: " + TINY + "}",
        ],
    ).model


def test_binary_product_known_numbers() -> None:
    z1 = torch.tensor([[0.5, -1.0]])
    z2 = torch.tensor([[1.0, 2.0]])
    out = binary_product_of_experts([z1, z2])
    torch.testing.assert_close(out, torch.tensor([[1.5, 1.0]]))  # the log-odds add up
    # the same as normalising the product of the experts' yes / no probabilities
    s1, s2 = torch.sigmoid(z1), torch.sigmoid(z2)
    p_yes = s1 * s2 / (s1 * s2 + (1 - s1) * (1 - s2))
    torch.testing.assert_close(torch.sigmoid(out), p_yes)
    torch.testing.assert_close(binary_product_of_experts([z1, z2], [2.0, 1.0]), torch.tensor([[2.0, 0.0]]))


def test_product_model_uses_binary_rule_for_multilabel_heads() -> None:
    class Fixed(torch.nn.Module):
        def __init__(self, z: list[float]) -> None:
            super().__init__()
            self.z = torch.tensor([z])

        def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"answer": self.z, "label": self.z}

    model = ProductOfExperts({"a": Fixed([0.5, -1.0]), "b": Fixed([1.0, 2.0])}, multilabel=["answer"])
    out = model({})
    torch.testing.assert_close(out["answer"], torch.tensor([[1.5, 1.0]]))
    torch.testing.assert_close(out["label"], torch.log_softmax(torch.tensor([[1.5, 1.0]]), -1))  # softmax rule


def test_multilabel_loss_and_probabilities_known_numbers() -> None:
    out = {"answer": torch.zeros(1, 2)}
    batch = {"y_answer": torch.tensor([[1.0, 0.0]])}
    # BCE summed over the two answers: 2 log 2
    assert float(loss_fn(out, batch, {}, multilabel=["answer"])) == pytest.approx(2 * math.log(2))
    out = {"answer": torch.tensor([[0.0, 0.0], [10.0, -10.0]])}
    batch = {"y_answer": torch.tensor([[0.5, 0.5], [1.0, 0.0]])}
    expected = (2 * math.log(2) + 2 * math.log1p(math.exp(-10))) / 2
    assert float(loss_fn(out, batch, {}, multilabel=["answer"])) == pytest.approx(expected, rel=1e-5)


def test_vqa_score_known_numbers() -> None:
    scores = np.array([[0.0, 1 / 3, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    probs = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.1]])
    assert vqa_score(scores, probs) == pytest.approx((1 / 3 + 1.0 + 0.0) / 3)
    m = compute_metrics({"answer": scores}, {"answer": probs})
    assert m["vqa_score"] == pytest.approx(4 / 9)
    assert m["exact_accuracy"] == pytest.approx(1 / 3)  # only question 2 picks its best answer


def test_test_set_metrics_names_and_group_means() -> None:
    m = {**prefixed_metrics("ood_qt", {"vqa_score": 0.2}), **prefixed_metrics("ood_ko", {"vqa_score": 0.4})}
    assert m == {"ood_qt_vqa_score": 0.2, "ood_ko_vqa_score": 0.4}
    assert group_means(m, ["ood_qt", "ood_ko"]) == pytest.approx({"ood_mean_vqa_score": 0.3})
    assert group_means(m, ["ood_qt"]) == {}  # a group of one has no mean


@pytest.mark.parametrize("num_images", [1, 2])
def test_every_paradigm_builds_and_trains(num_images: int) -> None:
    torch.manual_seed(0)
    cfg = tiny_model_config()
    enc = TransformersEncoders(vocab_size=30, image_size=16, num_images=num_images, max_text_length=6)
    spec = TaskSpec(("image", "text"), {"answer": 5}, ("answer",))
    img_shape = (3, 3, 16, 16) if num_images == 1 else (3, 2, 3, 16, 16)
    ids = torch.tensor([[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0], [2, 9, 9, 9, 9, 3]])
    inputs = {"image": torch.randn(img_shape), "text": ids}
    for paradigm in ("unimodal_image", "unimodal_text", "inter", "intra", "i2m2"):
        model = build_model(paradigm, spec, cfg, enc)  # type: ignore[arg-type]
        out = model(inputs)["answer"]
        assert out.shape == (3, 5)
        out.sum().backward()
        assert all(p.grad is not None for n, p in model.named_parameters() if "heads" in n)
    i2m2 = build_model("i2m2", spec, cfg, enc)  # type: ignore[arg-type]
    assert sorted(i2m2.experts) == ["image", "inter", "text"]
    if num_images == 2:  # the inter expert tells the images apart by token type
        vilt = i2m2.experts["inter"].encoder.backbone
        assert vilt.embeddings.token_type_embeddings.num_embeddings == 3


def test_padding_is_masked_out() -> None:
    torch.manual_seed(0)
    cfg = tiny_model_config()
    enc = TransformersEncoders(vocab_size=30, image_size=16, max_text_length=8)
    model = build_model("unimodal_text", TaskSpec(("image", "text"), {"label": 2}), cfg, enc)  # type: ignore[arg-type]
    model.eval()
    short = torch.tensor([[2, 5, 3, 0]])
    longer = torch.tensor([[2, 5, 3, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(model({"text": short})["label"], model({"text": longer})["label"])


def test_missing_modality_and_options_are_named() -> None:
    cfg = tiny_model_config()
    enc = TransformersEncoders(vocab_size=30, image_size=16)
    inter = build_model("inter", TaskSpec(("image", "text"), {"label": 2}), cfg, enc)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="missing modality 'text'"):
        inter({"image": torch.zeros(1, 3, 16, 16)})
    bare = load_config(None, ["model.inter_fusion=joint"]).model
    with pytest.raises(ValueError, match=r"model.options.text is not set"):
        enc(["text"], bare)
