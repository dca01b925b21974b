"""Datasets by experiment name: the five built-ins (imported on first use), datasets that
plugin modules register when imported (``--plugin MODULE``, ``I2M2_PLUGINS``), and those of
installed packages (entry-point group ``i2m2_ray.datasets``)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import TypeVar

from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.data.base import DataError, Dataset

# experiment name -> module that registers it (imported when the name is first asked for)
BUILTINS = {
    "fastmri": "i2m2_ray.data.fastmri",
    "avmnist": "i2m2_ray.data.avmnist",
    "mimic": "i2m2_ray.data.mimic",
    "vqa": "i2m2_ray.data.vqa",
    "nlvr2": "i2m2_ray.data.nlvr2",
}
PLUGINS_ENV = "I2M2_PLUGINS"  # comma-separated modules to import before a lookup
ENTRY_POINT_GROUP = "i2m2_ray.datasets"  # name = experiment, value = a module or a Dataset class

_registered: dict[str, type[Dataset]] = {}
_discovered = False

D = TypeVar("D", bound=type)


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator: make ``cls`` (a :class:`~i2m2_ray.data.base.Dataset`) the dataset of
    experiment ``name``.

    A second class under a taken name is an error (the same class imported again, e.g. under
    another module name, replaces itself).
    """

    def register(cls: D) -> D:
        if not callable(getattr(cls, "load", None)):
            raise TypeError(f"{cls.__qualname__} has no load(cfg, work_dir) method; it cannot be dataset '{name}'")
        taken = _registered.get(name)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"dataset '{name}' is already registered by {taken.__module__}.{taken.__qualname__}; "
                f"cannot register {cls.__module__}.{cls.__qualname__}"
            )
        known_as = getattr(cls, "name", "")
        if known_as and known_as != name and _registered.get(known_as) is cls:
            raise ValueError(f"{cls.__qualname__} is already dataset '{known_as}'; one class, one name")
        cls.name = name  # type: ignore[attr-defined]
        _registered[name] = cls  # type: ignore[assignment]
        return cls

    return register


def load_plugins(modules: Iterable[str], source: str = "--plugin") -> None:
    """Import plugin modules (their ``@register_dataset`` classes register themselves)."""
    for module in modules:
        module = module.strip()
        if not module:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{source}: cannot import plugin module '{module}' ({exc})") from None


def _discover() -> None:
    """Once per process: import the ``I2M2_PLUGINS`` modules and the entry points' datasets."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    load_plugins(os.environ.get(PLUGINS_ENV, "").split(","), source=PLUGINS_ENV)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registered:
            continue
        try:
            target = ep.load()
        except ImportError as exc:
            raise ConfigError(f"entry point '{ep.name}' ({ep.value}) of {ENTRY_POINT_GROUP}: {exc}") from None
        if isinstance(target, type) and ep.name not in _registered:
            register_dataset(ep.name)(target)


def dataset_names() -> list[str]:
    """Every experiment name a lookup can find: built-ins, plugins, entry points."""
    _discover()
    return sorted({*BUILTINS, *_registered})


def get_dataset(name: str) -> Dataset:
    """The dataset of experiment ``name`` (a new instance of its registered class).

    Raises:
        ConfigError: an unknown name; the message lists the known ones.
    """
    if name not in _registered and name in BUILTINS:
        importlib.import_module(BUILTINS[name])
    if name not in _registered:
        _discover()
    cls = _registered.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown experiment '{name}'; known: {dataset_names()} "
            f"(a plugin's dataset: --plugin MODULE, {PLUGINS_ENV}=MODULE or the {ENTRY_POINT_GROUP} entry points)"
        )
    return cls()


def check_data_config(dataset: Dataset, cfg: ExperimentConfig) -> None:
    """A dataset's cheap checks of the ``data`` settings it reads (its optional
    ``check_config(cfg)``: options, the generated sample's settings), run before Ray starts
    and for every choice of a search space; ``load`` runs them again.

    Raises:
        ConfigError: what the dataset found wrong (a DataError of its is passed on as one).
    """
    check = getattr(dataset, "check_config", None)
    if not callable(check):
        return
    try:
        check(cfg)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
