"""Comparing paradigms over seeds: mean and spread, and the paired difference of two paradigms.

Runs of two paradigms that share a seed share their data split and initial draws, so their
per-seed values are paired and the paired t-test (on the per-seed differences) is the test
that uses that.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from scipy import stats

Values = Sequence[float] | np.ndarray  # a 1-D run of numbers: a list, tuple or array

PAIRED_TEST = "paired two-sided t-test (scipy.stats.ttest_rel)"


class PairedDifference(TypedDict):
    """The result of :func:`paired_difference`."""

    mean_difference: float  # mean over seeds of a - b
    ci_low: float  # t-based interval of the mean difference
    ci_high: float
    statistic: float  # the t statistic
    p_value: float  # two-sided
    n: int  # number of pairs (seeds)
    test: str
    note: str  # empty, or why the interval and p-value are NaN


def mean_std(values: Values) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed values.

    One value gives ``(value, nan)``: a spread needs two; none gives ``(nan, nan)``.
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    return float(np.mean(v)), std


def paired_difference(a: Values, b: Values, level: float = 0.95) -> PairedDifference:
    """Mean of ``a - b`` over paired values, its t interval, and the paired t-test.

    With ``d = a - b`` over ``n`` pairs, the interval is ``mean(d) +- t_{n-1, (1+level)/2} *
    std(d, ddof=1) / sqrt(n)``, and the test's statistic is ``mean(d) / (std(d) / sqrt(n))``
    with ``n - 1`` degrees of freedom. Differences that are all equal give a zero-width
    interval and scipy's statistic (infinite, or NaN when they are all 0).

    Args:
        a: ``(n,)`` per-seed values of one paradigm.
        b: ``(n,)`` the other paradigm's values for the same seeds, in the same order.
        level: coverage of the interval, in ``(0, 1)``.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need equal lengths; got {x.shape} and {y.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    d, n = x - y, len(x)
    mean = float(np.mean(d)) if n else math.nan
    if n < 2:
        nan = math.nan
        note = f"{n} pair(s): an interval and a test need at least 2"
        return PairedDifference(
            mean_difference=mean, ci_low=nan, ci_high=nan, statistic=nan, p_value=nan, n=n, test=PAIRED_TEST, note=note
        )
    half = float(stats.t.ppf(0.5 * (1.0 + level), df=n - 1)) * float(np.std(d, ddof=1)) / math.sqrt(n)
    with warnings.catch_warnings():
        # equal differences: scipy warns of zero variance, then returns the documented inf / NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(x, y)
    return PairedDifference(
        mean_difference=mean,
        ci_low=mean - half,
        ci_high=mean + half,
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        n=n,
        test=PAIRED_TEST,
        note="",
    )
