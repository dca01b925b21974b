"""Command lines of the experiment scripts (``experiments/<name>.py``) and of the sweep
(``experiments/search.py``): they sit above the pipeline and the tuning package, which never
import them."""

from i2m2_ray.cli.common import CONFIG_DIR, build_parser, resolve_config
from i2m2_ray.cli.experiment import run_experiment
from i2m2_ray.cli.session import check_shared_storage, init_ray

__all__ = ["CONFIG_DIR", "build_parser", "check_shared_storage", "init_ray", "resolve_config", "run_experiment"]
