"""The per-step options of the one training loop, with known answers (no Ray needed)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.loop import StepSettings, _with_last, train_epoch

SPEC = TaskSpec(("x",), {"y": 2})


class LinearHead(nn.Module):
    """``{"x": (B, 3)} -> {"y": (B, 2)}`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [0.0, 2.0, -0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2]))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"y": self.fc(inputs["x"])}


class ConvHead(nn.Module):
    """``{"x": (B, 2, 6, 6)} -> {"y": (B, 2)}``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"y": self.fc(self.conv(inputs["x"]).mean(dim=(2, 3)))}


def _batches(n_batches: int, n: int, shape: tuple[int, ...] = (3,)) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        {"x": torch.randn(n, *shape, generator=g), "y_y": torch.randint(0, 2, (n,), generator=g)}
        for _ in range(n_batches)
    ]


def _cat(batches: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _fit(
    model: nn.Module, batches: list[dict[str, Tensor]], settings: StepSettings, lr: float = 0.5
) -> tuple[int, float]:
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    return train_epoch(model, batches, SPEC, opt, params, {}, settings)


def test_two_accumulated_batches_of_n_equal_one_batch_of_2n() -> None:
    b = _batches(2, 4)
    accumulated, single = LinearHead(), LinearHead()
    seen, total = _fit(accumulated, b, StepSettings(grad_accum_steps=2))
    _fit(single, [_cat(b)], StepSettings(grad_accum_steps=1))
    assert seen == 8
    torch.testing.assert_close(accumulated.fc.weight, single.fc.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(accumulated.fc.bias, single.fc.bias, rtol=0, atol=1e-6)
    # one step happened: the weights moved
    assert not torch.allclose(single.fc.weight, LinearHead().fc.weight)


def test_without_accumulation_each_batch_is_a_step() -> None:
    b = _batches(2, 4)
    stepwise, single = LinearHead(), LinearHead()
    _fit(stepwise, b, StepSettings(grad_accum_steps=1))
    _fit(single, [_cat(b)], StepSettings(grad_accum_steps=1))
    assert not torch.allclose(stepwise.fc.weight, single.fc.weight, atol=1e-4)


def test_short_last_group_is_rescaled_to_its_mean() -> None:
    # 3 micro-batches, 2 per step: steps on (b0 + b1) and on b2 alone
    b = _batches(3, 4)
    accumulated, reference = LinearHead(), LinearHead()
    _fit(accumulated, b, StepSettings(grad_accum_steps=2))
    _fit(reference, [_cat(b[:2]), b[2]], StepSettings(grad_accum_steps=1))
    torch.testing.assert_close(accumulated.fc.weight, reference.fc.weight, rtol=0, atol=1e-6)


def test_clipping_applies_to_the_accumulated_gradient() -> None:
    b = _batches(2, 4)
    accumulated, single = LinearHead(), LinearHead()
    _fit(accumulated, b, StepSettings(grad_accum_steps=2, grad_clip=0.01))
    _fit(single, [_cat(b)], StepSettings(grad_clip=0.01))
    torch.testing.assert_close(accumulated.fc.weight, single.fc.weight, rtol=0, atol=1e-6)
    # a clipped step of lr 0.5 moves the weights by at most 0.5 * 0.01 in norm
    moved = torch.cat([(single.fc.weight - LinearHead().fc.weight).flatten(), single.fc.bias - LinearHead().fc.bias])
    assert moved.norm() <= 0.5 * 0.01 + 1e-6


def test_returned_loss_is_the_summed_per_sample_loss_before_the_step() -> None:
    # one batch: the loss is computed with the initial weights
    b = _batches(1, 5)
    model = LinearHead()
    expected = nn.functional.cross_entropy(model({"x": b[0]["x"]})["y"], b[0]["y_y"]).item() * 5
    seen, total = _fit(model, b, StepSettings())
    assert seen == 5
    assert total == pytest.approx(expected, rel=1e-6)


def test_bf16_autocast_keeps_fp32_weights_and_stays_close_to_fp32() -> None:
    b = _batches(2, 8)
    fp32, bf16 = LinearHead(), LinearHead()
    _, loss32 = _fit(fp32, b, StepSettings(precision="fp32"), lr=0.1)
    _, loss16 = _fit(bf16, b, StepSettings(precision="bf16"), lr=0.1)
    assert bf16.fc.weight.dtype == torch.float32
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    torch.testing.assert_close(bf16.fc.weight, fp32.fc.weight, rtol=0, atol=2e-2)


def test_channels_last_gives_the_same_step() -> None:
    b = _batches(2, 3, shape=(2, 6, 6))
    plain = ConvHead()
    nhwc = ConvHead().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    _fit(plain, b, StepSettings(), lr=0.1)
    _fit(nhwc, b, StepSettings(channels_last=True), lr=0.1)
    torch.testing.assert_close(nhwc.conv.weight, plain.conv.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nhwc.fc.weight, plain.fc.weight, rtol=1e-5, atol=1e-6)


def test_no_batches_no_step() -> None:
    model = LinearHead()
    assert _fit(model, [], StepSettings(grad_accum_steps=2)) == (0, 0.0)
    torch.testing.assert_close(model.fc.weight, LinearHead().fc.weight)


def test_with_last_marks_only_the_last_item() -> None:
    assert list(_with_last([1, 2, 3])) == [(1, False), (2, False), (3, True)]
    assert list(_with_last([7])) == [(7, True)]
    assert list(_with_last([])) == []


# ---- optimizers, schedules and loss reduction from the config ---------------------------


def _settings(*overrides: str) -> Any:
    from i2m2_ray.config import load_config

    return load_config(None, list(overrides)).training("inter")


def test_optimizers_follow_the_config() -> None:
    from i2m2_ray.training.loop import make_optimizer, param_groups

    model = LinearHead()
    rms = make_optimizer(param_groups(model), _settings("train.optimizer=rmsprop", "train.lr=1e-3"))
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.99 and rms.defaults["eps"] == 1e-8
    adamw = make_optimizer(param_groups(model), _settings("train.betas=[0.9, 0.98]", "train.weight_decay=0.01"))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.9, 0.98) and adamw.param_groups[0]["weight_decay"] == 0.01
    sgd = make_optimizer(param_groups(model), _settings("train.optimizer=sgd", "train.momentum=0"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0


def test_heads_learn_at_their_multiple_of_the_rate() -> None:
    from i2m2_ray.models.experts import MultiHead
    from i2m2_ray.training.loop import make_optimizer, param_groups

    model = nn.Sequential(nn.Linear(3, 4), MultiHead(4, {"y": 2}))
    opt = make_optimizer(param_groups(model, 50.0), _settings("train.lr=2e-5", "train.head_lr_mult=50"))
    head_ids = {id(p) for p in model[1].parameters()}
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(lrs[i] == pytest.approx(1e-3) for i in head_ids)
    assert all(lr == pytest.approx(2e-5) for i, lr in lrs.items() if i not in head_ids)
    assert len(lrs) == len(list(model.parameters()))


def test_linear_schedule_warms_up_then_decays_to_zero() -> None:
    from i2m2_ray.training.loop import make_optimizer, make_scheduler, param_groups, steps_per_epoch

    t = _settings("train.lr=1.0", "train.schedule=linear", "train.warmup=0.2", "train.epochs=2")
    assert steps_per_epoch(train_size=40, world=2, batch_size=4, accum=1) == 5
    opt = make_optimizer(param_groups(LinearHead()), t)
    sched = make_scheduler(opt, t, steps_per_epoch=5)  # 10 steps in all, 2 of warm-up
    assert sched is not None
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert make_scheduler(opt, _settings(), 5) is None  # constant: no scheduler


def test_summed_head_losses_are_the_mean_times_the_heads() -> None:
    from i2m2_ray.training.loop import loss_fn

    g = torch.Generator().manual_seed(0)
    out = {h: torch.randn(5, 2, generator=g) for h in ("a", "b", "c", "d")}
    batch = {f"y_{h}": torch.randint(0, 2, (5,), generator=g) for h in out}
    mean, total = loss_fn(out, batch, {}), loss_fn(out, batch, {}, "sum")
    torch.testing.assert_close(total, 4 * mean)
    expected = sum(torch.nn.functional.cross_entropy(out[h], batch[f"y_{h}"]) for h in out)
    torch.testing.assert_close(total, expected)
