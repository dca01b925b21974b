"""One experiment's pipeline over several seeds, compared (issue 17): mean ± std per paradigm
and metric, and I2M2 against each other paradigm as paired differences over the seeds.

    python experiments/study.py --experiment fastmri --seeds 0 1 2
    python experiments/study.py --experiment avmnist --seeds 0 1 2 --data-dir /data/avmnist
    python experiments/study.py --experiment fastmri --seeds 0 1 2 --table-only   # compare what is there
"""

from __future__ import annotations

import sys

from i2m2_ray.cli.study import main as study_main


def main() -> None:
    sys.exit(study_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
