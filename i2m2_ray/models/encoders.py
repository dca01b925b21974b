"""Modality encoders (pure torch). Each exposes ``out_features``, its feature size."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # GroupNorm needs groups | channels; fall back to fewer groups for thin layers.
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., 2016) with GroupNorm instead of BatchNorm."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm2 = _group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.act = nn.ReLU(inplace=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.norm2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet with GroupNorm: ``(batch, C, H, W)`` -> ``(batch, features)``.

    ``blocks=(2, 2, 2, 2)`` and ``width=64`` give the ResNet-18 of the fastMRI recipe; the
    demo uses a thin, shallow one.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        groups: int = 32,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stem_stride, 3, bias=False),
            nn.MaxPool2d(3, 2, 1),
        )
        layers: list[nn.Module] = []
        ch = width
        for stage, n in enumerate(blocks):
            out_ch = width * 2**stage
            for i in range(n):
                layers.append(PreActBlock(ch, out_ch, 2 if (i == 0 and stage > 0) else 1, groups))
                ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.final = nn.Sequential(_group_norm(ch, groups), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.out_features = ch

    def forward(self, x: Tensor) -> Tensor:
        return self.final(self.layers(self.stem(x))).flatten(1)


class LeNet(nn.Module):
    """LeNet-style conv stack: ``(batch, C, H, W)`` -> ``(batch, features)``.

    ``layers`` conv(5x5)+ReLU+maxpool(2) stages, channels doubling from ``width``, then
    global average pooling (so 28x28 images and 112x112 spectrograms share one class).
    """

    def __init__(self, in_channels: int = 1, width: int = 6, layers: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        ch = in_channels
        for i in range(layers):
            out = width * 2**i
            mods += [nn.Conv2d(ch, out, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            ch = out
        self.body = nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1))
        self.out_features = ch

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)


class MLPEncoder(nn.Module):
    """MLP over flat features: ``(batch, in_features)`` -> ``(batch, hidden[-1])``."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (64,), dropout: float = 0.0):
        super().__init__()
        mods: list[nn.Module] = []
        d = in_features
        for h in hidden:
            mods += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*mods)
        self.out_features = d

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1))


class GRUEncoder(nn.Module):
    """GRU over a time series: ``(batch, time, features)`` -> last hidden ``(batch, hidden)``."""

    def __init__(self, in_features: int, hidden: int = 64, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.gru = nn.GRU(
            in_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_features = hidden

    def forward(self, x: Tensor) -> Tensor:
        _, h = self.gru(x)
        return h[-1]
