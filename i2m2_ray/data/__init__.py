"""Datasets: real-format readers, Ray Data pipelines and sample generators, one module each.

**The contract** (:mod:`i2m2_ray.data.base`). A dataset is a class implementing
:class:`Dataset`, registered under its experiment name::

    @register_dataset("avmnist")
    class AVMNIST(Dataset):
        flags = (Flag("--task", "data.options.task", choices=(...), implies={...}),)  # optional

        def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData: ...

``load`` reads ``cfg.data.data_dir`` / ``cfg.data.annotations`` (the command line's
``--data-dir`` / ``--annotations``), or writes a generated sample once under ``work_dir``
when ``data_dir`` is None, and returns :class:`PreparedData`: the task spec, lazy Ray
Datasets per split, class counts, sizes, and in ``info`` the input facts the encoders are
built from (``info["inputs"]``: modality -> shape of one sample; see
:data:`i2m2_ray.data.base.FACTS`). Datasets build no model and parse no arguments:

* encoders come from :mod:`i2m2_ray.models.registry`, chosen by ``model.encoder``, which
  also checks the ``model`` section against the facts before any training starts;
* dataset-specific command-line options are declared as :class:`Flag` data, which the
  experiment scripts turn into ``argparse`` options;
* ``--smoke-test`` settings are ``configs/smoke/<name>.yaml`` (``<name>_real.yaml`` with
  ``--data-dir``); the metrics of the final table are the config's ``report.metrics``;
* an optional ``check_config(cfg)`` method checks the ``data`` settings without reading a
  file (:func:`check_data_config`: before Ray starts, and for every search-space choice).

A reader run in ``map_batches`` raises :class:`DataError` naming the file, field and row;
:func:`data_error_from` finds it again in the errors Ray wraps it in.

**Lookup**: :func:`get_dataset` finds the five built-ins (imported on first use), datasets
registered by importing a plugin module (``--plugin MODULE`` of ``experiments/run.py``, or
``I2M2_PLUGINS=mod1,mod2``), and those installed packages declare in the entry-point group
``i2m2_ray.datasets``. Adding a dataset is a module and a config, nothing in the core:
``docs/adding-a-dataset.md``.
"""

from __future__ import annotations

from i2m2_ray.data.base import FACTS, DataError, Dataset, Flag, PreparedData, data_error_from
from i2m2_ray.data.registry import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    check_data_config,
    dataset_names,
    get_dataset,
    load_plugins,
    register_dataset,
)

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "FACTS",
    "PLUGINS_ENV",
    "DataError",
    "Dataset",
    "Flag",
    "PreparedData",
    "check_data_config",
    "data_error_from",
    "dataset_names",
    "get_dataset",
    "load_plugins",
    "register_dataset",
]
