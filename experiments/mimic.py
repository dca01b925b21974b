"""MIMIC-III (MultiBench ``im.pk``): fit an MLP expert on the static features, a GRU expert
on the time series and a late-fusion inter expert on Ray, train the intra and I2M2
products, compare every paradigm in MLflow.

Local (starts a Ray of its own, writes and uses the generated sample):
    python experiments/mimic.py                      # mortality, 6 classes
    python experiments/mimic.py --task icd9_1        # ICD-9 group 1 (140-239), binary
Real data: a pickle runs code when loaded, so it is read only with --trust-pickle; or
convert it once to a safe .npz and point --data-dir at that:
    python -m i2m2_ray.data.mimic convert /data/im.pk /data/im.npz --trust-pickle
    python experiments/mimic.py --data-dir /data/im.npz --task mortality
"""

from __future__ import annotations

import sys

from i2m2_ray.cli import run_experiment


def main() -> None:
    sys.exit(run_experiment("mimic"))


if __name__ == "__main__":
    main()
