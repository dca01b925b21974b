"""Hyper-parameter search: Optuna (TPE) proposes, ASHA stops, Ray Train trains every trial.

A sweep is described by a YAML file (``configs/search/<experiment>_demo.yaml`` ...)::

    base_config: ../fastmri_demo.yaml     # the config every trial starts from
    overrides: [product.epochs=6]         # fixed for every trial
    asha: {grace_period: 1, reduction_factor: 2}
    params:                               # searched, in this order (conditions look back)
      product.init: {choices: [components, scratch]}
      product.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      model.width: {choices: [4, 8], when: {product.init: scratch}}
      model.fusion_rank: {low: 2, high: 16, int: true, when: {model.inter_fusion: lrtf}}

A parameter named by a config key (``section.key``) becomes the override
``section.key=value``; three names are about the product of experts and map onto several
keys: ``product.experts`` (which experts enter the product: left-out experts get exponent 0
and are frozen), ``product.freeze`` (a yes/no per expert in the product, for products
initialised from components; at least one expert keeps training) and ``product.weights``
(an exponent per expert in the product). Every trial's config is then built and validated by
:func:`i2m2_ray.config.load_config`, like any other run's.

What a trial trains: the product (I2M2 when the inter expert is in it, else the intra
product) for ``product.epochs`` epochs at ``product.lr`` with the one training loop
(:func:`i2m2_ray.training.launch.fit`). With ``product.init: components`` it starts from
unimodal and inter experts fitted once before the sweep (with the base config) and shared
by all trials; the backbone then is the base one, so backbone parameters should be searched
under ``when: {product.init: scratch}``. Every epoch's validation metrics reach Tune; ASHA
stops the trials that fall behind at its rungs.

Nothing here runs at import; :func:`main` is the command line (``experiments/search.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from i2m2_ray import tracking
from i2m2_ray.config import ConfigError, ExperimentConfig, load_config
from i2m2_ray.spec import INTER, TaskSpec, component_paradigm

if TYPE_CHECKING:
    import optuna
    from ray.tune import ResultGrid

    from i2m2_ray.data.base import PreparedData

log = logging.getLogger(__name__)

EXPERTS_KEY = "product.experts"
FREEZE_KEY = "product.freeze"
WEIGHTS_KEY = "product.weights"
_SPECIAL = (EXPERTS_KEY, FREEZE_KEY, WEIGHTS_KEY)
_ENTRY_KEYS = {"choices", "low", "high", "log", "step", "int", "when"}
_FILE_KEYS = {"experiment", "description", "base_config", "overrides", "asha", "params"}
# the symbolic expert sets a ``product.experts`` choice may name
_EXPERT_SETS = ("all", "modalities")
# Tune trials only wait on their trainer: they ask for a token amount of memory, no CPU,
# so the training workers and the data pipeline get every CPU.
TRIAL_DRIVER_RESOURCES: dict[str, float] = {"memory": float(64 * 1024**2)}
SEARCH_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "search"


# --------------------------------------------------------------------------------------
# The search space
# --------------------------------------------------------------------------------------


def to_yaml(value: Any) -> str:
    """One-line YAML for an override value; floats always carry a dot (YAML 1.1 reads
    ``1e-05`` as a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {to_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_yaml(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as a config value")


def choice_label(value: Any) -> Any:
    """What Optuna stores for a categorical choice: scalars as they are, lists and mappings
    as their JSON text (Optuna's choices must be scalars)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def flatten_values(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"width": 8}}`` -> ``{"model.width": 8}``; lists stay leaves."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_values(v, key + "."))
            out.setdefault(key, dict(v))  # a mapping is also reachable whole
        else:
            out[key] = v
    return out


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter.

    ``kind`` is ``categorical``, ``int`` or ``float`` for a config key, or ``experts``,
    ``freeze``, ``weights`` for the three product parameters. ``when`` holds conditions
    ``(key, allowed values)``: the parameter is sampled only if every key has one of its
    allowed values (a searched parameter's sampled value, else the base config's).
    """

    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def labels(self) -> list[Any]:
        if self.kind == "experts":
            return ["+".join(c) if isinstance(c, tuple) else c for c in self.choices]
        return [choice_label(c) for c in self.choices]


def _parse_param(name: str, entry: Any) -> ParamSpec:
    where = f"search space parameter '{name}'"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping (choices, or low/high), got {entry!r}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_ENTRY_KEYS)}")
    when_raw = entry.get("when") or {}
    if not isinstance(when_raw, Mapping):
        raise ConfigError(f"{where}: 'when' must map keys to a value or a list of values")
    when: list[tuple[str, tuple[Any, ...]]] = []
    for key, allowed in when_raw.items():
        if key in _SPECIAL or key == name:
            raise ConfigError(f"{where}: cannot be conditioned on '{key}'")
        if "." not in str(key):
            raise ConfigError(f"{where}: condition key '{key}' must be a config key like 'product.init'")
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        when.append((str(key), values))
    bounds: dict[str, Any] = {}
    if "low" in entry or "high" in entry:
        if "low" not in entry or "high" not in entry:
            raise ConfigError(f"{where}: give both low and high")
        try:
            low, high = float(entry["low"]), float(entry["high"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: low and high must be numbers") from None
        if not low < high:
            raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
        if entry.get("log") and low <= 0:
            raise ConfigError(f"{where}: a log scale needs low > 0")
        step = entry.get("step")
        bounds = {"low": low, "high": high, "log": bool(entry.get("log", False)), "step": None}
        if step is not None:
            bounds["step"] = float(step)
    has_choices = "choices" in entry
    if has_choices and bounds:
        raise ConfigError(f"{where}: give either choices or low/high, not both")
    if name == EXPERTS_KEY:
        if not has_choices or not entry["choices"]:
            raise ConfigError(f"{where}: needs choices, e.g. [all, modalities, [magnitude, inter]]")
        choices: list[Any] = []
        for c in entry["choices"]:
            if isinstance(c, str) and c in _EXPERT_SETS:
                choices.append(c)
            elif isinstance(c, list) and c and all(isinstance(e, str) for e in c):
                choices.append(tuple(c))
            else:
                raise ConfigError(f"{where}: a choice must be a list of expert names or one of {_EXPERT_SETS}")
        return ParamSpec(name, "experts", tuple(choices), when=tuple(when))
    if name == FREEZE_KEY:
        if has_choices or bounds:
            raise ConfigError(f"{where}: takes no choices or bounds (a yes/no per expert is sampled)")
        return ParamSpec(name, "freeze", when=tuple(when))
    if name == WEIGHTS_KEY:
        if not bounds:
            raise ConfigError(f"{where}: needs low and high (the range of each expert's exponent)")
        return ParamSpec(name, "weights", when=tuple(when), **bounds)
    if has_choices:
        if not isinstance(entry["choices"], list) or not entry["choices"]:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return ParamSpec(name, "categorical", tuple(entry["choices"]), when=tuple(when))
    if not bounds:
        raise ConfigError(f"{where}: needs choices, or low and high")
    kind = "int" if entry.get("int") else "float"
    if kind == "int" and not (bounds["low"].is_integer() and bounds["high"].is_integer()):
        raise ConfigError(f"{where}: an integer parameter needs integer low and high")
    return ParamSpec(name, kind, when=tuple(when), **bounds)


def parse_params(params: Mapping[str, Any]) -> tuple[ParamSpec, ...]:
    """Parse the ``params`` mapping of a search file (order kept: a condition may only name
    parameters listed before it)."""
    if not isinstance(params, Mapping) or not params:
        raise ConfigError("search space: 'params' must be a non-empty mapping of parameter -> range")
    names = [str(k) for k in params]
    specs = [_parse_param(name, entry) for name, entry in zip(names, params.values(), strict=True)]
    for i, spec in enumerate(specs):
        for key, _ in spec.when:
            if key in names[i:]:
                raise ConfigError(
                    f"search space parameter '{spec.name}': its condition names '{key}', which is listed "
                    f"after it; list '{key}' first"
                )
    return tuple(specs)


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters, and what their conditions and defaults need: the base
    config's values and the task's modalities (set by :meth:`bind`).

    An instance is Optuna's define-by-run function (``space(trial)``); it is picklable, so
    a sweep's searcher can be saved and restored.
    """

    params: tuple[ParamSpec, ...]
    modalities: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, base: ExperimentConfig, spec: TaskSpec) -> SearchSpace:
        """The space for one task and base config; checks expert names."""
        bound = dataclasses.replace(self, modalities=tuple(spec.modalities), defaults=flatten_values(base.to_dict()))
        experts = bound.all_experts
        for p in bound.params:
            for c in p.choices if p.kind == "experts" else ():
                names = bound.expert_set(c)
                bad = sorted(set(names) - set(experts))
                if bad:
                    raise ConfigError(f"search space '{p.name}': unknown expert(s) {bad}; experts: {list(experts)}")
        for key in (k for p in bound.params for k, _ in p.when):
            if not bound._is_config_key(key) and key not in {p.name for p in bound.params}:
                raise ConfigError(f"search space: condition key '{key}' is neither searched nor a config key")
        for p in bound.params:
            if p.kind in ("categorical", "int", "float") and not bound._is_config_key(p.name):
                raise ConfigError(f"search space: '{p.name}' is not a config key")
        return bound

    def _is_config_key(self, key: str) -> bool:
        """A config field, or a key inside a free-form mapping field (``data.options.x``)."""
        if key in self.defaults:
            return True
        parts = key.split(".")
        # a mapping-valued field (not a whole section) may hold keys the base config lacks
        return any(isinstance(self.defaults.get(".".join(parts[:i])), Mapping) for i in range(2, len(parts)))

    @property
    def all_experts(self) -> tuple[str, ...]:
        """Every expert a product can hold: one per modality, then the inter expert."""
        if not self.modalities:
            raise ConfigError("search space used before bind(): the task's modalities are unknown")
        return (*self.modalities, INTER)

    def expert_set(self, choice: Any) -> tuple[str, ...]:
        if choice == "all":
            return self.all_experts
        if choice == "modalities":
            return self.modalities
        return tuple(choice)

    # -- conditions ---------------------------------------------------------------

    def _value_of(self, key: str, values: Mapping[str, Any]) -> Any:
        if key in values:
            return values[key]
        return self.defaults.get(key)

    def active(self, p: ParamSpec, values: Mapping[str, Any]) -> bool:
        """Whether ``p`` is sampled, given the values sampled before it."""
        return all(self._value_of(key, values) in allowed for key, allowed in p.when)

    def experts_in(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        """The experts of the product (all unless ``product.experts`` chose fewer)."""
        chosen = values.get(EXPERTS_KEY)
        return tuple(chosen) if chosen is not None else self.all_experts

    # -- sampling and decoding ----------------------------------------------------

    def __call__(self, trial: Any) -> None:
        """Optuna define-by-run: suggest every active parameter in order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if not self.active(p, values):
                continue
            if p.kind == "freeze":
                raw: dict[str, Any] = {}
                included = self.experts_in(values)
                for i, expert in enumerate(included):
                    if i == len(included) - 1 and all(raw.values()):
                        break  # every other expert is frozen: this one must train
                    raw[f"{p.name}.{expert}"] = trial.suggest_categorical(f"{p.name}.{expert}", [False, True])
                values[p.name] = self._decode(p, raw, values)
            elif p.kind == "weights":
                raw = {}
                for expert in self.experts_in(values):
                    raw[f"{p.name}.{expert}"] = trial.suggest_float(
                        f"{p.name}.{expert}", p.low, p.high, log=p.log, step=p.step
                    )
                values[p.name] = self._decode(p, raw, values)
            else:
                values[p.name] = self._decode(p, {p.name: self._suggest(trial, p)}, values)

    def _suggest(self, trial: Any, p: ParamSpec) -> Any:
        if p.kind in ("categorical", "experts"):
            return trial.suggest_categorical(p.name, p.labels())
        if p.kind == "int":
            return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        return trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)

    def _decode(self, p: ParamSpec, raw: Mapping[str, Any], values: Mapping[str, Any]) -> Any:
        if p.kind == "freeze":
            return [e for e in self.experts_in(values) if raw.get(f"{p.name}.{e}", False)]
        if p.kind == "weights":
            return {e: float(raw[f"{p.name}.{e}"]) for e in self.experts_in(values)}
        label = raw[p.name]
        if p.kind in ("categorical", "experts"):
            labels = p.labels()
            if label not in labels:
                raise ConfigError(f"parameter '{p.name}': {label!r} is not one of {labels}")
            choice = p.choices[labels.index(label)]
            return list(self.expert_set(choice)) if p.kind == "experts" else choice
        if p.kind == "int":
            return int(label)
        return float(label)

    def raw_names(self, p: ParamSpec, values: Mapping[str, Any]) -> list[str]:
        """The Optuna parameter names ``p`` stands for, given earlier values."""
        if p.kind in ("freeze", "weights"):
            return [f"{p.name}.{e}" for e in self.experts_in(values)]
        return [p.name]

    def decode(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Sampled Optuna parameters -> the values of the active search parameters, in order.

        Raises :class:`ConfigError` for a missing active parameter or a parameter that is
        not active (or not in the space)."""
        values: dict[str, Any] = {}
        used: set[str] = set()
        for p in self.params:
            if not self.active(p, values):
                continue
            names = self.raw_names(p, values)
            if p.kind == "freeze":
                present = {n: raw[n] for n in names if n in raw}
                if len(present) < len(names) - 1:
                    raise ConfigError(f"missing search parameter(s) {sorted(set(names) - set(present))}")
                used |= set(present)
                values[p.name] = self._decode(p, present, values)
                continue
            missing = [n for n in names if n not in raw]
            if missing:
                raise ConfigError(f"missing search parameter(s) {missing}")
            used |= set(names)
            values[p.name] = self._decode(p, raw, values)
        extra = sorted(set(raw) - used)
        if extra:
            raise ConfigError(f"parameter(s) {extra} are not active in this configuration (or not in the space)")
        return values

    def distributions(self, raw: Mapping[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
        """Optuna distributions of the parameters in ``raw`` (one trial's sample)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for p in self.params:
            for name in raw:
                if name == p.name and p.kind in ("categorical", "experts"):
                    out[name] = CategoricalDistribution(p.labels())
                elif name == p.name and p.kind == "int":
                    out[name] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
                elif name == p.name and p.kind == "float":
                    out[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
                elif p.kind == "freeze" and name.startswith(p.name + "."):
                    out[name] = CategoricalDistribution([False, True])
                elif p.kind == "weights" and name.startswith(p.name + "."):
                    out[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        return out


@dataclass
class TrialPlan:
    """One trial, resolved: the sampled values, the overrides they map to, the product it
    trains (``intra`` or ``i2m2``) and its validated config."""

    values: dict[str, Any]
    overrides: list[str]
    paradigm: str
    config: ExperimentConfig


@dataclass
class TrialRecipe:
    """How a sample becomes a config: the bound search space and the resolved base config."""

    space: SearchSpace
    base: dict[str, Any]

    def plan(self, raw: Mapping[str, Any]) -> TrialPlan:
        """Map one sample onto overrides and build the trial's config with ``load_config``."""
        space = self.space
        values = space.decode(raw)
        experts = space.experts_in(values)
        paradigm = "i2m2" if INTER in experts else "intra"
        members = (*space.modalities, INTER) if paradigm == "i2m2" else space.modalities
        left_out = [e for e in members if e not in experts]
        overrides = [f"{name}={to_yaml(v)}" for name, v in values.items() if name not in _SPECIAL]

        base_product = self.base.get("product", {})
        base_weights = dict(base_product.get("weights") or {})
        stray = sorted(set(base_weights) - set(members))
        if stray:
            raise ConfigError(
                f"base config product.weights names {stray}, not experts of the {paradigm} product {list(members)}"
            )
        weights = {e: 0.0 for e in left_out}
        weights.update(values.get(WEIGHTS_KEY, {}))
        if weights:
            overrides.append(f"product.weights={to_yaml(weights)}")
        if any(p.name == FREEZE_KEY for p in space.params):
            frozen = set(values.get(FREEZE_KEY, []))
        else:
            frozen = {e for e in base_product.get("freeze", []) if e in members}
        frozen |= set(left_out)
        if frozen >= set(members):
            raise ConfigError(f"every expert of the product is frozen ({sorted(frozen)}); nothing would train")
        overrides.append(f"product.freeze={to_yaml([e for e in members if e in frozen])}")
        cfg = load_config(None, overrides, base=self.base)
        return TrialPlan(values=values, overrides=overrides, paradigm=paradigm, config=cfg)


@dataclass(frozen=True)
class AshaSettings:
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass
class SearchFile:
    """A parsed search YAML (paths resolved against the file's folder)."""

    path: Path
    space: SearchSpace
    base_config: Path | None
    overrides: list[str]
    asha: AshaSettings
    experiment: str | None
    raw: dict[str, Any]


def parse_search_file(data: Mapping[str, Any], path: Path) -> SearchFile:
    """Check and parse the contents of a search YAML."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(_FILE_KEYS)}")
    try:
        space = SearchSpace(parse_params(data.get("params") or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    base = data.get("base_config")
    base_path = (path.parent / str(base)).resolve() if base else None
    overrides = data.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: 'overrides' must be a list of 'section.key=value' strings")
    asha_raw = data.get("asha") or {}
    if not isinstance(asha_raw, Mapping) or set(asha_raw) - {"grace_period", "reduction_factor"}:
        raise ConfigError(f"{path}: 'asha' takes grace_period and reduction_factor")
    asha = AshaSettings(int(asha_raw.get("grace_period", 1)), float(asha_raw.get("reduction_factor", 2.0)))
    if asha.grace_period < 1 or asha.reduction_factor <= 1:
        raise ConfigError(f"{path}: asha.grace_period must be >= 1 and asha.reduction_factor > 1")
    experiment = data.get("experiment")
    return SearchFile(path, space, base_path, list(overrides), asha, experiment, dict(data))


def load_search_file(path: str | Path) -> SearchFile:
    """Read a search YAML (see the module docstring for its keys)."""
    p = Path(path).resolve()
    if not p.is_file():
        raise ConfigError(f"search space file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from None
    return parse_search_file(data, p)


def default_search_file(experiment: str, real_data: bool) -> Path:
    """``configs/search/<experiment>.yaml`` for real data, ``<experiment>_demo.yaml`` for the
    generated sample; ``default.yaml`` (product parameters only) if the experiment has none."""
    own = SEARCH_CONFIG_DIR / (f"{experiment}.yaml" if real_data else f"{experiment}_demo.yaml")
    return own if own.is_file() else SEARCH_CONFIG_DIR / "default.yaml"


def check_space(recipe: TrialRecipe) -> None:
    """Fail before Ray starts if any single choice or bound yields an invalid config."""
    for p in recipe.space.params:
        if p.kind in ("categorical", "int", "float"):
            samples = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
            for v in samples:
                value = int(v) if p.kind == "int" else v
                try:
                    load_config(None, [f"{p.name}={to_yaml(value)}"], base=recipe.base)
                except ConfigError as exc:
                    raise ConfigError(f"search space '{p.name}' = {value!r}: {exc}") from None


# --------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------


def trial_concurrency(requested: int, resources: Mapping[str, float], cfg: ExperimentConfig, trials: int) -> int:
    """How many trials run at once: ``requested``, capped by what the cluster holds.

    A trial needs ``num_workers * cpus_per_worker`` CPUs (and ``num_workers`` GPUs with
    ``use_gpu``); one CPU is kept for the Ray Data pipelines that feed the trials.
    """
    per_trial = cfg.run.num_workers * cfg.run.cpus_per_worker
    cpus = float(resources.get("CPU", 0.0))
    cap = int((cpus - 1) // per_trial) if cpus - 1 >= per_trial else 1
    if cfg.run.use_gpu:
        gpus = float(resources.get("GPU", 0.0))
        gpu_cap = int(gpus // cfg.run.num_workers)
        if gpu_cap < 1:
            raise ConfigError(
                f"run.use_gpu=true with run.num_workers={cfg.run.num_workers}, but the cluster has {gpus:g} GPU(s)"
            )
        cap = min(cap, gpu_cap)
    return max(1, min(requested, cap, trials))


# --------------------------------------------------------------------------------------
# The trial driver
# --------------------------------------------------------------------------------------


@dataclass
class SweepContext:
    """What every trial needs besides its sample (sent once through the object store)."""

    experiment: str
    recipe: TrialRecipe
    prepared: PreparedData
    data_dir: str | None
    annotations: str | None
    work_dir: str
    components: dict[str, str]  # component paradigm -> checkpoint file
    train_storage: str


def _trial_data(ctx: SweepContext, cfg: ExperimentConfig) -> PreparedData:
    """The sweep's data, or, for a trial that searches data keys (e.g. the crop), its own,
    prepared once per distinct data section under a file lock."""
    import fcntl

    from i2m2_ray.data import dataset_module

    if dataclasses.asdict(cfg.data) == ctx.recipe.base["data"]:
        return ctx.prepared
    key = hashlib.sha1(json.dumps(dataclasses.asdict(cfg.data), sort_keys=True).encode()).hexdigest()[:12]
    work = Path(ctx.work_dir) / "data" / key
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a generated sample is written by one trial only
        return dataset_module(ctx.experiment).load(cfg, ctx.data_dir, ctx.annotations, work)


def run_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """Tune function trainable: one trial = one Ray Train fit of the sampled product.

    Each epoch's metrics reach Tune through ``TuneReportCallback`` (so ASHA can stop the
    trial); a trial that runs to its end reports once more: the best epoch's validation
    metrics, the test metrics (``test_*``) and the best weights as its checkpoint.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from i2m2_ray.training.launch import FitRequest, fit

    trial_id = tune.get_context().get_trial_id()
    plan = ctx.recipe.plan(config)
    cfg = plan.config
    prepared = _trial_data(ctx, cfg)
    init: dict[str, str] = {}
    if cfg.product.init == "components":
        init = {e: ctx.components[component_paradigm(e)] for e in prepared.spec.components(plan.paradigm)}
    name = f"trial_{trial_id}"
    monitor = cfg.train.monitor
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(
            FitRequest.from_config(
                cfg,
                prepared,
                plan.paradigm,
                storage_path=ctx.train_storage,
                checkpoint_path=os.path.join(tmp, "model.pt"),
                name=name,
                # the same name after a sweep restart: Train resumes from the last epoch
                run_name=name,
                init_checkpoints=init,
                callbacks=[TuneReportCallback()],
            )
        )
        best = float(res.val.get(f"val_{monitor}", math.nan))
        final: dict[str, Any] = {
            **res.val,
            f"val_{monitor}": best,
            f"best_{monitor}": best,
            "epoch": res.epochs_run,
            "best_epoch": res.best_epoch,
            "wall_seconds": res.wall_seconds,
            "completed": 1,
            **{f"test_{k}": v for k, v in res.test.items()},
        }
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


def trial_dirname(trial: Any) -> str:
    """Short, stable trial folder names (the default packs every parameter into the name)."""
    return f"trial_{trial.trial_id}"


# --------------------------------------------------------------------------------------
# MLflow: a child run per trial, written by the sweep's driver
# --------------------------------------------------------------------------------------

TRIAL_TAG = "trial_id"
_EPOCH_KEYS = ("val_", "train_loss", "best_", "samples_per_s")


class _TrialTracking:
    """The Tune callback (it runs in the driver) that gives each trial a child run under the
    sweep's parent run: the trial's params, one metric step per epoch and the outcome.

    Runs end FINISHED (tag ``outcome``: ``completed``, or ``stopped_early`` when ASHA stopped
    the trial) or FAILED (``error``); :func:`run_sweep` ends the runs of trials cut short by an
    interruption or the time budget as KILLED. A trial restarted after an interruption keeps
    its child run. MLflow failures never stop the sweep: the first is reported once.
    Build it with :func:`trial_tracker`.
    """

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, recipe: TrialRecipe, sweep: str) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.recipe = recipe
        self.sweep = sweep
        self._runs: dict[str, str] = {}
        self._alive = True

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runs"] = {}  # run ids are looked up again by tag after a restore
        return state

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        if not self._alive:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # keep the sweep going without tracking
            self._alive = False
            print(f"WARNING: MLflow tracking stopped ({what}: {type(exc).__name__}: {exc})", flush=True)
            return None

    def run_id(self, trial_id: str) -> str | None:
        """The child run of a trial (cached; else found by tag)."""
        if trial_id not in self._runs:
            found = find_trial_runs(self.uri, self.experiment_id, self.parent_run_id).get(trial_id)
            if found:
                self._runs[trial_id] = found[-1]
        return self._runs.get(trial_id)

    def _start(self, trial: Any) -> None:
        existing = self.run_id(trial.trial_id)
        if existing is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.uri)
            run = client.get_run(existing)
            if run.info.status == "RUNNING":
                return  # a trial restarted after a crash continues its run
            if run.data.tags.get("outcome") == "interrupted":
                client.update_run(existing, status="RUNNING")  # ... and after an interruption
                client.delete_tag(existing, "outcome")
                return
        params: dict[str, Any] = {k: v for k, v in trial.config.items()}
        tags = {TRIAL_TAG: trial.trial_id, "stage": "trial", "sweep": self.sweep}
        try:
            plan = self.recipe.plan(trial.config)
            params = {**plan.config.to_dict(), **params, "paradigm": plan.paradigm}
            tags.update({"paradigm": plan.paradigm, "dataset": plan.config.experiment})
        except ConfigError as exc:
            tags["config_error"] = str(exc)[:500]
        self._runs[trial.trial_id] = tracking.start_run(
            self.uri, self.experiment_id, f"trial_{trial.trial_id}", tags, params, parent_run_id=self.parent_run_id
        )

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._guard("start", self._start, trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self._guard("metrics", self._log_result, trial, result)

    def _log_result(self, trial: Any, result: dict[str, Any]) -> None:
        run_id = self.run_id(trial.trial_id)
        if run_id is None:
            return
        score = result.get(f"best_{self.recipe.base['train']['monitor']}")
        if result.get("completed"):
            keys = ("test_", "wall_seconds", "best_epoch")
            metrics = {k: v for k, v in result.items() if k.startswith(keys)}
            metrics["epochs_run"] = result.get("epoch", math.nan)
        else:
            metrics = {k: v for k, v in result.items() if k.startswith(_EPOCH_KEYS)}
        if isinstance(score, (int, float)):
            metrics["objective"] = score
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        tracking.log_metrics(self.uri, run_id, metrics, step)

    def _end(self, trial: Any, status: str, outcome: str) -> None:
        from mlflow.tracking import MlflowClient

        run_id = self.run_id(trial.trial_id)
        if run_id is None:
            return
        client = MlflowClient(self.uri)
        client.set_tag(run_id, "outcome", outcome)
        last = trial.last_result or {}
        if "epoch" in last:
            client.set_tag(run_id, "epochs", str(last["epoch"]))
        client.set_terminated(run_id, status=status)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        outcome = "completed" if (trial.last_result or {}).get("completed") else "stopped_early"
        self._guard("end", self._end, trial, "FINISHED", outcome)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._guard("end", self._end, trial, "FAILED", "error")


_TRACKER_CLASS: type | None = None


def _tracker_class() -> type:
    """``TrialTracker``: :class:`_TrialTracking` as a ``ray.tune.Callback``, defined on first
    use so that importing this module does not import Ray Tune."""
    global _TRACKER_CLASS
    if _TRACKER_CLASS is None:
        from ray.tune import Callback

        _TRACKER_CLASS = type("TrialTracker", (_TrialTracking, Callback), {"__module__": __name__})
    return _TRACKER_CLASS


def __getattr__(name: str) -> Any:
    # pickle finds the lazily defined callback class by its module attribute
    if name == "TrialTracker":
        return _tracker_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def trial_tracker(uri: str, experiment_id: str, parent_run_id: str, recipe: TrialRecipe, sweep: str) -> Any:
    """A Tune callback recording every trial as a child run of ``parent_run_id``."""
    return _tracker_class()(uri, experiment_id, parent_run_id, recipe, sweep)


def find_trial_runs(uri: str, experiment_id: str, parent_run_id: str) -> dict[str, list[str]]:
    """Trial id -> its child run ids under ``parent_run_id`` (oldest first)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    out: dict[str, list[str]] = {}
    for r in runs:
        tid = r.data.tags.get(TRIAL_TAG)
        if tid:
            out.setdefault(tid, []).append(r.info.run_id)
    return out


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------


@dataclass
class SweepOptions:
    """One sweep: what to search, how many trials, and where everything goes."""

    experiment: str
    search: SearchFile
    base: ExperimentConfig
    output_dir: Path
    trials: int
    max_concurrent: int
    time_budget_s: float | None = None
    name: str | None = None
    storage_path: str | None = None
    tracking_uri: str | None = None
    data_dir: str | None = None
    annotations: str | None = None
    resume: bool = False
    strategy: str = "optuna-asha"  # or "grid": every combination of ``grid``, no early stopping
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def sweep_name(self) -> str:
        return self.name or f"search-{self.experiment}"


@dataclass
class TrialRow:
    """One trial of a finished sweep, for the ranking."""

    trial_id: str
    status: str  # completed | stopped | error | unfinished
    score: float
    epochs: int
    raw: dict[str, Any]
    test: dict[str, float]
    history: list[float]
    checkpoint: Any = None
    error: str = ""
    order: int = 0  # creation order in the sweep


@dataclass
class SweepResult:
    rows: list[TrialRow]  # ranked, best first
    best: TrialRow | None
    best_plan: TrialPlan | None
    parent_run_id: str
    tracking_uri: str
    experiment_path: str
    interrupted: bool
    total_epochs: int
    importance: dict[str, float]
    artifacts: dict[str, Path]


def _sweep_dir(opts: SweepOptions) -> Path:
    return opts.output_dir / "search" / opts.sweep_name


def _storage(opts: SweepOptions) -> str:
    return opts.storage_path or str(opts.output_dir / "ray_results")


def _experiment_path(opts: SweepOptions) -> str:
    return f"{_storage(opts).rstrip('/')}/{opts.sweep_name}"


def fit_components(opts: SweepOptions, prepared: PreparedData, uri: str, parent: str) -> dict[str, str]:
    """Fit each unimodal expert and the inter expert once, concurrently, with the base
    config (reused when a resumed sweep finds them); their checkpoints initialise the
    products of trials with ``product.init: components``."""
    import ray

    from i2m2_ray.training.launch import FitRequest, fit

    cfg = opts.base
    folder = _sweep_dir(opts) / "components"
    names = [component_paradigm(e) for e in prepared.spec.components("i2m2")]
    paths = {n: str(folder / f"{n}.pt") for n in names}
    todo = [n for n in names if not Path(paths[n]).is_file()]
    if not todo:
        print(f"components: reusing {sorted(paths)} from {folder}", flush=True)
        return paths
    print(f"components: fitting {todo} once for the sweep", flush=True)
    remote = ray.remote(num_cpus=0, max_retries=0)(fit)
    refs = {}
    for n in todo:
        req = FitRequest.from_config(
            cfg,
            prepared,
            n,
            storage_path=f"{_storage(opts).rstrip('/')}/{opts.sweep_name}-train",
            checkpoint_path=folder / f".{n}.partial.pt",
            name=f"{opts.sweep_name}-{n}",
            run_name=f"component_{n}",
        )
        refs[n] = remote.remote(req)
    for n, ref in refs.items():
        res = ray.get(ref)
        Path(res.checkpoint).replace(paths[n])  # the final name appears only when whole
        metrics = {f"components.{n}.{k}": v for k, v in res.val.items()}
        metrics.update({f"components.{n}.test_{k}": v for k, v in res.test.items()})
        try:
            tracking.log_metrics(uri, parent, metrics)
        except Exception as exc:
            print(f"WARNING: MLflow: {type(exc).__name__}: {exc}", flush=True)
    return paths


def _search_alg(opts: SweepOptions, space: SearchSpace, metric: str, mode: str) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # TPE samples at random for its first n_startup_trials (10 by default): a short sweep
    # would never get past them, so it starts modelling after a quarter of the trials
    startup = max(2, min(10, opts.trials // 4))
    sampler = optuna.samplers.TPESampler(seed=opts.base.run.seed, n_startup_trials=startup)
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)


def _scheduler(opts: SweepOptions) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    epochs = opts.base.product.epochs
    asha = opts.search.asha
    if asha.grace_period >= epochs:
        raise ConfigError(
            f"asha.grace_period ({asha.grace_period}) must be below product.epochs ({epochs}), "
            "or ASHA can never stop a trial"
        )
    # Rungs strictly before the last epoch: a trial that reaches its last epoch is never
    # stopped there, so it always gets to score the test split.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=max(asha.grace_period, epochs - 1),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        stop_last_trials=False,
    )


def _rows(grid: ResultGrid, monitor: str, mode: str) -> list[TrialRow]:
    rows: list[TrialRow] = []
    for i in range(len(grid)):
        result = grid[i]
        trial_id = Path(result.path).name.removeprefix("trial_")
        m = dict(result.metrics or {})
        if result.error is not None:
            status = "error"
        elif m.get("completed"):
            status = "completed"
        elif m.get("done"):
            status = "stopped"
        else:
            status = "unfinished"
        history: list[float] = []
        df = result.metrics_dataframe
        if df is not None and f"val_{monitor}" in df:
            epoch_rows = df[df["completed"].isna()] if "completed" in df else df
            history = [float(v) for v in epoch_rows[f"val_{monitor}"].tolist()]
        score = m.get(f"best_{monitor}", math.nan)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                status=status,
                score=float(score) if isinstance(score, (int, float)) else math.nan,
                epochs=int(m.get("epoch", 0) or 0),
                raw={k: v for k, v in (result.config or {}).items()},
                test={k[len("test_") :]: float(v) for k, v in m.items() if k.startswith("test_")},
                history=history,
                checkpoint=result.checkpoint if status == "completed" else None,
                error=str(result.error)[:300] if result.error is not None else "",
                order=i,
            )
        )
    return rank_rows(rows, mode)


def rank_rows(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first by the objective (NaN last); ties keep the trial order."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (math.isnan(r.score), sign * r.score if not math.isnan(r.score) else 0.0))


def ranking_table(rows: Sequence[TrialRow], objective: str, test_columns: Sequence[str], limit: int = 0) -> str:
    """A plain-text ranked table: objective, status, epochs, test metrics, parameters."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r.raw if k not in names]
    header = ["rank", "trial", "status", objective, "epochs", *[f"test_{c}" for c in test_columns], *names]
    lines = [header]
    shown = rows[:limit] if limit else rows
    for i, r in enumerate(shown, start=1):
        cells = [str(i), r.trial_id, r.status, f"{r.score:.4f}", str(r.epochs)]
        cells += [f"{r.test[c]:.4f}" if c in r.test else "-" for c in test_columns]
        cells += [_short(r.raw[n]) if n in r.raw else "-" for n in names]
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def optuna_study(rows: Sequence[TrialRow], space: SearchSpace, mode: str) -> optuna.Study:
    """An Optuna study holding the sweep's trials (in the order they were created):
    completed trials with their objective, early-stopped ones as pruned (with their
    per-epoch values), failed ones as failed."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for r in sorted(rows, key=lambda r: (r.order, r.trial_id)):
        if r.status == "unfinished" or not r.raw:
            continue
        finite = not math.isnan(r.score)
        if r.status == "completed" and finite:
            state, value = TrialState.COMPLETE, r.score
        elif r.status in ("completed", "stopped"):
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.FAIL, None
        inter = {i + 1: v for i, v in enumerate(r.history) if not math.isnan(v)}
        study.add_trial(
            create_trial(
                params=dict(r.raw),
                distributions=space.distributions(r.raw),
                value=value,
                state=state,
                intermediate_values=inter,
                user_attrs={"trial_id": r.trial_id},
            )
        )
    return study


def importance_artifacts(
    study: optuna.Study, folder: Path, seed: int, objective: str = "objective"
) -> tuple[dict[str, float], dict[str, Path]]:
    """Parameter importances (fANOVA over the completed trials, as a CSV table) and the
    optimisation-history plot (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization.matplotlib import plot_optimization_history

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    importance: dict[str, float] = {}
    table = folder / "param_importance.csv"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        importance = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        lines = ["parameter,importance", *[f"{k},{v:.6f}" for k, v in importance.items()]]
    except (ValueError, RuntimeError) as exc:
        # fANOVA needs two completed trials and parameters that every one of them has
        lines = ["parameter,importance", f"# not computed: {exc}"]
    table.write_text("\n".join(lines) + "\n")
    out["param_importance"] = table
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib backend
            ax = plot_optimization_history(study, target_name=objective)
        path = folder / "optimization_history.png"
        cast(Any, ax).figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close("all")
        out["optimization_history"] = path
    except (ValueError, RuntimeError) as exc:
        log.warning("optimisation history not plotted: %s", exc)
    return importance, out


def _state_path(opts: SweepOptions) -> Path:
    return _sweep_dir(opts) / "sweep.json"


def _start_or_reopen_parent(opts: SweepOptions, uri: str) -> tuple[str, str]:
    """(experiment id, parent run id): a new parent run, or the saved one on resume."""
    from mlflow.tracking import MlflowClient

    exp_id = tracking.get_experiment_id(uri, f"{opts.experiment}-search", opts.output_dir / "mlartifacts")
    state = _state_path(opts)
    if opts.resume:
        saved = json.loads(state.read_text())
        client = MlflowClient(uri)
        parent = saved["parent_run_id"]
        if client.get_run(parent).info.status != "RUNNING":
            client.update_run(parent, status="RUNNING")
        client.set_tag(parent, "resumed", str(int(saved.get("resumes", 0)) + 1))
        saved["resumes"] = int(saved.get("resumes", 0)) + 1
        state.write_text(json.dumps(saved, indent=2))
        return str(saved["experiment_id"]), str(parent)
    parent = tracking.start_run(
        uri,
        exp_id,
        opts.sweep_name,
        tags={"dataset": opts.experiment, "stage": "search", "strategy": opts.strategy},
        params={
            "trials": opts.trials,
            "max_concurrent": opts.max_concurrent,
            "time_budget_s": opts.time_budget_s,
            "strategy": opts.strategy,
            "search_file": str(opts.search.path),
            "seed": opts.base.run.seed,
            "objective": f"val_{opts.base.train.monitor}",
            "mode": opts.base.train.monitor_mode,
            "base": opts.base.to_dict(),
        },
    )
    return exp_id, parent


def save_sweep_state(opts: SweepOptions, exp_id: str, parent: str, uri: str) -> None:
    """What ``--resume`` needs to rebuild the same sweep: its definition and its runs."""
    state = {
        "experiment": opts.experiment,
        "name": opts.sweep_name,
        "experiment_id": exp_id,
        "parent_run_id": parent,
        "tracking_uri": uri,
        "search_file": str(opts.search.path),
        "search": opts.search.raw,
        "base": opts.base.to_dict(),
        "trials": opts.trials,
        "max_concurrent": opts.max_concurrent,
        "time_budget_s": opts.time_budget_s,
        "strategy": opts.strategy,
        "grid": opts.grid,
        "data_dir": opts.data_dir,
        "annotations": opts.annotations,
        "storage_path": _storage(opts),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = _state_path(opts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))


def load_sweep_options(output_dir: Path, name: str, **changes: Any) -> SweepOptions:
    """The options of a sweep saved in ``output_dir`` (for ``--resume``)."""
    path = output_dir / "search" / name / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"no sweep '{name}' to resume in {output_dir} (missing {path})")
    s = json.loads(path.read_text())
    search = parse_search_file(s["search"], Path(s["search_file"]))
    opts = SweepOptions(
        experiment=s["experiment"],
        search=search,
        base=load_config(None, [], base=s["base"]),
        output_dir=output_dir,
        trials=int(s["trials"]),
        max_concurrent=int(s["max_concurrent"]),
        time_budget_s=s.get("time_budget_s"),
        name=name,
        storage_path=s.get("storage_path"),
        tracking_uri=s.get("tracking_uri"),
        data_dir=s.get("data_dir"),
        annotations=s.get("annotations"),
        resume=True,
        strategy=s.get("strategy", "optuna-asha"),
        grid=dict(s.get("grid") or {}),
    )
    return dataclasses.replace(opts, **changes)


def _needs_components(space: SearchSpace, base: ExperimentConfig) -> bool:
    for p in space.params:
        if p.name == "product.init":
            return "components" in p.choices
    return base.product.init == "components"


def _close_open_runs(uri: str, exp_id: str, parent: str, status: str, outcome: str = "interrupted") -> None:
    """End child runs still RUNNING (their trials did not finish in this session)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for ids in find_trial_runs(uri, exp_id, parent).values():
        for run_id in ids:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "outcome", outcome)
                client.set_terminated(run_id, status=status)


def _reconcile(uri: str, exp_id: str, parent: str, rows: Sequence[TrialRow]) -> None:
    """A trial Tune finished while its end was not yet written (e.g. the driver died in
    between) gets its final status now."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = find_trial_runs(uri, exp_id, parent)
    for r in rows:
        for run_id in runs.get(r.trial_id, []):
            if client.get_run(run_id).info.status != "RUNNING" or r.status == "unfinished":
                continue
            outcome = {"completed": "completed", "stopped": "stopped_early", "error": "error"}[r.status]
            client.set_tag(run_id, "outcome", outcome)
            client.set_terminated(run_id, status="FAILED" if r.status == "error" else "FINISHED")


def run_sweep(opts: SweepOptions, prepared: PreparedData) -> SweepResult:
    """Run (or resume) a sweep on the connected Ray cluster and record it in MLflow.

    The parent run ends FINISHED, or KILLED when the sweep was interrupted (resume it with
    the same output dir and ``resume=True``), or FAILED on an error; no child run is left
    RUNNING.
    """
    import ray
    from ray import tune

    cfg = opts.base
    monitor, mode = cfg.train.monitor, cfg.train.monitor_mode
    metric = f"val_{monitor}"
    space = opts.search.space.bind(cfg, prepared.spec)
    recipe = TrialRecipe(space=space, base=cfg.to_dict())
    check_space(recipe)
    if opts.strategy == "grid":
        for combo in _grid_combinations(opts.grid):
            recipe.plan(combo)  # every grid point must be a valid trial
    sweep_dir = _sweep_dir(opts)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    uri = opts.tracking_uri or tracking.default_tracking_uri(opts.output_dir)
    path = _experiment_path(opts)
    restore = opts.resume and tune.Tuner.can_restore(path)
    if opts.resume and not restore:
        print(f"no trial state saved at {path} yet: the trials start afresh", flush=True)
    if not opts.resume and (_state_path(opts).exists() or tune.Tuner.can_restore(path)):
        raise ConfigError(
            f"a sweep named '{opts.sweep_name}' already exists in {opts.output_dir}; "
            "continue it with --resume, or start another with --name"
        )
    exp_id, parent = _start_or_reopen_parent(opts, uri)
    if not opts.resume:
        save_sweep_state(opts, exp_id, parent, uri)
    status = "FAILED"
    try:
        components: dict[str, str] = {}
        if _needs_components(space, cfg):
            components = fit_components(opts, prepared, uri, parent)
        ctx = SweepContext(
            experiment=opts.experiment,
            recipe=recipe,
            prepared=prepared,
            data_dir=opts.data_dir,
            annotations=opts.annotations,
            work_dir=str(sweep_dir),
            components=components,
            train_storage=f"{_storage(opts).rstrip('/')}/{opts.sweep_name}-train",
        )
        concurrency = trial_concurrency(opts.max_concurrent, ray.cluster_resources(), cfg, opts.trials)
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), TRIAL_DRIVER_RESOURCES)
        print(
            f"sweep '{opts.sweep_name}': {opts.trials} trials, {concurrency} at a time, {opts.strategy}; "
            f"objective {metric} ({mode}); storage {path}",
            flush=True,
        )
        if restore:
            from ray.tune import ResumeConfig

            tuner = tune.Tuner.restore(
                path,
                trainable=trainable,
                # unfinished trials start again (Train resumes them from their last epoch);
                # completed, stopped and failed ones are kept as they are
                _resume_config=ResumeConfig(
                    unfinished=cast(Any, ResumeConfig.ResumeType.RESUME),
                    errored=cast(Any, ResumeConfig.ResumeType.SKIP),
                ),
            )
        else:
            tracker = trial_tracker(uri, exp_id, parent, recipe, opts.sweep_name)
            if opts.strategy == "grid":
                tune_config = tune.TuneConfig(
                    metric=metric,
                    mode=mode,
                    num_samples=1,
                    max_concurrent_trials=concurrency,
                    time_budget_s=opts.time_budget_s,
                    trial_dirname_creator=trial_dirname,
                )
                param_space: dict[str, Any] = {k: tune.grid_search(v) for k, v in opts.grid.items()}
            else:
                tune_config = tune.TuneConfig(
                    metric=metric,
                    mode=mode,
                    search_alg=_search_alg(opts, space, metric, mode),
                    scheduler=_scheduler(opts),
                    num_samples=opts.trials,
                    max_concurrent_trials=concurrency,
                    time_budget_s=opts.time_budget_s,
                    trial_dirname_creator=trial_dirname,
                )
                param_space = {}
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune_config,
                run_config=tune.RunConfig(
                    name=opts.sweep_name,
                    storage_path=_storage(opts),
                    callbacks=[tracker],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=1,
                ),
            )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        rows = _rows(grid, monitor, mode)
        if opts.time_budget_s is not None and wall >= opts.time_budget_s * 0.95:
            # the trials the time budget cut short are stopped, not interrupted
            for r in rows:
                r.status = "stopped" if r.status == "unfinished" else r.status
            _close_open_runs(uri, exp_id, parent, "KILLED", outcome="time_budget")
        _reconcile(uri, exp_id, parent, rows)
        interrupted = any(r.status == "unfinished" for r in rows)
        result = _summarise(opts, recipe, rows, uri, parent, path, interrupted, mode)
        status = "KILLED" if interrupted else "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            _close_open_runs(uri, exp_id, parent, "KILLED")
            tracking.end_run(uri, parent, status)
        except Exception as exc:
            print(f"WARNING: could not close the MLflow runs ({type(exc).__name__}: {exc})", flush=True)


def _grid_combinations(grid: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    import itertools

    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def _summarise(
    opts: SweepOptions,
    recipe: TrialRecipe,
    rows: list[TrialRow],
    uri: str,
    parent: str,
    path: str,
    interrupted: bool,
    mode: str,
) -> SweepResult:
    """Ranking, best configuration, Optuna importances and plot, MLflow artifacts."""
    folder = _sweep_dir(opts) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    monitor = opts.base.train.monitor
    best = next((r for r in rows if r.status == "completed" and not math.isnan(r.score)), None)
    best_plan = recipe.plan(best.raw) if best is not None else None
    artifacts: dict[str, Path] = {}

    from i2m2_ray.data import dataset_module

    columns = list(getattr(dataset_module(opts.experiment), "SUMMARY_COLUMNS", ("accuracy",)))
    table = ranking_table(rows, f"val_{monitor}", columns[:2])
    (folder / "ranking.txt").write_text(table + "\n")
    artifacts["ranking"] = folder / "ranking.txt"
    csv_lines = ["rank,trial_id,status,objective,epochs," + ",".join(f"test_{c}" for c in columns) + ",params"]
    for i, r in enumerate(rows, start=1):
        tests = ",".join(f"{r.test.get(c, math.nan):.6f}" for c in columns)
        params = json.dumps(r.raw, sort_keys=True).replace('"', "'")
        csv_lines.append(f'{i},{r.trial_id},{r.status},{r.score:.6f},{r.epochs},{tests},"{params}"')
    (folder / "ranking.csv").write_text("\n".join(csv_lines) + "\n")
    artifacts["ranking_csv"] = folder / "ranking.csv"

    study = optuna_study(rows, recipe.space, mode)
    importance, plots = importance_artifacts(study, folder, opts.base.run.seed, f"val_{monitor}")
    artifacts.update(plots)

    if best_plan is not None and best is not None:
        best_cfg = folder / "best_config.yaml"
        best_cfg.write_text(
            f"# best trial {best.trial_id} of sweep {opts.sweep_name}: val_{monitor} {best.score:.4f}\n"
            f"# overrides: {' '.join(best_plan.overrides)}\n"
            + yaml.safe_dump(best_plan.config.to_dict(), sort_keys=False)
        )
        artifacts["best_config"] = best_cfg
        if best.checkpoint is not None:
            ckpt_dir = Path(best.checkpoint.to_directory(str(folder / "best_checkpoint")))
            artifacts["best_checkpoint"] = ckpt_dir
    total_epochs = sum(r.epochs for r in rows)

    try:
        for key, art in artifacts.items():
            if key == "best_checkpoint":
                tracking.log_artifact(uri, parent, art, "best_checkpoint")
            else:
                tracking.log_artifact(uri, parent, art, "search")
        tracking.log_artifact(uri, parent, opts.search.path, "search")
        summary: dict[str, float] = {
            "trials_completed": sum(r.status == "completed" for r in rows),
            "trials_stopped_early": sum(r.status == "stopped" for r in rows),
            "trials_failed": sum(r.status == "error" for r in rows),
            "total_epochs": total_epochs,
        }
        if best is not None:
            summary["best_objective"] = best.score
            summary.update({f"best_test_{k}": v for k, v in best.test.items()})
        tracking.log_metrics(uri, parent, summary)
        tracking.log_metrics(uri, parent, {f"importance.{k}": v for k, v in importance.items()})
        if best is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(uri)
            client.set_tag(parent, "best_trial", best.trial_id)
            run_ids = find_trial_runs(uri, client.get_run(parent).info.experiment_id, parent).get(best.trial_id, [])
            for run_id in run_ids[-1:]:
                client.set_tag(run_id, "best", "true")
                if "best_checkpoint" in artifacts:
                    client.log_artifact(run_id, str(artifacts["best_checkpoint"]), "checkpoint")
    except Exception as exc:
        print(f"WARNING: MLflow: {type(exc).__name__}: {exc}", flush=True)
    return SweepResult(
        rows=rows,
        best=best,
        best_plan=best_plan,
        parent_run_id=parent,
        tracking_uri=uri,
        experiment_path=path,
        interrupted=interrupted,
        total_epochs=total_epochs,
        importance=importance,
        artifacts=artifacts,
    )
