"""Vision-language encoders on Hugging Face ``transformers`` backbones (pure torch + transformers).

* text-only expert: BERT (``BertModel``) over token ids -> the ``[CLS]`` state;
* image-only expert: ViT (``ViTModel``) over each image -> the ``[CLS]`` state of every
  image, concatenated (NLVR2 has two images per sample);
* inter expert: ViLT (``ViltModel``) over the text and each image -> the pooled state per
  image, concatenated (one pass per image, the image's token type being ``1 + index``, as
  ViLT does for NLVR2).

A backbone setting is either a string (a pretrained model name or local path, loaded with
``from_pretrained``) or a mapping of config values (a randomly initialised model built from
``BertConfig`` / ``ViTConfig`` / ``ViltConfig``: the tests and the demo, nothing downloaded).

Modalities: ``text`` is a ``(batch, length)`` int64 tensor of token ids padded with
``pad_token_id`` (the attention mask is ``ids != pad_token_id``); ``image`` is
``(batch, 3, H, W)`` float, or ``(batch, N, 3, H, W)`` for ``N`` images per sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from i2m2_ray.config import ModelConfig

TEXT = "text"
IMAGE = "image"
BackboneSetting = str | Mapping[str, Any]


def _hidden_size(backbone: nn.Module) -> int:
    """The width of a transformers model (its ``config.hidden_size``)."""
    config: Any = getattr(backbone, "config")  # noqa: B009  # a transformers PretrainedConfig
    return int(config.hidden_size)


def _as_images(pixels: Tensor) -> tuple[Tensor, int]:
    """``(B, 3, H, W)`` or ``(B, N, 3, H, W)`` -> ``(B * N, 3, H, W)`` and ``N``."""
    if pixels.dim() == 4:
        return pixels, 1
    if pixels.dim() == 5:
        b, n = pixels.shape[:2]
        return pixels.reshape(b * n, *pixels.shape[2:]), n
    raise ValueError(f"image tensor has shape {tuple(pixels.shape)}; expected (B, 3, H, W) or (B, N, 3, H, W)")


class TextEncoder(nn.Module):
    """BERT over token ids: ``(B, L)`` int64 -> ``(B, hidden)``, the ``[CLS]`` state."""

    def __init__(self, backbone: nn.Module, pad_token_id: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.pad_token_id = pad_token_id
        self.out_features = _hidden_size(backbone)

    def forward(self, ids: Tensor) -> Tensor:
        out = self.backbone(input_ids=ids, attention_mask=(ids != self.pad_token_id).long())
        return out.last_hidden_state[:, 0]


class ImageEncoder(nn.Module):
    """ViT over each image: ``(B, [N,] 3, H, W)`` -> ``(B, N * hidden)``, ``[CLS]`` states
    of the ``N`` images side by side (one shared ViT)."""

    def __init__(self, backbone: nn.Module, num_images: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_images = num_images
        self.out_features = num_images * _hidden_size(backbone)

    def forward(self, pixels: Tensor) -> Tensor:
        flat, n = _as_images(pixels)
        if n != self.num_images:
            raise ValueError(f"expected {self.num_images} image(s) per sample, got {n}")
        # pretrained ViTs were trained at another resolution: interpolate position embeddings
        cls = self.backbone(pixel_values=flat, interpolate_pos_encoding=True).last_hidden_state[:, 0]
        return cls.reshape(pixels.shape[0], -1)


class VisionLanguageEncoder(nn.Module):
    """ViLT over the text and each image: modality dict -> ``(B, N * hidden)``.

    Image ``i`` gets token type ``1 + i``, so the transformer tells the images apart; the
    pooled outputs of the ``N`` passes are concatenated.
    """

    def __init__(
        self, backbone: nn.Module, num_images: int = 1, pad_token_id: int = 0, text: str = TEXT, image: str = IMAGE
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_images = num_images
        self.pad_token_id = pad_token_id
        self.text, self.image = text, image
        self.out_features = num_images * _hidden_size(backbone)

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        for m in (self.text, self.image):
            if m not in inputs:
                raise KeyError(f"missing modality '{m}': the batch has {sorted(inputs)}")
        ids = inputs[self.text]
        mask = (ids != self.pad_token_id).long()
        pixels = inputs[self.image]
        images = [pixels] if pixels.dim() == 4 else [pixels[:, i] for i in range(pixels.shape[1])]
        if len(images) != self.num_images:
            raise ValueError(f"expected {self.num_images} image(s) per sample, got {len(images)}")
        pooled = [
            self.backbone(
                input_ids=ids, attention_mask=mask, pixel_values=img, image_token_type_idx=i + 1
            ).pooler_output
            for i, img in enumerate(images)
        ]
        return torch.cat(pooled, dim=-1)


def _widen_token_types(vilt: Any, types: int) -> None:
    """Give a pretrained ViLT ``types`` modality token types (text + one per image); new
    image types start as copies of the pretrained image type (ViLT's NLVR2 recipe)."""
    old: nn.Embedding = vilt.embeddings.token_type_embeddings
    if old.num_embeddings >= types:
        return
    new = nn.Embedding(types, old.embedding_dim)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = old.weight[1]
    vilt.embeddings.token_type_embeddings = new
    vilt.config.modality_type_vocab_size = types


@dataclass
class TransformersEncoders:
    """Encoder factory (an :data:`~i2m2_ray.models.build.EncoderFactory`) for the
    vision-language datasets.

    ``model.options`` names the backbones: ``text`` (BERT), ``image`` (ViT) and ``inter``
    (ViLT), each a pretrained name / path or a mapping of config values. The data fix the
    rest: ``vocab_size`` (of the tokeniser, used by config-built text models),
    ``image_size`` (after preprocessing), ``num_images`` per sample, ``max_text_length``
    and the padding id.
    """

    vocab_size: int
    image_size: int
    num_images: int = 1
    max_text_length: int = 40
    pad_token_id: int = 0

    def __call__(self, modalities: Sequence[str], cfg: ModelConfig) -> nn.Module:
        mods = list(modalities)
        if mods == [TEXT]:
            return TextEncoder(self.text_backbone(self._setting(cfg, TEXT)), self.pad_token_id)
        if mods == [IMAGE]:
            return ImageEncoder(self.image_backbone(self._setting(cfg, IMAGE)), self.num_images)
        if sorted(mods) == sorted([TEXT, IMAGE]):
            return VisionLanguageEncoder(
                self.inter_backbone(self._setting(cfg, "inter")), self.num_images, self.pad_token_id
            )
        raise ValueError(f"no transformers encoder for modalities {mods}; expected {[TEXT]}, {[IMAGE]} or both")

    @staticmethod
    def _setting(cfg: ModelConfig, key: str) -> BackboneSetting:
        options = getattr(cfg, "options", {}) or {}
        if key not in options:
            raise ValueError(
                f"model.options.{key} is not set: give a pretrained name or path, or a mapping of config values"
            )
        value = options[key]
        if not isinstance(value, str | Mapping):
            raise ValueError(f"model.options.{key}: expected a name/path or a mapping, got {value!r}")
        return value

    def text_backbone(self, setting: BackboneSetting) -> nn.Module:
        from transformers import BertConfig, BertModel

        if isinstance(setting, str):
            return BertModel.from_pretrained(setting, add_pooling_layer=False)
        config = BertConfig(
            **{
                "vocab_size": self.vocab_size,
                "max_position_embeddings": max(64, self.max_text_length),
                "pad_token_id": self.pad_token_id,
                **setting,
            }
        )
        return BertModel(config, add_pooling_layer=False)

    def image_backbone(self, setting: BackboneSetting) -> nn.Module:
        from transformers import ViTConfig, ViTModel

        if isinstance(setting, str):
            return ViTModel.from_pretrained(setting, add_pooling_layer=False)
        return ViTModel(ViTConfig(**{"image_size": self.image_size, **setting}), add_pooling_layer=False)

    def inter_backbone(self, setting: BackboneSetting) -> nn.Module:
        from transformers import ViltConfig, ViltModel

        types = 1 + self.num_images
        if isinstance(setting, str):
            model = ViltModel.from_pretrained(setting)
            _widen_token_types(model, types)
            return model
        config = ViltConfig(
            **{
                "vocab_size": self.vocab_size,
                "max_position_embeddings": max(40, self.max_text_length),
                "image_size": self.image_size,
                "modality_type_vocab_size": max(2, types),
                "pad_token_id": self.pad_token_id,
                **setting,
            }
        )
        return ViltModel(config)
