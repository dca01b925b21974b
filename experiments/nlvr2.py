"""NLVR2: fit the experts on Ray, fine-tune I2M2, compare every paradigm in MLflow.

Local (starts a Ray of its own, writes and uses the generated sample):
    python experiments/nlvr2.py
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python experiments/nlvr2.py --data-dir /data/nlvr2_arrow --use-gpu --num-workers 4
"""

from __future__ import annotations

import sys

from i2m2_ray.cli import run_experiment


def main() -> None:
    sys.exit(run_experiment("nlvr2"))


if __name__ == "__main__":
    main()
