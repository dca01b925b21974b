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


STEMS = ("knee", "imagenet")


class PreActResNet(nn.Module):
    """Pre-activation ResNet with GroupNorm: ``(batch, C, H, W)`` -> ``(batch, features)``.

    ``blocks=(2, 2, 2, 2)``, ``width=64`` and the ``"knee"`` stem give the fastMRI knee
    network of the public I2M2 code (recipes.md §3): a 3x3 stride-1 stem with no norm and no
    max-pool (the image keeps its full resolution), no norm or ReLU after the last block,
    and an adaptive average pool to ``pool_size`` x ``pool_size`` (10: 512 x 10 x 10 = 51,200
    features for the heads). The ``"imagenet"`` stem (7x7 stride 2 and a max-pool, a quarter
    of the resolution) with a final GroupNorm + ReLU and ``pool_size=1`` is a cheaper variant
    for CPU demos.

    Convolutions start as in the recipe: Kaiming-normal (fan-out, ReLU); GroupNorms at 1 / 0.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        groups: int = 32,
        stem: str = "knee",
        pool_size: int = 10,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.stem: nn.Module
        if stem == "knee":
            self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        layers: list[nn.Module] = []
        ch = width
        for stage, n in enumerate(blocks):
            out_ch = width * 2**stage
            for i in range(n):
                layers.append(PreActBlock(ch, out_ch, 2 if (i == 0 and stage > 0) else 1, groups))
                ch = out_ch
        self.layers = nn.Sequential(*layers)
        tail: list[nn.Module] = [_group_norm(ch, groups), nn.ReLU()] if final_norm else []
        self.final = nn.Sequential(*tail, nn.AdaptiveAvgPool2d(pool_size))
        self.out_features = ch * pool_size * pool_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.final(self.layers(self.stem(x))).flatten(1)


class LeNet(nn.Module):
    """The LeNet of the public AV-MNIST code: ``(batch, 1, H, W)`` -> ``(batch, features)``.

    A 5x5 convolution to ``width`` channels, then ``layers - 1`` 3x3 convolutions doubling
    the channels; every convolution without bias, followed by BatchNorm, ReLU and a 2x2
    max-pool; convolutions start Kaiming-uniform (a = 0). ``features = width * 2**(layers-1)``.

    The public code squeezes the last max-pooled map, which is 1x1 at the recipe's sizes
    (image 28 with 4 layers, audio 112 with 6); global average pooling equals that there and
    also serves inputs that end larger (the CPU demo's pooled spectrograms).
    """

    def __init__(self, in_channels: int = 1, width: int = 6, layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"LeNet needs at least one layer, got {layers}")
        mods: list[nn.Module] = []
        ch = in_channels
        for i in range(layers):
            out = width * 2**i
            kernel = 5 if i == 0 else 3
            conv = nn.Conv2d(ch, out, kernel, padding=kernel // 2, bias=False)
            nn.init.kaiming_uniform_(conv.weight, a=0.0)
            mods += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            ch = out
        self.body = nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1))
        self.out_features = ch

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)


class MLPEncoder(nn.Module):
    """MLP over flat features: ``(batch, in_features)`` -> ``(batch, hidden[-1])``.

    ``activate_last=False`` leaves the last layer linear (MIMIC's static encoder, 5 -> 10 ->
    10, has a ReLU between its layers only).
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (64,), dropout: float = 0.0, activate_last: bool = True
    ) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        d = in_features
        for i, h in enumerate(hidden):
            mods.append(nn.Linear(d, h))
            if activate_last or i < len(hidden) - 1:
                mods += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*mods)
        self.out_features = d

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1))


READOUTS = ("last", "flatten", "linear")


class GRUEncoder(nn.Module):
    """GRU over a time series ``(batch, time, features)`` with one of three read-outs:

    * ``"last"``: the last hidden state, ``(batch, hidden)``;
    * ``"flatten"``: every step's hidden state, flattened, ``(batch, time * hidden)`` (the
      public MIMIC code's inter expert);
    * ``"linear"``: a per-step ``Linear(hidden, readout_features)``, flattened,
      ``(batch, time * readout_features)`` (its unimodal time-series expert).

    ``steps`` (the series length) is needed by the two flattening read-outs.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.0,
        readout: str = "last",
        steps: int = 0,
        readout_features: int = 15,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if readout != "last" and steps < 1:
            raise ValueError(f"readout {readout!r} flattens every step: give the series length (steps), got {steps}")
        self.gru = nn.GRU(
            in_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.readout = readout
        self.steps = steps
        self.step_linear = nn.Linear(hidden, readout_features) if readout == "linear" else None
        per_step = readout_features if readout == "linear" else hidden
        self.out_features = hidden if readout == "last" else steps * per_step

    def forward(self, x: Tensor) -> Tensor:
        states, h = self.gru(x)  # states: (batch, time, hidden)
        if self.readout == "last":
            return h[-1]
        if states.shape[1] != self.steps:
            raise ValueError(f"expected series of {self.steps} steps, got {states.shape[1]}")
        if self.step_linear is not None:
            states = self.step_linear(states)
        return states.flatten(1)
