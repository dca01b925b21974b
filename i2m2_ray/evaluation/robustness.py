"""Robustness to noisy inputs: summaries of a metric-against-noise-level curve (MultiBench's
relative and effective robustness) and the noise that produces such curves.

A curve is a metric measured at increasing noise levels, ``levels[0]`` being the clean
input (level 0). The noise generators take a ``numpy.random.Generator`` so that every
level of every paradigm can be given its own, reproducible draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Values = Sequence[float] | np.ndarray  # a 1-D run of numbers: a list, tuple or array
# 0, 0.1, ..., 1.0 written out, so each is the double nearest its decimal (0.3, not 0.30000000000000004)
DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _curve(levels: Values, scores: Values, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Levels and scores as float arrays, checked: same length, levels strictly increasing."""
    x, y = np.asarray(levels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{name} need one value per noise level; got {y.shape} for levels {x.shape}")
    if len(x) == 0:
        raise ValueError("a robustness curve needs at least one noise level")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"noise levels must be strictly increasing; got {x.tolist()}")
    return x, y


def relative_robustness(levels: Values, scores: Values) -> float:
    """Area under the metric-against-noise-level curve, by the trapezoid rule.

    With :data:`DEFAULT_LEVELS` (step 0.1) this is MultiBench's relative robustness
    (``trapz(scores, dx=0.1)``); a perfectly robust model with score ``s`` scores ``s``.
    MultiBench then min-max normalises it against its published tables of other methods,
    which we cannot reproduce, so the value here is the raw area.

    Args:
        levels: ``(L,)`` strictly increasing noise levels, at least two.
        scores: ``(L,)`` the metric at each level.
    """
    x, y = _curve(levels, scores)
    if len(x) < 2:
        raise ValueError("the area under a curve needs at least two noise levels")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def effective_robustness(levels: Values, scores: Values, baseline_scores: Values) -> float:
    """How much better a model holds up under noise than a baseline shifted to its clean score.

    MultiBench's definition: ``sum_i (f_i - (b_i + f_0 - b_0))``, where ``f`` is this curve and
    ``b`` the baseline's (late fusion in MultiBench), both measured at the same levels and
    index 0 the clean level. Positive: the model loses less than the baseline as noise grows.
    It is a plain sum over levels (not an area), so it scales with the number of levels.
    MultiBench additionally min-max normalises it against its published tables, which we
    cannot reproduce, so the value here is raw.

    Args:
        levels: ``(L,)`` strictly increasing noise levels; ``levels[0]`` is the clean input.
        scores: ``(L,)`` the model's metric at each level.
        baseline_scores: ``(L,)`` the baseline's metric at the same levels.
    """
    _, f = _curve(levels, scores)
    _, b = _curve(levels, baseline_scores, "baseline_scores")
    return float(np.sum(f - (b + f[0] - b[0])))


def gaussian_noise(x: np.ndarray, level: float, std: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` plus Gaussian noise of standard deviation ``level * std``.

    Args:
        x: ``(..., D)`` features (images, time series, ...).
        level: noise level, >= 0 (:data:`DEFAULT_LEVELS` span ``[0, 1]``); 0 returns a copy of
            ``x`` and draws nothing, so the generator's stream is left as it was.
        std: the scale the level is a fraction of, typically each feature's standard deviation
            over the training set: a scalar or an array broadcastable to ``x`` (e.g. ``(D,)``).
        rng: the generator the noise is drawn from.
    Returns:
        An array of ``x``'s shape; of ``x``'s dtype if floating, else float64.
    """
    if level < 0.0:
        raise ValueError(f"noise level must be >= 0; got {level}")
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    if level == 0.0:
        return x.astype(dtype, copy=True)
    scale = level * np.broadcast_to(np.asarray(std, dtype=np.float64), x.shape)
    return (x + scale * rng.standard_normal(x.shape)).astype(dtype)


def token_dropout(
    ids: np.ndarray, level: float, pad_id: int, rng: np.random.Generator, keep_first: bool = True
) -> np.ndarray:
    """Replace text tokens by padding, each independently with probability ``level``.

    Padding is never touched, nor, with ``keep_first``, the first position of each sequence
    (``[CLS]`` for BERT-style tokenizers, which pad on the right); other special tokens, such
    as ``[SEP]``, are dropped like any word. Dropped tokens become
    ``pad_id``, so an attention mask kept alongside the ids should be recomputed as
    ``ids != pad_id``.

    Args:
        ids: ``(..., L)`` token ids, sequences along the last axis.
        level: drop probability in ``[0, 1]``; 0 returns a copy of ``ids``, 1 leaves only the
            kept first tokens (and padding).
        pad_id: the padding token's id.
        rng: the generator the drops are drawn from.
        keep_first: whether position 0 of every sequence is kept.
    Returns:
        ``(..., L)`` ids of ``ids``'s dtype.
    """
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"a drop probability must be in [0, 1]; got {level}")
    ids = np.asarray(ids)
    out = ids.copy()
    if level == 0.0:
        return out
    droppable = ids != pad_id
    if keep_first:
        droppable[..., 0] = False
    # rng.random is in [0, 1), so level 1 drops every droppable token
    out[droppable & (rng.random(ids.shape) < level)] = pad_id
    return out
