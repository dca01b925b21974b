"""Config -> model for each paradigm; loading fitted components into a product."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from i2m2_ray.config import ModelConfig
from i2m2_ray.models.experts import (
    EarlyFusionExpert,
    JointFusionExpert,
    LateFusionExpert,
    MultiHead,
    ProductOfExperts,
    UnimodalExpert,
)
from i2m2_ray.models.fusion import ConcatFusion, LowRankTensorFusion
from i2m2_ray.spec import INTER, TaskSpec

# (modalities it sees, model config) -> encoder with ``out_features``. One modality: a
# unimodal encoder; several: an early-fusion encoder over the modalities stacked as channels.
EncoderFactory = Callable[[Sequence[str], ModelConfig], nn.Module]


def out_features(module: nn.Module) -> int:
    """The feature size an encoder or fusion module declares in ``out_features``."""
    size = getattr(module, "out_features", None)
    if not isinstance(size, int):
        raise TypeError(f"{type(module).__name__} must set an integer 'out_features' (its output size)")
    return size


def _heads(in_features: int, spec: TaskSpec, cfg: ModelConfig) -> MultiHead:
    return MultiHead(
        in_features,
        spec.heads,
        hidden=cfg.head_hidden,
        dropout=cfg.dropout,
        activation=cfg.head_activation,
        norm=cfg.head_norm,
    )


def build_expert(name: str, spec: TaskSpec, cfg: ModelConfig, encoders: EncoderFactory) -> nn.Module:
    """One expert: a modality's unimodal classifier, or ``"inter"`` (fusion of all), built
    with :meth:`ModelConfig.for_expert` (``model.inter_expert`` applies to the inter expert)."""
    cfg = cfg.for_expert(name)
    if name != INTER:
        if name not in spec.modalities:
            raise ValueError(f"unknown modality '{name}'; modalities: {list(spec.modalities)}")
        enc = encoders([name], cfg)
        return UnimodalExpert(name, enc, _heads(out_features(enc), spec, cfg))
    if cfg.inter_fusion == "joint":  # one encoder over the modality dict (a vision-language transformer)
        enc = encoders(list(spec.modalities), cfg)
        return JointFusionExpert(spec.modalities, enc, _heads(out_features(enc), spec, cfg))
    if cfg.inter_fusion == "early":
        enc = encoders(list(spec.modalities), cfg)
        return EarlyFusionExpert(spec.modalities, enc, _heads(out_features(enc), spec, cfg))
    encs = nn.ModuleDict({m: encoders([m], cfg) for m in spec.modalities})
    dims = {m: out_features(e) for m, e in encs.items()}
    fusion: nn.Module
    if cfg.inter_fusion == "concat":
        fusion = ConcatFusion(dims)
    elif cfg.inter_fusion == "lrtf":
        fusion = LowRankTensorFusion(dims, cfg.fusion_dim, cfg.fusion_rank)
    else:
        raise ValueError(f"model.inter_fusion: unknown fusion '{cfg.inter_fusion}'")
    return LateFusionExpert(encs, fusion, _heads(out_features(fusion), spec, cfg))


def build_model(
    paradigm: str,
    spec: TaskSpec,
    cfg: ModelConfig,
    encoders: EncoderFactory,
    weights: Mapping[str, float] | None = None,
) -> nn.Module:
    """The model of one paradigm: a single expert, or a product of experts.

    ``unimodal_<m>`` and ``inter`` are single experts; ``intra`` and ``i2m2`` are a
    :class:`ProductOfExperts` over the experts :meth:`TaskSpec.components` names.
    """
    names = spec.components(paradigm)
    model: nn.Module
    if paradigm.startswith("unimodal_") or paradigm == INTER:
        model = build_expert(names[0], spec, cfg, encoders)
    else:
        model = ProductOfExperts({n: build_expert(n, spec, cfg, encoders) for n in names}, weights, spec.multilabel)
    if cfg.freeze_backbone:
        freeze_backbones(model)
    return model


def freeze_backbones(model: nn.Module) -> None:
    """Stop gradients into everything but the classification heads (every :class:`MultiHead`),
    as the public VQA code trains its heads over frozen pretrained backbones."""
    heads = {id(p) for m in model.modules() if isinstance(m, MultiHead) for p in m.parameters()}
    for p in model.parameters():
        if id(p) not in heads:
            p.requires_grad_(False)


def load_components(model: ProductOfExperts, state_dicts: Mapping[str, Mapping[str, Tensor]], source: str = "") -> None:
    """Load fitted components' weights into the product's experts of the same name.

    Raises a ``ValueError`` naming the expert (and ``source``) when keys or shapes differ.
    """
    for name, sd in state_dicts.items():
        if name not in model.experts:
            raise ValueError(f"{source}: no expert '{name}' in this product; experts: {sorted(model.experts)}")
        target = model.experts[name].state_dict()
        missing = sorted(set(target) - set(sd))
        extra = sorted(set(sd) - set(target))
        if missing or extra:
            raise ValueError(
                f"{source}: checkpoint for expert '{name}' does not fit: missing keys {missing[:5]}, "
                f"unexpected keys {extra[:5]} (was it saved by another paradigm or model config?)"
            )
        for key, value in sd.items():
            if tuple(value.shape) != tuple(target[key].shape):
                raise ValueError(
                    f"{source}: checkpoint for expert '{name}': '{key}' has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(target[key].shape)} (different model config?)"
                )
        model.experts[name].load_state_dict(sd)
