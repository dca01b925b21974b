"""AV-MNIST: fit a LeNet expert per modality and a late-fusion inter expert on Ray, train
the intra and I2M2 products, compare every paradigm in MLflow.

Local (starts a Ray of its own, writes and uses the generated sample):
    python experiments/avmnist.py
Real data (the MultiBench folder with image/, audio/ and the label files):
    python experiments/avmnist.py --data-dir /data/avmnist
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python experiments/avmnist.py --data-dir /data/avmnist
"""

from __future__ import annotations

import sys

from i2m2_ray.cli import run_experiment


def main() -> None:
    sys.exit(run_experiment("avmnist"))


if __name__ == "__main__":
    main()
