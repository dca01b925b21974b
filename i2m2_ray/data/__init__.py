"""Dataset modules: real-format readers, Ray Data pipelines and sample generators.

Each module exposes ``load(cfg, data_dir, annotations, work_dir) -> PreparedData`` (real
data from ``data_dir``, or a generated sample written once under ``work_dir`` when it is
None), ``SMOKE_OVERRIDES`` (config overrides for ``--smoke-test``) and ``SUMMARY_COLUMNS``
(metrics of the final table); optionally ``add_arguments(parser)`` and
``argument_overrides(args) -> list[str]`` for dataset-specific flags. :data:`DATASETS`
maps an experiment name to its module; adding a dataset adds a module, encoders and a
config, nothing in the core.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from i2m2_ray.data.base import DataError, PreparedData

DATASETS = {
    "fastmri": "i2m2_ray.data.fastmri",
    "avmnist": "i2m2_ray.data.avmnist",
    "mimic": "i2m2_ray.data.mimic",
    "vqa": "i2m2_ray.data.vqa",
    "nlvr2": "i2m2_ray.data.nlvr2",
}


def dataset_module(name: str) -> ModuleType:
    if name not in DATASETS:
        raise ValueError(f"unknown experiment '{name}'; known: {sorted(DATASETS)}")
    return importlib.import_module(DATASETS[name])


__all__ = ["DATASETS", "DataError", "PreparedData", "dataset_module"]
