"""Any registered experiment: a built-in dataset or one a plugin module registers.

    python experiments/run.py --experiment avmnist --smoke-test
    python experiments/run.py --experiment toy --plugin mypackage.toy --config configs/toy_demo.yaml

``--plugin MODULE`` (repeatable; or ``I2M2_PLUGINS=mod1,mod2``) imports a module whose
``@register_dataset`` classes become experiments (docs/adding-a-dataset.md); the other
options are those of every experiment script (``--data-dir``, ``--config``, ``--set``,
``--smoke-test``, ...) plus the dataset's own flags.
"""

from __future__ import annotations

import sys

from i2m2_ray.cli import run_experiment


def main() -> None:
    sys.exit(run_experiment(None))


if __name__ == "__main__":
    main()
