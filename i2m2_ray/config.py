"""Typed experiment configuration, loaded from YAML with ``section.key=value`` overrides.

Unknown keys and out-of-range values are rejected with the offending key named, before any
Ray or torch work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from i2m2_ray.spec import INTER, INTER_EXTENDED, PARADIGMS, PRODUCTS, is_model_name, kind_of

HEAD_ACTIVATIONS = ("relu", "gelu")
OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "linear")
HEAD_REDUCTIONS = ("mean", "sum")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    """Where the data lie and how they are preprocessed. Paths ``None``: generated sample."""

    data_dir: str | None = None
    annotations: str | None = None
    crop_size: int = 320
    pad_width: int = 400
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # Seed of the train/validation/test cut, independent of run.seed (a seed changes the
    # model, never the test set). None: the dataset's recipe value (fastMRI 0, MIMIC 10).
    split_seed: int | None = None
    max_volumes: int | None = None  # fastMRI: use the first N usable volumes (quick runs, --smoke-test)
    max_samples: int | None = None  # every dataset: at most N samples per split, evenly spaced
    # Options of the sample generator used when data_dir is None.
    sample: dict[str, Any] = field(default_factory=dict)
    # Free-form, dataset-specific options (e.g. the MIMIC task).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Backbone and fusion numbers; the dataset's encoder builder reads what it needs."""

    encoder: str = "preact_resnet"
    width: int = 64
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    groups: int = 32
    hidden: list[int] = field(default_factory=lambda: [64])
    head_hidden: int = 0
    head_activation: str = "relu"  # relu | gelu: after the heads' hidden layer (ViLT's own heads: GELU)
    head_norm: bool = False  # LayerNorm between the heads' hidden layer and its activation (as ViLT's)
    dropout: float = 0.0
    inter_fusion: str = "early"  # early | concat | lrtf | joint (one encoder over the modality dict)
    fusion_dim: int = 64
    fusion_rank: int = 40
    # Train only the classification heads; the encoders keep their (pretrained) weights.
    freeze_backbone: bool = False
    # Free-form, encoder-specific options (e.g. the transformers backbones of VQA / NLVR2).
    options: dict[str, Any] = field(default_factory=dict)
    # Model keys that differ for the inter expert (in ``inter`` and inside I2M2), merged over
    # the rest: AV-MNIST's inter LeNets are twice as wide ({width: 6}), MIMIC's inter GRU
    # keeps every step ({options: {series_readout: flatten}}).
    inter_expert: dict[str, Any] = field(default_factory=dict)

    def for_expert(self, expert: str) -> ModelConfig:
        """The settings an expert is built with: ``inter_expert`` merged over the rest for
        ``"inter"``, these settings for a modality's expert."""
        if expert != INTER or not self.inter_expert:
            return self
        merged = _deep_merge(
            {k: v for k, v in dataclasses.asdict(self).items() if k != "inter_expert"}, self.inter_expert
        )
        return _from_dict(ModelConfig, merged, "model.inter_expert")


@dataclass
class TrainConfig:
    """Optimisation of the components (stage 1)."""

    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd | rmsprop (torch defaults: alpha 0.99, eps 1e-8)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    eps: float = 1e-8  # adamw only
    schedule: str = "constant"  # constant | linear: warm up for `warmup` of the steps, then decay to 0
    warmup: float = 0.0
    head_lr_mult: float = 1.0  # the classification heads' learning rate is lr x this
    grad_clip: float = 0.0
    patience: int = 5  # epochs without a gain on `monitor` before stopping (>= epochs: never)
    monitor: str = "auroc_mean"
    monitor_mode: str = "max"
    class_weighted: bool = True
    head_reduction: str = "mean"  # mean | sum: how the label heads' losses combine
    # The training split is shuffled globally every epoch (seeded by run.seed and the
    # epoch); shuffle_buffer > 0 adds Ray Data's local shuffle of the batches on top.
    shuffle: bool = True
    shuffle_buffer: int = 0
    # A split read every epoch (training with one worker; validation) whose tensors take at
    # most this many MB is kept in the worker's memory after its first pass: later epochs
    # read no files (training draws a seeded permutation of the held rows). 0: always stream.
    in_memory_mb: float = 1024.0
    # Performance options (the same loop; see benchmarks/README.md for what each buys).
    grad_accum_steps: int = 1  # micro-batches per optimizer step (effective batch = batch_size x this)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the forward pass; loss and weights stay fp32)
    channels_last: bool = False  # NHWC memory format for the model and 4-D inputs (GPU convolutions)
    compile: bool = False  # torch.compile the model's forward (in place: checkpoints keep their keys)
    prefetch_batches: int = 1  # batches Ray Data prepares ahead of the one being trained on
    pin_memory: bool = False  # page-locked host batches, for faster host-to-GPU copies


@dataclass
class ProductConfig:
    """How the intra and I2M2 products are trained (stage 2)."""

    init: str = "components"  # components | scratch
    freeze: list[str] = field(default_factory=list)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 10
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class RunSettings:
    """Ray placement and seeding."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    seed: int = 0
    paradigms: list[str] = field(default_factory=lambda: list(PARADIGMS))
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    max_failures: int = 1  # worker failures a model's training survives (resumes from its last epoch)
    # Ray Data hands blocks to training in a fixed order (preserve_order), so the same seed
    # gives the same batches; false lets a fast block overtake a slow one (more throughput)
    deterministic: bool = True
    # the longest any wait on cluster resources may last (a model's workers starting, a
    # queued fit or trial getting its CPUs / GPUs) before the run stops with an error
    resource_timeout_s: float = 600.0


@dataclass
class ReportConfig:
    """What the end of a run reports: the test metrics of the comparison table (one column
    each, in this order; the first is the experiment's main metric)."""

    metrics: list[str] = field(default_factory=lambda: ["accuracy", "balanced_accuracy"])


@dataclass
class EvaluationConfig:
    """Stage 3: what every trained model is assessed on besides its test metrics (the test
    split, best weights): bootstrap intervals, calibration, missing and noisy modalities."""

    bootstrap: int = 1000  # test-set resamples per 95% percentile interval (0: no intervals)
    ece_bins: int = 15  # equal-width bins of the top-class probability
    robustness: bool = True  # each modality missing, and noisy at every level
    noise_levels: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    fill: str = "mean"  # what a single expert gets for a missing modality: mean | zeros
    stats_samples: int = 4096  # training samples the modalities' mean and std come from
    # stage 2 also trains inter_extended (the fitted inter expert, trained on with the
    # product's lr, weight decay and epochs): the products' compute-matched control
    inter_extended: bool = True


@dataclass
class ExperimentConfig:
    experiment: str = "fastmri"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    product: ProductConfig = field(default_factory=ProductConfig)
    run: RunSettings = field(default_factory=RunSettings)
    report: ReportConfig = field(default_factory=ReportConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # ``train`` keys that differ by model: a paradigm kind (unimodal, inter, intra, i2m2) or a
    # model name (unimodal_audio), the name winning, e.g. {unimodal: {lr: 0.01}}.
    per_paradigm: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training(self, model: str) -> TrainConfig:
        """The ``train`` settings model ``model`` (``unimodal_<m>``, ``inter``, ``intra``,
        ``i2m2``) is trained with: ``train``, then for the products ``product.lr``,
        ``product.weight_decay`` and ``product.epochs``, then ``per_paradigm`` by kind, then
        by name."""
        merged = dataclasses.asdict(self.train)
        kind = kind_of(model)
        if kind in PRODUCTS or model == INTER_EXTENDED:
            merged.update(lr=self.product.lr, weight_decay=self.product.weight_decay, epochs=self.product.epochs)
        for key in (kind, model):
            merged.update(self.per_paradigm.get(key, {}))
        return _from_dict(TrainConfig, merged, f"per_paradigm.{model}")

    def validate(self) -> ExperimentConfig:
        """Check ranges; raise :class:`ConfigError` naming the key."""
        checks: list[tuple[bool, str]] = [
            (self.run.num_workers >= 1, f"run.num_workers must be >= 1, got {self.run.num_workers}"),
            (
                _positive(self.run.cpus_per_worker),
                f"run.cpus_per_worker must be > 0 and finite, got {self.run.cpus_per_worker}",
            ),
            (
                self.run.resource_timeout_s > 0,
                f"run.resource_timeout_s must be > 0 seconds, got {self.run.resource_timeout_s}",
            ),
            (self.run.seed >= 0, f"run.seed must be >= 0, got {self.run.seed}"),
            (
                self.run.max_failures >= -1,
                f"run.max_failures must be >= 0 (or -1: no limit), got {self.run.max_failures}",
            ),
            *_train_checks(self.train, "train"),
            *_evaluation_checks(self.evaluation),
            (self.product.epochs >= 1, f"product.epochs must be >= 1, got {self.product.epochs}"),
            (_positive(self.product.lr), f"product.lr must be > 0 and finite, got {self.product.lr}"),
            (
                _non_negative(self.product.weight_decay),
                f"product.weight_decay must be >= 0 and finite, got {self.product.weight_decay}",
            ),
            *(
                (_non_negative(w), f"product.weights.{e} must be a finite exponent >= 0 (0: left out), got {w}")
                for e, w in self.product.weights.items()
            ),
            (
                self.product.init in ("components", "scratch"),
                f"product.init must be 'components' or 'scratch', got {self.product.init!r}",
            ),
            (
                self.model.inter_fusion in ("early", "concat", "lrtf", "joint"),
                f"model.inter_fusion must be one of early, concat, lrtf, joint; got {self.model.inter_fusion!r}",
            ),
            (self.model.fusion_rank >= 1, f"model.fusion_rank must be >= 1, got {self.model.fusion_rank}"),
            *_model_checks(self.model, "model"),
            (0.0 <= self.model.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.model.dropout}"),
            (
                self.model.head_activation in HEAD_ACTIVATIONS,
                f"model.head_activation must be one of {', '.join(HEAD_ACTIVATIONS)}; "
                f"got {self.model.head_activation!r}",
            ),
            (
                "inter_expert" not in self.model.inter_expert,
                "model.inter_expert cannot hold another inter_expert",
            ),
            (self.data.crop_size >= 8, f"data.crop_size must be >= 8, got {self.data.crop_size}"),
            (
                self.data.crop_size <= self.data.pad_width,
                f"data.crop_size ({self.data.crop_size}) must be <= data.pad_width ({self.data.pad_width}): "
                "the crop is cut from the image of k-space zero-filled to that width",
            ),
            *(
                (value is None or value >= minimum, f"data.{key} must be >= {minimum}{unset}, got {value}")
                for key, value, minimum, unset in (
                    ("max_volumes", self.data.max_volumes, 1, " (or null: all)"),
                    ("max_samples", self.data.max_samples, 1, " (or null: all)"),
                    ("split_seed", self.data.split_seed, 0, " (or null: the dataset's own)"),
                )
            ),
            (
                len(self.data.split) == 3
                and all(0 < s < 1 for s in self.data.split)
                and abs(sum(self.data.split) - 1) < 1e-6,
                f"data.split must be three fractions in (0, 1) summing to 1, got {self.data.split}",
            ),
            (
                self.run.placement_strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
                f"run.placement_strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, "
                f"got {self.run.placement_strategy!r}",
            ),
            (
                set(self.run.paradigms) <= set(PARADIGMS),
                f"run.paradigms must be among {list(PARADIGMS)}, got {self.run.paradigms}",
            ),
            (
                len(self.report.metrics) >= 1 and all(self.report.metrics),
                f"report.metrics must name at least one metric, got {self.report.metrics}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        # inter_expert's keys and values are checked like the rest
        for ok, message in _model_checks(self.model.for_expert(INTER), "model.inter_expert"):
            if not ok:
                raise ConfigError(message)
        for name in self.per_paradigm:
            if not is_model_name(name):
                raise ConfigError(
                    f"per_paradigm.{name}: expected a paradigm ({', '.join(PARADIGMS)}) or a model name "
                    "such as unimodal_<modality>"
                )
            for ok, message in _train_checks(self.training(name), f"per_paradigm.{name}"):
                if not ok:
                    raise ConfigError(message)
        return self


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _non_negative(x: float) -> bool:
    return math.isfinite(x) and x >= 0


def _model_checks(m: ModelConfig, where: str) -> list[tuple[bool, str]]:
    """Sizes of the ``model`` section (the encoder builders check what depends on the data)."""
    return [
        (m.width >= 1, f"{where}.width must be >= 1, got {m.width}"),
        (
            len(m.blocks) >= 1 and all(b >= 1 for b in m.blocks),
            f"{where}.blocks must list at least one stage of >= 1 blocks, got {m.blocks}",
        ),
        (m.groups >= 1, f"{where}.groups must be >= 1, got {m.groups}"),
        (all(h >= 1 for h in m.hidden), f"{where}.hidden must list layer widths >= 1, got {m.hidden}"),
        (m.head_hidden >= 0, f"{where}.head_hidden must be >= 0 (0: a linear head), got {m.head_hidden}"),
        (m.fusion_dim >= 1, f"{where}.fusion_dim must be >= 1, got {m.fusion_dim}"),
    ]


def _evaluation_checks(e: EvaluationConfig) -> list[tuple[bool, str]]:
    """Ranges of the ``evaluation`` section."""
    return [
        (e.bootstrap >= 0, f"evaluation.bootstrap must be >= 0 resamples (0: no intervals), got {e.bootstrap}"),
        (e.ece_bins >= 1, f"evaluation.ece_bins must be >= 1, got {e.ece_bins}"),
        (
            len(e.noise_levels) >= 1 and all(math.isfinite(v) and v >= 0 for v in e.noise_levels),
            f"evaluation.noise_levels must list finite levels >= 0, got {e.noise_levels}",
        ),
        (
            list(e.noise_levels) == sorted(set(e.noise_levels)) and e.noise_levels[:1] == [0.0],
            f"evaluation.noise_levels must rise from 0 (the clean score) without repeats, got {e.noise_levels}",
        ),
        (e.fill in ("mean", "zeros"), f"evaluation.fill must be 'mean' or 'zeros', got {e.fill!r}"),
        (e.stats_samples >= 1, f"evaluation.stats_samples must be >= 1, got {e.stats_samples}"),
    ]


def _train_checks(t: TrainConfig, where: str) -> list[tuple[bool, str]]:
    """Range checks of one set of training settings (``train``, or one model's resolved
    ``per_paradigm`` settings); ``where`` prefixes the key in the message."""
    return [
        (t.epochs >= 1, f"{where}.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"{where}.batch_size must be >= 1, got {t.batch_size}"),
        (_positive(t.lr), f"{where}.lr must be > 0 and finite, got {t.lr}"),
        (_non_negative(t.weight_decay), f"{where}.weight_decay must be >= 0 and finite, got {t.weight_decay}"),
        (_non_negative(t.momentum), f"{where}.momentum must be >= 0 and finite, got {t.momentum}"),
        (
            len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
            f"{where}.betas must be two numbers in [0, 1), got {t.betas}",
        ),
        (_positive(t.eps), f"{where}.eps must be > 0 and finite, got {t.eps}"),
        (t.schedule in SCHEDULES, f"{where}.schedule must be one of {', '.join(SCHEDULES)}; got {t.schedule!r}"),
        (0 <= t.warmup < 1, f"{where}.warmup must be a fraction of the steps in [0, 1), got {t.warmup}"),
        (_positive(t.head_lr_mult), f"{where}.head_lr_mult must be > 0 and finite, got {t.head_lr_mult}"),
        (_non_negative(t.grad_clip), f"{where}.grad_clip must be >= 0 and finite (0: no clipping), got {t.grad_clip}"),
        (bool(t.monitor.strip()), f"{where}.monitor must name a validation metric, got {t.monitor!r}"),
        (t.patience >= 1, f"{where}.patience must be >= 1, got {t.patience}"),
        (t.grad_accum_steps >= 1, f"{where}.grad_accum_steps must be >= 1, got {t.grad_accum_steps}"),
        (t.precision in ("fp32", "bf16"), f"{where}.precision must be 'fp32' or 'bf16', got {t.precision!r}"),
        (t.prefetch_batches >= 0, f"{where}.prefetch_batches must be >= 0, got {t.prefetch_batches}"),
        (t.shuffle_buffer >= 0, f"{where}.shuffle_buffer must be >= 0, got {t.shuffle_buffer}"),
        (t.in_memory_mb >= 0, f"{where}.in_memory_mb must be >= 0 (0: always stream), got {t.in_memory_mb}"),
        (
            t.optimizer in OPTIMIZERS,
            f"{where}.optimizer must be one of {', '.join(OPTIMIZERS)}; got {t.optimizer!r}",
        ),
        (
            t.monitor_mode in ("max", "min"),
            f"{where}.monitor_mode must be 'max' or 'min', got {t.monitor_mode!r}",
        ),
        (
            t.head_reduction in HEAD_REDUCTIONS,
            f"{where}.head_reduction must be one of {', '.join(HEAD_REDUCTIONS)}; got {t.head_reduction!r}",
        ),
    ]


T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints pass for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {tp}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _from_dict(tp, value, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if tp is float and isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"config key '{key}': expected a number, got NaN")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r}")
    return value


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    """A dataclass's resolved annotations (cached: resolving them was most of a config load)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"'{prefix}'" if prefix else "the top level"
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"train.epochs=3"`` -> ``{"train": {"epochs": 3}}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def check_override_key(text: str, cls: type = ExperimentConfig) -> None:
    """Raise :class:`ConfigError` naming the override when its key is not a config key (keys
    inside a free-form mapping, e.g. ``data.options.task``, are the dataset's to check)."""
    key = text.split("=", 1)[0].strip()
    node: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if not dataclasses.is_dataclass(node):
            if typing.get_origin(node) is dict or node is Any:
                return  # a free-form mapping: any key
            raise ConfigError(f"override {text!r}: '{where}' is a value, not a section with keys")
        hints = _hints(node)
        if part not in hints:
            known = sorted(hints)
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean '{'.'.join([*parts[:i], close[0]])}'?)" if close else ""
            section = f"'{where}'" if where else "the top level"
            raise ConfigError(f"override {text!r}: unknown config key(s) ['{part}'] in {section}{hint}; known: {known}")
        node = hints[part]
        if typing.get_origin(node) in (typing.Union, types.UnionType):
            node = next(a for a in typing.get_args(node) if a is not type(None))


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Build a validated config: dataclass defaults <- ``base`` <- YAML file <- overrides."""
    merged: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {p}: expected a mapping at the top level")
        merged = _deep_merge(merged, loaded)
    for text in overrides:
        check_override_key(text)
        merged = _deep_merge(merged, parse_override(text))
    try:
        cfg = _from_dict(ExperimentConfig, merged)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None
    return cfg.validate()


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Rebuild a config saved with :meth:`ExperimentConfig.to_dict` (e.g. in a checkpoint)."""
    return _from_dict(ExperimentConfig, data).validate()
