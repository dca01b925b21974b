"""Relative and effective robustness of hand-made curves; the noise generators."""

from __future__ import annotations

import numpy as np
import pytest

from i2m2_ray.evaluation.robustness import (
    DEFAULT_LEVELS,
    effective_robustness,
    gaussian_noise,
    relative_robustness,
    token_dropout,
)


def test_default_levels_are_exact_decimals() -> None:
    assert len(DEFAULT_LEVELS) == 11
    assert DEFAULT_LEVELS[0] == 0.0 and DEFAULT_LEVELS[-1] == 1.0
    assert DEFAULT_LEVELS[3] == 0.3 and DEFAULT_LEVELS[7] == 0.7  # not 0.1 * 3 = 0.30000000000000004
    assert [str(level) for level in DEFAULT_LEVELS] == [f"0.{i}" for i in range(10)] + ["1.0"]


def test_relative_robustness_is_the_trapezoid_area() -> None:
    assert relative_robustness(DEFAULT_LEVELS, [0.8] * 11) == pytest.approx(0.8)
    assert relative_robustness(DEFAULT_LEVELS, [1 - level for level in DEFAULT_LEVELS]) == pytest.approx(0.5)
    # uneven steps: 0.5 * (1 + 1) / 2 + 1.5 * (1 + 0) / 2
    assert relative_robustness([0.0, 0.5, 2.0], [1.0, 1.0, 0.0]) == pytest.approx(1.25)


def test_effective_robustness_by_hand() -> None:
    # baseline shifted to the model's clean score: 0.9, 0.7, 0.5 -> gains 0, 0.1, 0.2
    assert effective_robustness([0.0, 0.1, 0.2], [0.9, 0.8, 0.7], [0.8, 0.6, 0.4]) == pytest.approx(0.3)
    # a curve parallel to the baseline gains nothing; its baseline against it loses
    assert effective_robustness([0.0, 0.5], [0.7, 0.6], [0.9, 0.8]) == pytest.approx(0.0)
    assert effective_robustness([0.0, 0.5], [0.9, 0.6], [0.9, 0.8]) == pytest.approx(-0.2)


def test_curves_are_checked() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        relative_robustness([0.0, 0.2, 0.1], [1, 1, 1])
    with pytest.raises(ValueError, match="one value per noise level"):
        effective_robustness([0.0, 0.1], [1.0, 0.9], [1.0])
    with pytest.raises(ValueError, match="at least two"):
        relative_robustness([0.0], [1.0])


def test_gaussian_noise_level_zero_returns_the_input_exactly() -> None:
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    out = gaussian_noise(x, 0.0, 1.0, np.random.default_rng(1))
    assert out is not x and out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_gaussian_noise_scales_with_level_and_per_feature_std() -> None:
    x = np.ones((20000, 2), dtype=np.float32)
    out = gaussian_noise(x, 0.5, np.array([1.0, 10.0]), np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_allclose((out - x).std(axis=0), [0.5, 5.0], rtol=0.03)
    np.testing.assert_allclose((out - x).mean(axis=0), [0.0, 0.0], atol=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        gaussian_noise(x, -0.1, 1.0, np.random.default_rng(0))


def padded_ids(rows: int, length: int, pad_id: int, seed: int) -> np.ndarray:
    """``[CLS]`` (101) then random tokens, right-padded to random lengths of 1 to ``length``."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 2000, size=(rows, length))
    ids[:, 0] = 101
    lengths = rng.integers(1, length + 1, rows)
    ids[np.arange(length)[None, :] >= lengths[:, None]] = pad_id
    return ids


def test_token_dropout_level_zero_and_one() -> None:
    ids = padded_ids(50, 12, pad_id=0, seed=0)
    same = token_dropout(ids, 0.0, 0, np.random.default_rng(0))
    assert same is not ids
    np.testing.assert_array_equal(same, ids)
    emptied = token_dropout(ids, 1.0, 0, np.random.default_rng(0))
    assert (emptied[:, 0] == 101).all() and (emptied[:, 1:] == 0).all()
    assert (token_dropout(ids, 1.0, 0, np.random.default_rng(0), keep_first=False) == 0).all()


def test_token_dropout_drops_about_level_of_the_tokens_and_never_padding() -> None:
    pad = 3
    ids = padded_ids(400, 30, pad_id=pad, seed=1)
    out = token_dropout(ids, 0.3, pad, np.random.default_rng(2))
    assert out.dtype == ids.dtype
    np.testing.assert_array_equal(out[:, 0], ids[:, 0])  # [CLS] kept
    padding = ids == pad
    assert (out[padding] == pad).all()
    droppable = ~padding
    droppable[:, 0] = False
    dropped = droppable & (out == pad)
    assert dropped.sum() / droppable.sum() == pytest.approx(0.3, abs=0.02)
    kept = droppable & ~dropped
    np.testing.assert_array_equal(out[kept], ids[kept])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        token_dropout(ids, 1.5, pad, np.random.default_rng(0))
