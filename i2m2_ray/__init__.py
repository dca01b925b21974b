"""I2M2 on Ray: inter- and intra-modality experts combined as a product of experts.

Importing the package has no side effects (and does not import torch until a model name is
used): Ray is started, arguments parsed and files read only by the experiment scripts'
``main()``.
"""

from __future__ import annotations

from typing import Any

from i2m2_ray.config import ExperimentConfig, load_config
from i2m2_ray.spec import TaskSpec

__all__ = ["ExperimentConfig", "TaskSpec", "build_model", "load_config", "product_of_experts"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # torch-backed names load on first use, so light modules (the Ray Data preprocessing)
    # import without torch
    if name in ("build_model", "product_of_experts"):
        from i2m2_ray import models

        return getattr(models, name)
    raise AttributeError(f"module 'i2m2_ray' has no attribute {name!r}")
