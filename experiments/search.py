"""Hyper-parameter search over I2M2 (Optuna TPE + ASHA on Ray Tune, Ray Train per trial).

Local (starts a Ray of its own, writes and uses the generated sample):
    python experiments/search.py --experiment fastmri --trials 40 --max-concurrent 4
Continue an interrupted sweep (same --output-dir and --name):
    python experiments/search.py --experiment fastmri --resume
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python experiments/search.py --experiment fastmri --trials 40 --max-concurrent 8 \
        --data-dir /data/knee --annotations /data/fastmri-plus/Annotations --output-dir /shared/out
"""

from __future__ import annotations

import sys

from i2m2_ray.cli.search import main as search_main


def main() -> None:
    sys.exit(search_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
