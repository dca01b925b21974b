"""VQA-VS: fit the experts on Ray, fine-tune I2M2, compare every paradigm in MLflow.

Local (starts a Ray of its own, writes and uses the generated sample):
    python experiments/vqa.py
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python experiments/vqa.py --data-dir /data/vqavs_arrow --use-gpu --num-workers 4
"""

from __future__ import annotations

import sys

from i2m2_ray.cli import run_experiment


def main() -> None:
    sys.exit(run_experiment("vqa"))


if __name__ == "__main__":
    main()
