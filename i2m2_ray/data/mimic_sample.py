"""Write a small MIMIC-III sample in the MultiBench ``im.pk`` format.

The file is a pickled dict of float64 arrays, exactly the real keys and shapes:
``ep_tdata`` ``(N, 24, 12)``, ``adm_features_all`` ``(N, 5)``, ``adm_labels_all`` ``(N, 6)``
(0./1. mortality flags [in-hospital, 1 day, 2 days, 3 days, 30 days, 1 year], cumulative as
in the real data: dying within 1 day also sets the later columns) and ``y_icd9`` ``(N, 20)``
(0./1. group flags).

What it plants, so that the paradigms differ (static feature ``f``, series variable ``c``):

* **mortality** (class ``y = 2 g + b``, 0 = survived the year):

  - ``g`` in {0, 1, 2} (probabilities 0.5, 0.25, 0.25) -- in each modality alone, better
    in both: static ``f0`` ("age") shifts by 1/1.3 of its noise sd per step of ``g``; series
    ``c0`` (a random walk) has a 3-hour bump at a random hour whose height grows with ``g``
    (noise sd 0.6 of a step). The bump is found only by looking along time, so the series
    expert learns it more slowly than the static shift.
  - ``b`` -- only in the combination: static ``f1`` and series ``c1`` (its level) each carry
    a random sign; ``b = 1`` when the two signs agree. Either alone says nothing on ``b``,
    and a product of unimodal experts cannot express the agreement.

  So the intra product can find ``g`` but not ``b`` (balanced accuracy about 0.4); models
  that see both modalities together (inter, I2M2) can find both.
* **icd9_1** (``y_icd9[:, 1]``): log-odds ``1.5 f2 + 1.5 c2 + j - 0.5``, with ``f2`` and
  ``c2`` independent standard normal cues (one per modality) and ``j = +1`` when the signs
  of ``f3`` and ``c3`` agree, else -1 (joint only).
* **icd9_7** (``y_icd9[:, 7]``): log-odds ``2.5 j + f4 - c4``.
* The other ICD-9 columns are coin flips with probability 0.1.

Edge cases of the real labels are present: in-hospital death (column 0) comes with most
early deaths and with 2% of survivors, whose class stays 0. Series variables ``c5..c11``
are random walks with 5% missing values (NaN) and a few +-inf; static ``f4`` has a few NaN.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

HOURS, SERIES_FEATURES, STATIC_FEATURES = 24, 12, 5
# cue strengths of g (see the module docstring): noise sd, in steps of g, of the static
# shift and of the height of the series bump
G_STATIC_NOISE, G_BUMP_NOISE = 1.3, 0.6


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random signs with magnitudes in [0.5, 1.5] (kept away from 0, so the sign is clear)."""
    return rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 1.5, size=n)


def synth(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The four arrays for ``n`` admissions (see the module docstring)."""
    g = rng.choice(3, size=n, p=[0.5, 0.25, 0.25])
    s_static, s_series = _signs(rng, n), _signs(rng, n)
    b = (np.sign(s_static) == np.sign(s_series)).astype(np.int64)
    y = 2 * g + b

    a_static, a_series = rng.standard_normal(n), rng.standard_normal(n)
    j_static, j_series = _signs(rng, n), _signs(rng, n)
    j = np.where(np.sign(j_static) == np.sign(j_series), 1.0, -1.0)
    e_static, e_series = rng.standard_normal(n), rng.standard_normal(n)

    static = np.stack(
        [
            60.0 + 12.0 * (g + G_STATIC_NOISE * rng.standard_normal(n)),  # age-like
            1.0 + s_static,
            a_static,
            j_static,
            e_static,
        ],
        axis=1,
    )
    series = np.cumsum(0.3 * rng.standard_normal((n, HOURS, SERIES_FEATURES)), axis=1)
    start = rng.integers(2, HOURS - 4, size=n)
    height = 2.0 * (g + G_BUMP_NOISE * rng.standard_normal(n))
    for k in range(3):
        series[np.arange(n), start + k, 0] += height
    series[:, :, 0] = 80.0 + 5.0 * series[:, :, 0]  # a heart-rate-like scale
    series[:, :, 1] = s_series[:, None] + 0.4 * rng.standard_normal((n, HOURS))
    series[:, :, 2] = a_series[:, None] + 0.4 * rng.standard_normal((n, HOURS))
    series[:, :, 3] = j_series[:, None] + 0.4 * rng.standard_normal((n, HOURS))
    series[:, :, 4] = e_series[:, None] + 0.4 * rng.standard_normal((n, HOURS))
    noisy = series[:, :, 5:]
    noisy[rng.random(noisy.shape) < 0.05] = np.nan
    noisy[rng.random(noisy.shape) < 0.001] = np.inf
    noisy[rng.random(noisy.shape) < 0.001] = -np.inf
    static[rng.random(n) < 0.02, 4] = np.nan

    adm = np.zeros((n, 6))
    for k in range(1, 6):
        adm[:, k] = (y >= 1) & (y <= k)  # died within horizon k: every later horizon is set too
    p_hospital = np.array([0.02, 0.9, 0.9, 0.9, 0.5, 0.1])[y]
    adm[:, 0] = rng.random(n) < p_hospital

    icd = (rng.random((n, 20)) < 0.1).astype(np.float64)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    icd[:, 1] = rng.random(n) < sigmoid(1.5 * a_static + 1.5 * a_series + j - 0.5)
    icd[:, 7] = rng.random(n) < sigmoid(2.5 * j + e_static - e_series)
    return {
        "ep_tdata": series.astype(np.float64),
        "adm_features_all": static.astype(np.float64),
        "adm_labels_all": adm.astype(np.float64),
        "y_icd9": icd,
    }


def write_sample(path: str | Path, samples: int = 10000, seed: int = 0) -> Path:
    """Write ``samples`` admissions to the pickle ``path``; return ``path``."""
    if samples < 10:
        raise ValueError(f"need at least 10 samples (validation and test take N // 10 each), got {samples}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = synth(np.random.default_rng(seed), samples)
    tmp = p.with_name(f".{p.name}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(data, fh, protocol=4)
    tmp.replace(p)
    return p


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a MIMIC-III sample in the MultiBench im.pk format")
    ap.add_argument("--out", required=True, help="the pickle to write, e.g. sample/im.pk")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(write_sample(args.out, args.samples, args.seed))


if __name__ == "__main__":
    main()
