"""Expert classifiers and the product of experts (pure torch: no Ray, no files).

Every classifier maps a dict of modalities (``dict[str, Tensor]``) to a dict of label
heads (``dict[str, Tensor]``), each head a ``(batch, classes)`` tensor of logits. A single
expert returns raw logits; a :class:`ProductOfExperts` returns normalised
log-probabilities, which are valid logits too (``log_softmax`` is idempotent), so one loss
and one evaluation serve every paradigm.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
from torch import Tensor, nn

Inputs = Mapping[str, Tensor]
HeadOutputs = dict[str, Tensor]


def product_of_experts(logits: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Combine experts' predictive distributions as a normalised product.

    ``log p(y|x) = sum_k w_k log_softmax(z_k)(y) - logsumexp_y' sum_k w_k log_softmax(z_k)(y')``

    Args:
        logits: one ``(batch, classes)`` tensor per expert, all of the same shape.
        weights: optional per-expert exponents ``w_k`` (1 for every expert by default).

    Returns:
        ``(batch, classes)`` normalised log-probabilities of the product.
    """
    if len(logits) == 0:
        raise ValueError("product_of_experts needs at least one expert's logits")
    shape = logits[0].shape
    for k, z in enumerate(logits):
        if z.shape != shape:
            raise ValueError(
                f"expert {k} has logits of shape {tuple(z.shape)}; expected {tuple(shape)} "
                "(every expert must predict the same classes)"
            )
    if weights is not None and len(weights) != len(logits):
        raise ValueError(f"got {len(weights)} weights for {len(logits)} experts")
    joint = torch.zeros_like(logits[0])
    for k, z in enumerate(logits):
        w = 1.0 if weights is None else weights[k]
        joint = joint + w * torch.log_softmax(z, dim=-1)
    return torch.log_softmax(joint, dim=-1)


def binary_product_of_experts(logits: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """The product of experts per class of a multi-label head (each class a yes/no event).

    Each expert's logit ``z_k`` gives ``p_k(yes) = sigmoid(z_k)``; the two-way rule of
    :func:`product_of_experts` over (no, yes) is applied class by class. Returns the
    product's log-odds per class, which equal ``sum_k w_k z_k``.

    Args:
        logits: one ``(batch, classes)`` tensor of per-class logits per expert.
    Returns:
        ``(batch, classes)`` log-odds of the normalised product (``sigmoid`` gives p(yes)).
    """
    pairs = [torch.stack([torch.zeros_like(z), z], dim=-1) for z in logits]  # logits of (no, yes)
    log_p = product_of_experts(pairs, weights)
    return log_p[..., 1] - log_p[..., 0]


def expert_modalities(expert: nn.Module) -> Sequence[str]:
    """The modalities an expert reads (its ``modalities``; every expert class here has it)."""
    found = getattr(expert, "modalities", None)
    if found is None:
        raise TypeError(f"{type(expert).__name__} does not say which modalities it reads ('modalities')")
    return list(found)


def _require(inputs: Inputs, modality: str) -> Tensor:
    if modality not in inputs:
        raise KeyError(f"missing modality '{modality}': the batch has {sorted(inputs)}")
    return inputs[modality]


class MultiHead(nn.Module):
    """One linear classifier per label head over a shared feature vector.

    Args:
        in_features: size of the feature vector.
        heads: head name -> number of classes (e.g. ``{"acl": 2, "mtear": 2}``).
        hidden: width of an optional hidden layer shared by the heads (0: none).
        dropout: dropout before the classifiers.
        activation: ``"relu"`` or ``"gelu"``, after the hidden layer.
        norm: a LayerNorm between the hidden layer and its activation (ViLT's heads are
            Linear, LayerNorm, GELU, Linear). It keeps about half the units on for every
            input: without it, a from-scratch ViLT's head units all went negative on the
            rows it had not learned yet, which then passed back almost no gradient.
    """

    def __init__(
        self,
        in_features: int,
        heads: Mapping[str, int],
        hidden: int = 0,
        dropout: float = 0.0,
        activation: str = "relu",
        norm: bool = False,
    ) -> None:
        super().__init__()
        acts: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in acts:
            raise ValueError(f"head activation must be one of {sorted(acts)}; got {activation!r}")
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = in_features
        if hidden > 0:
            layers.append(nn.Linear(in_features, hidden))
            if norm:
                layers.append(nn.LayerNorm(hidden))
            layers += [acts[activation](), nn.Dropout(dropout)]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(width, n) for name, n in sorted(heads.items())})

    def forward(self, features: Tensor) -> HeadOutputs:
        """``(batch, in_features)`` -> head name -> ``(batch, classes)`` logits."""
        h = self.trunk(features)
        return {name: head(h) for name, head in self.heads.items()}


class UnimodalExpert(nn.Module):
    """Intra-modality expert ``f_m(x_m)``: one encoder over one modality, then heads."""

    def __init__(self, modality: str, encoder: nn.Module, heads: MultiHead) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = encoder
        self.heads = heads

    @property
    def modalities(self) -> list[str]:
        """The modalities this expert reads."""
        return [self.modality]

    def forward(self, inputs: Inputs) -> HeadOutputs:
        return self.heads(self.encoder(_require(inputs, self.modality)))


class EarlyFusionExpert(nn.Module):
    """Inter-modality expert that stacks modalities as channels before one encoder.

    Inputs are ``(batch, C_m, ...)`` tensors with equal trailing shapes, stacked in the
    order given (fastMRI's inter expert sees magnitude and phase as two channels).
    """

    def __init__(self, modalities: Sequence[str], encoder: nn.Module, heads: MultiHead) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.encoder = encoder
        self.heads = heads

    def forward(self, inputs: Inputs) -> HeadOutputs:
        x = torch.cat([_require(inputs, m) for m in self.modalities], dim=1)
        return self.heads(self.encoder(x))


class LateFusionExpert(nn.Module):
    """Inter-modality expert: one encoder per modality, a fusion module, then heads.

    Args:
        encoders: modality name -> encoder producing ``(batch, features)``.
        fusion: maps the dict of features (sorted by modality name) to ``(batch, D)``.
        heads: classifiers over the fused ``D`` features.
    """

    def __init__(self, encoders: nn.ModuleDict, fusion: nn.Module, heads: MultiHead) -> None:
        super().__init__()
        self.encoders = encoders
        self.fusion = fusion
        self.heads = heads

    @property
    def modalities(self) -> list[str]:
        """The modalities this expert reads."""
        return sorted(self.encoders)

    def forward(self, inputs: Inputs) -> HeadOutputs:
        features = {m: enc(_require(inputs, m)) for m, enc in sorted(self.encoders.items())}
        return self.heads(self.fusion(features))


class JointFusionExpert(nn.Module):
    """Inter-modality expert whose encoder reads the whole modality dict (e.g. a
    vision-language transformer over text tokens and image patches), then heads."""

    def __init__(self, modalities: Sequence[str], encoder: nn.Module, heads: MultiHead) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.encoder = encoder
        self.heads = heads

    def forward(self, inputs: Inputs) -> HeadOutputs:
        return self.heads(self.encoder({m: _require(inputs, m) for m in self.modalities}))


class ProductOfExperts(nn.Module):
    """The intra (unimodal experts only) and I2M2 (unimodal + inter) models.

    Each expert maps the modality dict to head logits; the product is taken per head with
    :func:`product_of_experts`. Experts are kept in a ``ModuleDict`` keyed by name
    (``"magnitude"``, ``"phase"``, ``"inter"``), so each can be loaded from, or frozen as,
    the component fitted on its own. Heads named in ``multilabel`` are combined per class
    with :func:`binary_product_of_experts` (their output: per-class log-odds).
    """

    def __init__(
        self,
        experts: Mapping[str, nn.Module],
        weights: Mapping[str, float] | None = None,
        multilabel: Sequence[str] = (),
    ):
        super().__init__()
        if not experts:
            raise ValueError("ProductOfExperts needs at least one expert")
        self.experts = nn.ModuleDict(dict(experts))
        unknown = set(weights or {}) - set(self.experts)
        if unknown:
            raise ValueError(f"weights name unknown experts {sorted(unknown)}; experts: {sorted(self.experts)}")
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in self.experts}
        self.multilabel = frozenset(multilabel)

    def reads(self) -> dict[str, list[str]]:
        """Expert name -> the modalities it reads."""
        return {name: list(expert_modalities(expert)) for name, expert in self.experts.items()}

    def forward(self, inputs: Inputs, available: Collection[str] | None = None) -> HeadOutputs:
        """The product over every expert; with ``available``, over the experts whose
        modalities are all available (the others are not called, so a missing modality's
        input is never read), renormalised: the product of the remaining experts.

        Raises:
            ValueError: ``available`` leaves no expert.
        """
        experts = dict(self.experts.items())
        if available is not None:
            present = set(available)
            experts = {n: e for n, e in experts.items() if set(expert_modalities(e)) <= present}
            if not experts:
                raise ValueError(
                    f"no expert of this product reads only the available modalities {sorted(present)}; "
                    f"experts read {self.reads()}"
                )
        outputs = {name: expert(inputs) for name, expert in experts.items()}
        first = next(iter(outputs.values()))
        w = [self.weights[name] for name in outputs]
        return {
            head: (binary_product_of_experts if head in self.multilabel else product_of_experts)(
                [out[head] for out in outputs.values()], w
            )
            for head in first
        }

    def freeze(self, names: Sequence[str]) -> None:
        """Stop gradients into the named experts (they keep their fitted weights)."""
        for name in names:
            if name not in self.experts:
                raise KeyError(f"cannot freeze unknown expert '{name}'; experts: {sorted(self.experts)}")
            for p in self.experts[name].parameters():
                p.requires_grad_(False)
