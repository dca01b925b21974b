"""The VQA experts on a GPU: bf16 autocast and gradient accumulation through the loop's
``train_epoch``, at the pretrained models' sizes (ViLT-B/32, ViT-B/32, BERT-base shapes;
random weights, nothing downloaded). Skipped without CUDA; no Ray needed."""

from __future__ import annotations

import time

import pytest
import torch

from i2m2_ray.config import load_config
from i2m2_ray.models.build import build_model
from i2m2_ray.models.transformers_experts import TransformersEncoders
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.loop import StepSettings, predict, train_epoch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BASE = "{hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072"
ANSWERS = 3129  # VQA v2 / VQA-VS answer vocabulary


def batches(n: int, size: int, batch: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(4, 30522, (batch, 40), generator=g)
        ids[:, 20:] = 0
        y = torch.zeros(batch, ANSWERS)
        y[torch.arange(batch), torch.randint(0, ANSWERS, (batch,), generator=g)] = 1.0
        out.append(
            {
                "image": torch.randn(batch, 3, size, size, generator=g).cuda(),
                "text": ids.cuda(),
                "y_answer": y.cuda(),
            }
        )
    return out


@pytest.mark.parametrize("paradigm", ["inter", "i2m2"])
def test_base_size_bf16_with_grad_accumulation(paradigm: str) -> None:
    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            "model.inter_fusion=joint",
            "model.head_hidden=1536",
            f"model.options={{text: {BASE}}}, image: {BASE}, patch_size: 32}}, inter: {BASE}, patch_size: 32}}}}",
        ],
    ).model
    enc = TransformersEncoders(vocab_size=30522, image_size=384, max_text_length=40)
    spec = TaskSpec(("image", "text"), {"answer": ANSWERS}, ("answer",))
    model = build_model(paradigm, spec, cfg, enc).cuda()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    data = batches(4, 384, 32, seed=1)
    torch.cuda.reset_peak_memory_stats()
    train_epoch(model, data[:2], spec, opt, params, {}, StepSettings(grad_accum_steps=2, precision="bf16"))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    seen, total = train_epoch(model, data, spec, opt, params, {}, StepSettings(grad_accum_steps=2, precision="bf16"))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert seen == 128 and torch.isfinite(torch.tensor(total))
    assert all(p.dtype == torch.float32 for p in params)  # weights stay fp32 under autocast
    labels, probs = predict(model, data[:1], spec, precision="bf16")
    assert probs["answer"].shape == (32, ANSWERS) and labels["answer"].shape == (32, ANSWERS)
    print(
        f"\n{paradigm}: {seen / dt:.0f} questions/s (bf16, 32 x 2 accumulated, 384x384), "
        f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB on {torch.cuda.get_device_name()}"
    )


def test_bf16_matches_fp32_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    tiny = "{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64"
    cfg = load_config(
        None,
        [
            "model.inter_fusion=joint",
            f"model.options={{text: {tiny}}}, image: {tiny}, patch_size: 8}}, inter: {tiny}, patch_size: 8}}}}",
        ],
    ).model
    enc = TransformersEncoders(vocab_size=100, image_size=32, max_text_length=16)
    spec = TaskSpec(("image", "text"), {"answer": 10}, ("answer",))
    model = build_model("i2m2", spec, cfg, enc).cuda().eval()
    x = {"image": torch.randn(8, 3, 32, 32).cuda(), "text": torch.randint(4, 100, (8, 16)).cuda()}
    with torch.no_grad():
        full = model(x)["answer"]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x)["answer"].float()
    torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)
