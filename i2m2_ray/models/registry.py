"""Encoders by name: ``model.encoder`` picks a builder, which checks the ``model`` section
against the data's input facts and builds the encoder of one or more modalities.

The facts are what a dataset puts in ``PreparedData.info`` (plain values, no data code
here): ``inputs`` (modality -> the shape of one sample's array) and, where they apply,
``encoders`` (the encoder names a dataset is meant for), ``vocab_size`` and
``pad_token_id`` (text). The built-in builders (``preact_resnet``, ``lenet``, ``mlp_gru``,
``transformers``) are in :mod:`i2m2_ray.models.encoder_builders`; another one is a class
with ``check`` and ``build``, registered with ``@register_encoder("name")``.

Checks raise :class:`~i2m2_ray.config.ConfigError` naming the config key; they run before
any training starts (:func:`check_model`: the experiment scripts after reading the data, and
``FitRequest.from_config`` for every model it is asked to fit), and again when a worker
builds the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from torch import nn

from i2m2_ray.config import ConfigError, ExperimentConfig, ModelConfig
from i2m2_ray.models.build import EncoderFactory
from i2m2_ray.spec import INTER, TaskSpec, kind_of

Facts = Mapping[str, Any]


class EncoderBuilder(Protocol):
    """Builds the encoders of one ``model.encoder`` value."""

    def check(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> None:
        """Raise :class:`ConfigError` (naming the key) if ``cfg`` cannot build an encoder of
        ``modalities`` for inputs described by ``facts``. No torch work."""
        ...

    def build(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> nn.Module:
        """The encoder: the modalities' arrays -> ``(batch, out_features)``."""
        ...


_builders: dict[str, EncoderBuilder] = {}
B = TypeVar("B", bound=type)


def register_encoder(name: str) -> Callable[[B], B]:
    """Class decorator: an instance of the class builds the encoders of ``model.encoder: name``."""

    def register(cls: B) -> B:
        taken = _builders.get(name)
        if taken is not None and type(taken).__qualname__ != cls.__qualname__:
            raise ValueError(f"encoder '{name}' is already registered by {type(taken).__qualname__}")
        _builders[name] = cls()
        return cls

    return register


def encoder_names() -> list[str]:
    return sorted(_builders)


def get_encoder(name: str) -> EncoderBuilder:
    """The builder of ``model.encoder: name``; an unknown name lists the known ones."""
    if name not in _builders:
        raise ConfigError(f"model.encoder={name!r} is not a registered encoder; known: {encoder_names()}")
    return _builders[name]


def input_shapes(facts: Facts) -> dict[str, tuple[int, ...]]:
    """``facts["inputs"]`` as modality -> shape tuples."""
    inputs = facts.get("inputs")
    if not isinstance(inputs, Mapping) or not inputs:
        raise ConfigError(
            "the data gave no input shapes: a dataset's load() must set PreparedData.info['inputs'] "
            "(modality -> shape of one sample)"
        )
    return {str(m): tuple(int(d) for d in shape) for m, shape in inputs.items()}


def shape_text(shape: Sequence[int]) -> str:
    """``(1, 28, 28)`` -> ``"1x28x28"``."""
    return "x".join(str(d) for d in shape)


def encoder_calls(expert: str, spec: TaskSpec, cfg: ModelConfig) -> list[list[str]]:
    """The modality lists an expert's encoders are built for (as :func:`build_expert` asks):
    one modality for a unimodal expert; for ``inter``, all of them at once (early or joint
    fusion) or one encoder per modality (concat, lrtf)."""
    if expert != INTER:
        return [[expert]]
    if cfg.inter_fusion in ("early", "joint"):
        return [list(spec.modalities)]
    return [[m] for m in spec.modalities]


def experts_of(spec: TaskSpec, paradigms: Iterable[str]) -> list[str]:
    """The experts the models of ``paradigms`` (names or kinds: ``unimodal``,
    ``unimodal_image``, ``i2m2``...) contain, in the spec's order."""
    wanted = set(paradigms)
    models = [m for m in spec.paradigms() if m in wanted or kind_of(m) in wanted]
    found = {e for m in models for e in spec.components(m)}
    return [e for e in (*spec.modalities, INTER) if e in found]


def check_expert(expert: str, cfg: ExperimentConfig, spec: TaskSpec, facts: Facts) -> None:
    """Check one expert's encoders (``model.inter_expert`` merged in for ``inter``)."""
    model = cfg.model.for_expert(expert)
    allowed = list(facts.get("encoders") or [])
    if allowed and model.encoder not in allowed:
        use = " or ".join(repr(a) for a in allowed)
        raise ConfigError(f"model.encoder={model.encoder!r} is not available for {cfg.experiment}; use {use}")
    builder = get_encoder(model.encoder)
    shapes = input_shapes(facts)
    missing = [m for m in spec.modalities if m not in shapes]
    if missing:
        raise ConfigError(f"the data gave no input shape for modality(ies) {missing} (PreparedData.info['inputs'])")
    for modalities in encoder_calls(expert, spec, model):
        if len(modalities) > 1 and model.inter_fusion == "early":
            check_stackable(modalities, shapes, cfg.experiment)
        builder.check(modalities, model, facts)


def check_stackable(modalities: Sequence[str], shapes: Mapping[str, Sequence[int]], dataset: str) -> None:
    """Early fusion concatenates the modalities along the first (channel) axis: every other
    axis must agree."""
    if len({len(shapes[m]) for m in modalities}) == 1 and len({tuple(shapes[m][1:]) for m in modalities}) == 1:
        return
    parts = [f"{m} ({shape_text(shapes[m])})" for m in modalities]
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}"
    raise ConfigError(
        f"model.inter_fusion=early stacks the modalities as channels, but {dataset}'s {listed} differ in shape; "
        "use late fusion: model.inter_fusion=concat or lrtf"
    )


def check_model(
    cfg: ExperimentConfig, spec: TaskSpec, facts: Facts, paradigms: Iterable[str] | None = None
) -> None:
    """Check that every expert of ``paradigms`` (default ``run.paradigms``) can be built
    from ``cfg.model`` for the data described by ``spec`` and ``facts``.

    Raises:
        ConfigError: the first problem, naming the config key.
    """
    for expert in experts_of(spec, cfg.run.paradigms if paradigms is None else paradigms):
        check_expert(expert, cfg, spec, facts)


def encoder_factory(facts: Facts) -> EncoderFactory:
    """An :data:`EncoderFactory` that builds with the builder ``cfg.encoder`` names (so
    ``model.inter_expert`` may choose another encoder for the inter expert), checking first."""

    def build(modalities: Sequence[str], cfg: ModelConfig) -> nn.Module:
        builder = get_encoder(cfg.encoder)
        builder.check(modalities, cfg, facts)
        return builder.build(modalities, cfg, facts)

    return build


def options(cfg: ModelConfig, defaults: Mapping[str, Any], encoder: str) -> dict[str, Any]:
    """``model.options`` over an encoder's defaults; unknown keys are an error naming them."""
    unknown = sorted(set(cfg.options) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown model.options key(s) {unknown} for {encoder}; known: {sorted(defaults)}")
    return {**defaults, **cfg.options}


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
