"""fastMRI k-space -> magnitude and phase in torch, on the device the k-space is on.

The same preprocessing as :func:`i2m2_ray.data.fastmri.kspace_to_image` followed by
:func:`i2m2_ray.data.fastmri.image_to_modalities` (numpy, run by Ray Data on CPUs): zero-fill
the k-space columns to ``pad_width``, centred inverse 2-D FFT (orthonormal), centre crop,
magnitude standardised per slice, phase divided by pi. Done in the training step on a GPU,
it lets the data pipeline ship raw k-space slices and spares the ~100 slices per CPU-second
the numpy version costs (benchmarks/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _centred_ifft(x: Tensor, dim: int) -> Tensor:
    """``fftshift(ifft(ifftshift(x)))`` along one dimension, orthonormal."""
    return torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def kspace_to_image(kspace: Tensor, pad_width: int, crop: int) -> Tensor:
    """Zero-fill k-space to ``pad_width`` columns, centred inverse 2-D FFT, centre crop.

    The two axes are transformed one after the other (a 2-D transform is separable) and the
    columns are cropped between them, so the second pass runs over ``crop`` columns only.

    Args:
        kspace: ``(..., H, W)`` complex, ``W <= pad_width``; k-space placed in the middle of
            the zero-filled grid, as the numpy version places it.
        pad_width: columns of the zero-filled grid.
        crop: side of the square centre crop.
    Returns:
        ``(..., crop, crop)`` complex image (the dtype of ``kspace``).
    """
    if not kspace.is_complex():
        raise TypeError(f"k-space must be complex, got {kspace.dtype}")
    h, w = kspace.shape[-2:]
    if w > pad_width:
        raise ValueError(f"k-space width {w} exceeds pad width {pad_width}")
    if crop > h or crop > pad_width:
        raise ValueError(f"crop {crop} larger than the image ({h}, {pad_width})")
    left = (pad_width - w) // 2
    if w < pad_width:
        kspace = F.pad(kspace, (left, pad_width - w - left))
    top, lft = (h - crop) // 2, (pad_width - crop) // 2
    cols = _centred_ifft(kspace, -1)[..., lft : lft + crop]
    return _centred_ifft(cols, -2)[..., top : top + crop, :]


def image_to_modalities(image: Tensor, eps: float = 1e-8) -> dict[str, Tensor]:
    """``(B, S, S)`` complex -> ``magnitude`` (standardised per slice: population std, plus
    ``eps``) and ``phase`` / pi, each ``(B, 1, S, S)`` float."""
    mag = image.abs()
    mean = mag.mean(dim=(-2, -1), keepdim=True)
    std = mag.std(dim=(-2, -1), keepdim=True, correction=0) + eps
    return {"magnitude": ((mag - mean) / std).unsqueeze(-3), "phase": (image.angle() / math.pi).unsqueeze(-3)}


class KspaceToModalities(nn.Module):
    """``(B, H, W)`` complex k-space -> ``{"magnitude", "phase"}``, each ``(B, 1, crop, crop)``.

    No parameters and no gradient; runs outside autocast (the FFT in complex64 whatever the
    step's precision).
    """

    def __init__(self, pad_width: int, crop: int) -> None:
        super().__init__()
        self.pad_width = pad_width
        self.crop = crop

    def forward(self, kspace: Tensor) -> dict[str, Tensor]:
        with torch.no_grad(), torch.autocast(device_type=kspace.device.type, enabled=False):
            return image_to_modalities(kspace_to_image(kspace, self.pad_width, self.crop))

    def extra_repr(self) -> str:
        return f"pad_width={self.pad_width}, crop={self.crop}"


class FromKspace(nn.Module):
    """A model over magnitude and phase fed with k-space: ``inputs[key]`` (``(B, H, W)``
    complex) goes through ``transform`` and the resulting modality dict to ``model``.

    The transform runs eagerly in the step; compile ``model`` alone (complex tensors and
    FFTs stay out of the compiled graph).
    """

    def __init__(self, transform: nn.Module, model: nn.Module, key: str = "kspace") -> None:
        super().__init__()
        self.transform = transform
        self.model = model
        self.key = key

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self.key not in inputs:
            raise KeyError(f"missing modality '{self.key}': the batch has {sorted(inputs)}")
        out: dict[str, Tensor] = self.model(self.transform(inputs[self.key]))
        return out
