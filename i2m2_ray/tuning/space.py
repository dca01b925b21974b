"""The search space: a search YAML parsed into parameters, sampled by Optuna, and each sample
mapped onto a validated config.

A sweep is described by a YAML file (``configs/search/<experiment>_demo.yaml`` ...)::

    base_config: ../fastmri_demo.yaml     # the config every trial starts from
    overrides: [product.epochs=6]         # fixed for every trial
    asha: {grace_period: 1, reduction_factor: 2}   # brackets: N for N grace periods (HyperBand)
    # or, in place of asha, one of Optuna's pruners (i2m2_ray.tuning.pruning):
    # optuna_pruner: {name: median, n_startup_trials: 2}
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

Pure Python: no Ray, MLflow or torch here (Optuna only inside the functions that need it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from i2m2_ray.config import ConfigError, ExperimentConfig, load_config
from i2m2_ray.spec import INTER, TaskSpec
from i2m2_ray.tuning.pruning import PrunerSettings, pruner_settings

if TYPE_CHECKING:
    import optuna

EXPERTS_KEY = "product.experts"
FREEZE_KEY = "product.freeze"
WEIGHTS_KEY = "product.weights"
_SPECIAL = (EXPERTS_KEY, FREEZE_KEY, WEIGHTS_KEY)
_ENTRY_KEYS = {"choices", "low", "high", "log", "step", "int", "when"}
_FILE_KEYS = {"experiment", "description", "base_config", "overrides", "asha", "optuna_pruner", "params"}
# the symbolic expert sets a ``product.experts`` choice may name
_EXPERT_SETS = ("all", "modalities")
SEARCH_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "search"


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
    """ASHA's schedule. ``brackets`` > 1 is asynchronous HyperBand: bracket ``s`` has the
    grace period ``grace_period * reduction_factor**s``, and each trial joins one bracket."""

    grace_period: int = 1
    reduction_factor: float = 2.0
    brackets: int = 1


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
    pruner: PrunerSettings | None = None  # Optuna's pruner stops trials, not ASHA


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
    if not isinstance(asha_raw, Mapping) or set(asha_raw) - {"grace_period", "reduction_factor", "brackets"}:
        raise ConfigError(f"{path}: 'asha' takes grace_period, reduction_factor and brackets")
    asha = AshaSettings(
        int(asha_raw.get("grace_period", 1)),
        float(asha_raw.get("reduction_factor", 2.0)),
        int(asha_raw.get("brackets", 1)),
    )
    if asha.grace_period < 1 or asha.reduction_factor <= 1 or asha.brackets < 1:
        raise ConfigError(f"{path}: asha.grace_period and asha.brackets must be >= 1 and asha.reduction_factor > 1")
    pruner = None
    if data.get("optuna_pruner") is not None:
        if data.get("asha") is not None:
            raise ConfigError(f"{path}: give either 'asha' or 'optuna_pruner' (both stop trials), not both")
        pruner = pruner_settings(data["optuna_pruner"], str(path))
    experiment = data.get("experiment")
    return SearchFile(path, space, base_path, list(overrides), asha, experiment, dict(data), pruner)


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


def default_search_file(experiment: str, real_data: bool, smoke: bool = False) -> Path:
    """``configs/search/<experiment>.yaml`` for real data, ``<experiment>_demo.yaml`` for the
    generated sample; ``default.yaml`` (product parameters only) if the experiment has none.
    ``smoke`` (``--smoke-test``) prefers ``configs/search/smoke/<experiment>[_real].yaml``:
    choices that fit the smoke settings (the tiny sample's crop) and one epoch a trial."""
    if smoke:
        small = SEARCH_CONFIG_DIR / "smoke" / (f"{experiment}_real.yaml" if real_data else f"{experiment}.yaml")
        if small.is_file():
            return small
    own = SEARCH_CONFIG_DIR / (f"{experiment}.yaml" if real_data else f"{experiment}_demo.yaml")
    return own if own.is_file() else SEARCH_CONFIG_DIR / "default.yaml"


ConfigCheck = Callable[[ExperimentConfig], None]
COMBINATION_LIMIT = 4096  # beyond this many combinations, each parameter is checked alone only


def check_space(recipe: TrialRecipe, check: ConfigCheck | None = None, limit: int = COMBINATION_LIMIT) -> None:
    """Fail before Ray starts if a choice or bound, alone or together with the others a
    trial can sample with it, yields a config that ``load_config`` or ``check`` (e.g. the
    dataset's :func:`i2m2_ray.data.check_data_config`) refuses.

    The base is the config the trials start from, smoke settings and ``--set`` included.
    Each parameter's choices (or ``low`` and ``high``) are tried alone, then every
    combination of them the ``when`` conditions allow (up to ``limit``), so that e.g. a
    crop larger than a pad width searched beside it is found here, not in a trial.

    Raises:
        ConfigError: naming the parameter(s), the value(s) and what the config says.
    """
    for p in recipe.space.params:
        for value in _samples(p):
            _try(recipe.base, {p.name: value}, check)
    combos = _combinations(recipe, limit)
    for combo in combos or ():
        if len(combo) > 1:
            _try(recipe.base, combo, check)


def _samples(p: ParamSpec) -> list[Any]:
    """The values of a config-key parameter worth trying: its choices, or its bounds."""
    if p.kind == "categorical":
        return list(p.choices)
    if p.kind in ("int", "float"):
        return [int(v) if p.kind == "int" else v for v in (p.low, p.high)]
    return []  # the product parameters map onto product.* keys that plan() checks


def _combinations(recipe: TrialRecipe, limit: int) -> list[dict[str, Any]] | None:
    """Every combination of the config-key parameters' samples that the ``when`` conditions
    allow (a parameter is left out where it would not be sampled); None when over ``limit``."""
    space = dataclasses.replace(recipe.space, defaults=flatten_values(recipe.base))
    combos: list[dict[str, Any]] = [{}]
    for p in space.params:
        values = _samples(p)
        if not values:
            continue
        grown: list[dict[str, Any]] = []
        for combo in combos:
            grown += [{**combo, p.name: v} for v in values] if space.active(p, combo) else [combo]
        combos = grown
        if len(combos) > limit:
            return None
    return combos


def _fails(base: Mapping[str, Any], values: Mapping[str, Any], check: ConfigCheck | None) -> str | None:
    try:
        cfg = load_config(None, [f"{k}={to_yaml(v)}" for k, v in values.items()], base=base)
        if check is not None:
            check(cfg)
    except ConfigError as exc:
        return str(exc)
    return None


def _try(base: Mapping[str, Any], values: dict[str, Any], check: ConfigCheck | None) -> None:
    problem = _fails(base, values, check)
    if problem is None:
        return
    for key in list(values):  # the fewest parameters that still fail, for the message
        fewer = {k: v for k, v in values.items() if k != key}
        still = _fails(base, fewer, check) if fewer else None
        if still is not None:
            values, problem = fewer, still
    if len(values) == 1:
        ((name, value),) = values.items()
        raise ConfigError(f"search space '{name}' = {value!r}: {problem}")
    chosen = ", ".join(f"{k}={v!r}" for k, v in values.items())
    raise ConfigError(f"search space: a trial may sample {chosen} together: {problem}")
