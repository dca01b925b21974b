"""The built-in encoder builders, one per ``model.encoder`` value.

Each takes its sizes from the data's input facts (``facts["inputs"]``: modality -> shape of
one sample) and the rest from the ``model`` section; ``check`` says what is wrong, naming
the key, before anything is built.

* ``preact_resnet``: pre-activation ResNet over ``(C, H, W)`` inputs (fastMRI's knee network);
* ``lenet``: one LeNet per ``(C, H, W)`` modality (AV-MNIST);
* ``mlp_gru``: an MLP for flat ``(F,)`` inputs, a GRU for ``(T, F)`` series (MIMIC-III);
* ``transformers``: BERT for ``text``, ViT for ``image``, ViLT for both (VQA-VS, NLVR2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from i2m2_ray.config import ConfigError, ModelConfig
from i2m2_ray.models.encoders import READOUTS, STEMS, GRUEncoder, LeNet, MLPEncoder, PreActResNet
from i2m2_ray.models.registry import Facts, input_shapes, options, positive_int, register_encoder, shape_text
from i2m2_ray.models.transformers_experts import IMAGE, TEXT, TransformersEncoders


def _require_rank(encoder: str, modality: str, shape: Sequence[int], ranks: Sequence[int], layout: str) -> None:
    if len(shape) not in ranks:
        raise ConfigError(
            f"model.encoder={encoder!r} reads {layout} inputs, but modality '{modality}' is ({shape_text(shape)})"
        )


def _one_modality(encoder: str, modalities: Sequence[str], what: str) -> str:
    if len(modalities) != 1:
        raise ConfigError(
            f"model.encoder={encoder!r} builds one {what} per modality, got {list(modalities)}; "
            "set model.inter_fusion to concat or lrtf"
        )
    return modalities[0]


# model.options of preact_resnet, with the fastMRI knee network's values as defaults
PREACT_OPTIONS = {"stem": "knee", "pool_size": 10, "final_norm": False}


@register_encoder("preact_resnet")
class PreActResNetBuilder:
    """Pre-activation ResNet (GroupNorm) over ``(C, H, W)`` inputs, several modalities
    stacked as channels (early fusion): ``model.width``, ``model.blocks`` (blocks per stage),
    ``model.groups``, and ``model.options`` ``stem`` (``knee``: 3x3 stride 1; ``imagenet``:
    7x7 stride 2 + max-pool), ``pool_size`` (the final average pool's side) and
    ``final_norm`` (GroupNorm + ReLU before the pool)."""

    def check(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> None:
        shapes = input_shapes(facts)
        for m in modalities:
            _require_rank("preact_resnet", m, shapes[m], (3,), "(C, H, W)")
        self.options(cfg)

    @staticmethod
    def options(cfg: ModelConfig) -> dict[str, Any]:
        opts = options(cfg, PREACT_OPTIONS, "preact_resnet")
        if opts["stem"] not in STEMS:
            raise ConfigError(f"model.options.stem must be one of {', '.join(STEMS)}, got {opts['stem']!r}")
        if not positive_int(opts["pool_size"]):
            raise ConfigError(f"model.options.pool_size must be a positive integer, got {opts['pool_size']!r}")
        if not isinstance(opts["final_norm"], bool):
            raise ConfigError(f"model.options.final_norm must be true or false, got {opts['final_norm']!r}")
        return opts

    def build(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> nn.Module:
        shapes = input_shapes(facts)
        opts = self.options(cfg)
        return PreActResNet(
            in_channels=sum(shapes[m][0] for m in modalities),
            width=cfg.width,
            blocks=cfg.blocks,
            groups=cfg.groups,
            stem=str(opts["stem"]),
            pool_size=int(opts["pool_size"]),
            final_norm=bool(opts["final_norm"]),
        )


@register_encoder("lenet")
class LeNetBuilder:
    """One LeNet per ``(C, H, W)`` modality (no early fusion): ``model.width`` channels in
    the first stage, doubling per stage; ``model.blocks`` = the stages of each modality, in
    the order of the data's inputs (AV-MNIST: ``[image, audio]``, the recipe's ``[4, 6]``)."""

    def check(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> None:
        shapes = input_shapes(facts)
        m = _one_modality("lenet", modalities, "LeNet")
        _require_rank("lenet", m, shapes[m], (3,), "(C, H, W)")
        names = list(shapes)
        if len(cfg.blocks) != len(names) or min(cfg.blocks) < 1:
            example = [4, 6] if len(names) == 2 else [2] * len(names)
            raise ConfigError(
                f"model.blocks must list the LeNet stages of [{', '.join(names)}], e.g. {example}; got {cfg.blocks}"
            )
        options(cfg, {}, "lenet")

    def build(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> nn.Module:
        shapes = input_shapes(facts)
        m = modalities[0]
        return LeNet(in_channels=shapes[m][0], width=cfg.width, layers=cfg.blocks[list(shapes).index(m)])


# model.options of mlp_gru, with the MIMIC recipe's unimodal series read-out as default
MLP_GRU_OPTIONS = {"series_readout": "linear", "readout_features": 15}


@register_encoder("mlp_gru")
class MLPGRUBuilder:
    """One encoder per modality: flat ``(F,)`` inputs -> MLP ``F -> model.hidden`` (the last
    layer linear); series ``(T, F)`` -> GRU with ``model.width`` units, read out by
    ``model.options.series_readout`` (``last``, ``flatten``, or ``linear``: a per-step
    ``Linear(width, readout_features)``, flattened)."""

    def check(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> None:
        shapes = input_shapes(facts)
        m = _one_modality("mlp_gru", modalities, "encoder")
        _require_rank("mlp_gru", m, shapes[m], (1, 2), "flat (F,) or series (T, F)")
        self.options(cfg)

    @staticmethod
    def options(cfg: ModelConfig) -> dict[str, Any]:
        opts = options(cfg, MLP_GRU_OPTIONS, "mlp_gru")
        if opts["series_readout"] not in READOUTS:
            raise ConfigError(
                f"model.options.series_readout must be one of {', '.join(READOUTS)}, got {opts['series_readout']!r}"
            )
        if not positive_int(opts["readout_features"]):
            raise ConfigError(
                f"model.options.readout_features must be a positive integer, got {opts['readout_features']!r}"
            )
        return opts

    def build(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> nn.Module:
        shape = input_shapes(facts)[modalities[0]]
        if len(shape) == 1:
            return MLPEncoder(shape[0], hidden=cfg.hidden, dropout=cfg.dropout, activate_last=False)
        opts = self.options(cfg)
        return GRUEncoder(
            shape[1],
            hidden=cfg.width,
            readout=str(opts["series_readout"]),
            steps=shape[0],
            readout_features=int(opts["readout_features"]),
        )


TRANSFORMERS_OPTIONS = {TEXT: None, IMAGE: None, "inter": None}  # backbone of each expert kind


@register_encoder("transformers")
class TransformersBuilder:
    """Hugging Face backbones (:class:`~i2m2_ray.models.transformers_experts.TransformersEncoders`):
    BERT over ``text`` ``(L,)`` token ids, ViT over ``image`` ``(3, S, S)`` (or ``(N, 3, S, S)``,
    N images per sample), ViLT over both. ``model.options.{text,image,inter}`` name each
    backbone (pretrained name or path) or give its config values; the facts give the
    tokeniser's ``vocab_size`` and ``pad_token_id``."""

    def check(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> None:
        shapes = input_shapes(facts)
        for m in modalities:
            if m not in (TEXT, IMAGE):
                raise ConfigError(
                    f"model.encoder='transformers' reads modalities '{TEXT}' and '{IMAGE}', got '{m}'"
                )
        if TEXT in modalities:
            _require_rank("transformers", TEXT, shapes[TEXT], (1,), "(L,) token-id")
            for key in ("vocab_size", "pad_token_id"):
                if not isinstance(facts.get(key), int):
                    raise ConfigError(
                        f"model.encoder='transformers' needs the tokeniser's {key} in the data's facts "
                        f"(PreparedData.info['{key}'])"
                    )
        if IMAGE in modalities:
            shape = shapes[IMAGE]
            if not ((len(shape) == 3 and shape[0] == 3) or (len(shape) == 4 and shape[1] == 3)):
                raise ConfigError(
                    f"model.encoder='transformers' reads images (3, S, S) or (N, 3, S, S), but modality "
                    f"'{IMAGE}' is ({shape_text(shape)})"
                )
        opts = options(cfg, TRANSFORMERS_OPTIONS, "transformers")
        key = "inter" if len(modalities) > 1 else modalities[0]
        value = opts[key]
        if value is None:
            raise ConfigError(
                f"model.options.{key} is not set: give a pretrained name or path, or a mapping of config values"
            )
        if not isinstance(value, str | Mapping):
            raise ConfigError(f"model.options.{key}: expected a name/path or a mapping, got {value!r}")

    def build(self, modalities: Sequence[str], cfg: ModelConfig, facts: Facts) -> nn.Module:
        return self.encoders(facts)(modalities, cfg)

    @staticmethod
    def encoders(facts: Facts) -> TransformersEncoders:
        """The factory for the data's tokeniser and image sizes."""
        shapes = input_shapes(facts)
        image = shapes.get(IMAGE, (3, 224, 224))
        return TransformersEncoders(
            vocab_size=int(facts.get("vocab_size", 0)),
            image_size=int(image[-1]),
            num_images=int(image[0]) if len(image) == 4 else 1,
            max_text_length=int(shapes[TEXT][0]) if TEXT in shapes else 40,
            pad_token_id=int(facts.get("pad_token_id", 0)),
        )
