"""Fusion modules for late-fusion inter-modality experts (pure torch)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """Concatenate per-modality features in sorted modality order: ``(batch, sum D_m)``."""

    def __init__(self, in_features: Mapping[str, int]) -> None:
        super().__init__()
        self.modalities = sorted(in_features)
        self.out_features = sum(in_features.values())

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([features[m] for m in self.modalities], dim=1)


class LowRankTensorFusion(nn.Module):
    """Low-rank multimodal fusion (Liu et al., 2018).

    The outer product of the modality vectors, each extended with a constant 1, is projected
    to ``out_features`` through rank-``rank`` factors, without forming the full tensor:
    ``h = sum_r w_r * prod_m (W_m^r [z_m; 1]) + b``.

    Args:
        in_features: modality name -> feature size ``D_m``.
        out_features: size of the fused vector.
        rank: number of rank-one factors (40 in the AV-MNIST recipe).
    """

    def __init__(self, in_features: Mapping[str, int], out_features: int, rank: int) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"fusion rank must be >= 1, got {rank}")
        self.modalities = sorted(in_features)
        self.rank = rank
        self.out_features = out_features
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, in_features[m] + 1, out_features)) for m in self.modalities}
        )
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(1, out_features))
        for p in self.factors.values():
            nn.init.xavier_normal_(p)
        nn.init.xavier_normal_(self.rank_weights)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        product: Tensor | None = None
        for m in self.modalities:
            z = features[m]
            z1 = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)
            proj = torch.einsum("bd,rdo->rbo", z1, self.factors[m])  # (rank, batch, out)
            product = proj if product is None else product * proj
        assert product is not None
        fused = torch.einsum("r,rbo->bo", self.rank_weights[0], product)
        return fused + self.bias
