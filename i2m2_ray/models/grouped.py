"""Networks of one architecture run side by side as one network of grouped convolutions.

fastMRI's I2M2 holds three PreAct-ResNets of the same shape (magnitude, phase: one input
channel each; the inter expert: both). Run one after the other, each launches its own
kernels on its own smaller tensors. Stacked along channels, ``k`` networks become one:
every convolution a grouped convolution (``groups = k``), every ``GroupNorm(G, C)`` a
``GroupNorm(k G, k C)`` (its groups are contiguous channels, so each network's channels
are normalised exactly as before), and the result is the same function with the same
weights, computed by half or a third of the kernel launches over larger tensors.

:class:`GroupedNetworks` does this for any networks built from convolutions, GroupNorms
and parameter-free modules (PreAct-ResNets with either stem); :class:`GroupedProduct`
applies it to a :class:`~i2m2_ray.models.experts.ProductOfExperts`. Both map their weights
to and from the separate networks' keys, so checkpoints keep the project's layout.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from i2m2_ray.models.experts import (
    EarlyFusionExpert,
    HeadOutputs,
    Inputs,
    ProductOfExperts,
    UnimodalExpert,
    binary_product_of_experts,
    product_of_experts,
)


class ParallelConv(nn.Module):
    """Convolutions with different input channels side by side: the input's channels are
    each convolution's input in turn; the outputs are concatenated along channels (a stem
    seeing one channel beside one seeing two)."""

    def __init__(self, convs: Sequence[_ConvNd]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.splits = [c.in_channels for c in convs]

    def forward(self, x: Tensor) -> Tensor:
        parts = x.split(self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts, strict=True)], dim=1)


def _conv_settings(c: _ConvNd) -> tuple[object, ...]:
    return (c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups, c.padding_mode, c.bias is None)


def _group_conv(convs: Sequence[_ConvNd]) -> nn.Module:
    first = convs[0]
    if any(_conv_settings(c) != _conv_settings(first) for c in convs):
        raise ValueError(f"cannot group convolutions of different shapes: {[repr(c) for c in convs]}")
    if any(c.in_channels != first.in_channels for c in convs):
        return ParallelConv([copy.deepcopy(c) for c in convs])
    k = len(convs)
    cls: type[Any] = type(first)  # Conv1d / Conv2d / Conv3d
    grouped = cls(
        k * first.in_channels,
        k * first.out_channels,
        first.kernel_size,
        stride=first.stride,
        padding=first.padding,
        dilation=first.dilation,
        groups=k * first.groups,
        bias=first.bias is not None,
        padding_mode=first.padding_mode,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    with torch.no_grad():
        grouped.weight.copy_(torch.cat([c.weight for c in convs]))
        if grouped.bias is not None:
            grouped.bias.copy_(torch.cat([c.bias for c in convs if c.bias is not None]))
    return grouped


def _group_norm(norms: Sequence[nn.GroupNorm]) -> nn.GroupNorm:
    first = norms[0]
    settings = (first.num_groups, first.num_channels, first.eps, first.affine)
    if any((n.num_groups, n.num_channels, n.eps, n.affine) != settings for n in norms):
        raise ValueError(f"cannot group GroupNorms of different settings: {[repr(n) for n in norms]}")
    k = len(norms)
    grouped = nn.GroupNorm(k * first.num_groups, k * first.num_channels, first.eps, first.affine)
    if first.affine:
        grouped = grouped.to(device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            grouped.weight.copy_(torch.cat([n.weight for n in norms]))
            grouped.bias.copy_(torch.cat([n.bias for n in norms]))
    return grouped


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def group_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """``k`` modules of one architecture -> one module over their inputs concatenated along
    channels (dim 1), whose output is their outputs concatenated along channels.

    Convolutions become grouped convolutions (a :class:`ParallelConv` where their input
    channels differ), GroupNorms wider GroupNorms; parameter-free modules (activations,
    pools) are kept; containers (``Sequential``, blocks, whole networks) are copied with
    each child grouped, so their own ``forward`` runs unchanged. Anything else holding
    weights (Linear, BatchNorm: they mix or count across channels) is refused.
    """
    if not modules:
        raise ValueError("group_modules needs at least one module")
    first = modules[0]
    if any(type(m) is not type(first) for m in modules):
        raise TypeError(f"cannot group modules of different types: {[type(m).__name__ for m in modules]}")
    if isinstance(first, _ConvTransposeNd):
        raise TypeError("cannot group transposed convolutions")
    if isinstance(first, _ConvNd):
        return _group_conv(modules)  # type: ignore[arg-type]
    if isinstance(first, nn.GroupNorm):
        return _group_norm(modules)  # type: ignore[arg-type]
    names = [n for n, _ in first.named_children()]
    if not names:
        if any(_has_state(m) for m in modules):
            raise TypeError(f"cannot group {type(first).__name__}: it holds weights that mix channels")
        if any(repr(m) != repr(first) for m in modules):
            raise ValueError(f"cannot group {type(first).__name__}s of different settings")
        return copy.deepcopy(first)
    if any([n for n, _ in m.named_children()] != names for m in modules):
        raise ValueError(f"cannot group {type(first).__name__}s with different children")
    if any(True for _ in first.parameters(recurse=False)) or any(True for _ in first.buffers(recurse=False)):
        raise TypeError(f"cannot group {type(first).__name__}: it holds weights of its own")
    grouped = copy.deepcopy(first)  # the container's code and settings; its children are replaced
    for name in names:
        setattr(grouped, name, group_modules([getattr(m, name) for m in modules]))
    return grouped


def _layout(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, int | None, str]]:
    """``(grouped key, network index, network key)`` for every weight of a grouped module:
    index ``None`` for a weight concatenated over the networks along dim 0."""
    if isinstance(module, ParallelConv):
        for i, conv in enumerate(module.convs):
            for key in conv.state_dict():
                yield f"{prefix}convs.{i}.{key}", i, f"{prefix}{key}"
        return
    children = list(module.named_children())
    if not children:
        for key in module.state_dict():
            yield f"{prefix}{key}", None, f"{prefix}{key}"
        return
    for name, child in children:
        yield from _layout(child, f"{prefix}{name}.")


class GroupedNetworks(nn.Module):
    """``k`` networks of one architecture as one: ``(B, sum C_i, ...)`` (the networks'
    inputs concatenated along channels, in order) -> ``(B, k, features)``.

    Each network must map its input to ``(B, features)`` through channel-wise stacked
    layers ending in a flatten of ``(B, C, ...)`` (as :class:`~i2m2_ray.models.encoders.
    PreActResNet` does), so that network ``i``'s features are the ``i``-th block of the
    grouped output. The weights are copies: the networks passed in are left as they are.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("GroupedNetworks needs at least one network")
        self.k = len(networks)
        self.body = group_modules(networks)
        self.out_features = getattr(networks[0], "out_features", None)  # per network

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out.reshape(out.shape[0], self.k, -1)

    def split_state_dicts(self, grouped: Mapping[str, Tensor] | None = None) -> list[dict[str, Tensor]]:
        """Each network's ``state_dict``, taken from ``grouped`` (this module's own keys;
        default its ``state_dict``; its gradients work too)."""
        state = self.state_dict() if grouped is None else grouped
        out: list[dict[str, Tensor]] = [{} for _ in range(self.k)]
        for gkey, i, key in _layout(self.body, "body."):
            key = key.removeprefix("body.")
            if i is None:
                for net, part in zip(out, state[gkey].chunk(self.k, dim=0), strict=True):
                    net[key] = part
            else:
                out[i][key] = state[gkey]
        return out

    def merge_state_dicts(self, states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """This module's ``state_dict`` from the networks' (``load_state_dict`` takes it)."""
        if len(states) != self.k:
            raise ValueError(f"got {len(states)} state dicts for {self.k} networks")
        out: dict[str, Tensor] = {}
        for gkey, i, key in _layout(self.body, "body."):
            key = key.removeprefix("body.")
            out[gkey] = torch.cat([s[key] for s in states]) if i is None else states[i][key]
        return out


def _expert_inputs(name: str, expert: nn.Module) -> list[str]:
    if isinstance(expert, UnimodalExpert):
        return [expert.modality]
    if isinstance(expert, EarlyFusionExpert):
        return list(expert.modalities)
    raise TypeError(
        f"expert '{name}' is a {type(expert).__name__}: only unimodal and early-fusion experts "
        "(one encoder over modalities stacked as channels) can be grouped"
    )


class GroupedProduct(nn.Module):
    """A :class:`~i2m2_ray.models.experts.ProductOfExperts` whose experts named in
    ``grouped`` run their encoders as one :class:`GroupedNetworks` (same outputs, same
    weights, copied); the other experts run as they are.

    The grouped experts must be unimodal or early-fusion experts with encoders of one
    architecture (input channels may differ: fastMRI's magnitude, phase and inter experts
    group together). :meth:`product_state_dict` gives the weights in the product's own
    keys, so a checkpoint loads into the ungrouped model.
    """

    def __init__(self, product: ProductOfExperts, grouped: Sequence[str]) -> None:
        super().__init__()
        names = list(grouped)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"grouped must name distinct experts, got {names}")
        unknown = [n for n in names if n not in product.experts]
        if unknown:
            raise KeyError(f"unknown experts {unknown}; experts: {sorted(product.experts)}")
        self.grouped = tuple(names)
        experts: dict[str, Any] = dict(product.experts)  # unimodal / early-fusion: checked next
        self.inputs = {n: _expert_inputs(n, experts[n]) for n in names}
        self.encoders = GroupedNetworks([experts[n].encoder for n in names])
        self.heads = nn.ModuleDict({n: copy.deepcopy(experts[n].heads) for n in names})
        self.others = nn.ModuleDict({n: copy.deepcopy(e) for n, e in product.experts.items() if n not in self.inputs})
        self.order = list(product.experts)  # the product's order of experts
        self.weights = dict(product.weights)
        self.multilabel = product.multilabel

    def forward(self, inputs: Inputs) -> HeadOutputs:
        parts = []
        for n in self.grouped:
            for m in self.inputs[n]:
                if m not in inputs:
                    raise KeyError(f"missing modality '{m}': the batch has {sorted(inputs)}")
                parts.append(inputs[m])
        features = self.encoders(torch.cat(parts, dim=1))  # (B, k, features)
        outputs = {n: self.heads[n](features[:, i]) for i, n in enumerate(self.grouped)}
        outputs.update({n: e(inputs) for n, e in self.others.items()})
        ordered = [outputs[n] for n in self.order]
        w = [self.weights[n] for n in self.order]
        return {
            head: (binary_product_of_experts if head in self.multilabel else product_of_experts)(
                [out[head] for out in ordered], w
            )
            for head in ordered[0]
        }

    def product_state_dict(self) -> dict[str, Tensor]:
        """The weights under the :class:`ProductOfExperts` keys (``experts.<name>.…``)."""
        out: dict[str, Tensor] = {}
        for n, state in zip(self.grouped, self.encoders.split_state_dicts(), strict=True):
            out.update({f"experts.{n}.encoder.{k}": v for k, v in state.items()})
        for n in self.grouped:
            out.update({f"experts.{n}.heads.{k}": v for k, v in self.heads[n].state_dict().items()})
        for n, e in self.others.items():
            out.update({f"experts.{n}.{k}": v for k, v in e.state_dict().items()})
        return out

    def load_product_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load weights saved under the :class:`ProductOfExperts` keys."""
        encoders = [
            {
                k.removeprefix(f"experts.{n}.encoder."): v
                for k, v in state.items()
                if k.startswith(f"experts.{n}.encoder.")
            }
            for n in self.grouped
        ]
        self.encoders.load_state_dict(self.encoders.merge_state_dicts(encoders))
        for n in self.grouped:
            p = f"experts.{n}.heads."
            self.heads[n].load_state_dict({k.removeprefix(p): v for k, v in state.items() if k.startswith(p)})
        for n, e in self.others.items():
            p = f"experts.{n}."
            e.load_state_dict({k.removeprefix(p): v for k, v in state.items() if k.startswith(p)})
