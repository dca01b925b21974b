"""Checkpoints as plain dicts: weights plus the config that built them.

Saved with ``torch.save`` and read back with ``weights_only=True``: nothing in a checkpoint
runs code when loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2m2_ray.models.build import TaskSpec

MODEL_FILE = "model.pt"
REQUIRED = ("state_dict", "paradigm", "config", "spec")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the model asked for."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / FSDP wrapper (or the model itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def save_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    paradigm: str,
    config: Mapping[str, Any],
    spec: TaskSpec,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{"state_dict", "paradigm", "config", "spec", **extra}`` to ``path`` (atomically:
    a temporary file renamed into place). The one checkpoint format: the best weights plus
    what built them; a training checkpoint adds ``resume`` (last weights, optimizer and
    scheduler state, the loop's state) to continue from."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "paradigm": paradigm,
        "config": dict(config),
        "spec": {"modalities": list(spec.modalities), "heads": dict(spec.heads), "multilabel": list(spec.multilabel)},
        **dict(extra or {}),
    }
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, p)  # a reader never sees half a file, a crash never leaves one
    return p


def load_checkpoint(path: str | Path, paradigm: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; check its keys and, if given, the paradigm it holds."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise CheckpointError(f"{p}: not a readable weights-only checkpoint ({_reason(exc)})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{p}: expected a dict with keys {list(REQUIRED)}, found {have}")
    if paradigm is not None and ckpt["paradigm"] != paradigm:
        raise CheckpointError(f"{p}: holds a '{ckpt['paradigm']}' model, expected '{paradigm}'")
    return ckpt


def _reason(exc: Exception) -> str:
    """What is wrong with the file, from torch's error, without torch's advice to load it
    with ``weights_only`` off (which would run whatever code the file holds)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "WeightsUnpickler error:" in text:
        after = text.split("WeightsUnpickler error:", 1)[1]
        detail = next((line.strip() for line in after.splitlines() if line.strip()), "")
        detail = re.split(r" was not an allowed global|\. Please| Please use", detail)[0].strip()
        if "global" in detail.lower():  # e.g. "Unsupported global: GLOBAL torch.nn.modules.linear.Linear"
            return f"it holds Python objects, not only tensors: {detail}"
        return f"not a torch checkpoint, or damaged: {detail or 'unreadable'}"
    lines = text.strip().splitlines()
    first = re.split(r"(?<=[.!?])\s", lines[0], maxsplit=1)[0] if lines else ""
    if not first or "weights_only" in first or "trust" in first:
        first = "not a torch checkpoint, or damaged"
    return f"{type(exc).__name__}: {first}"


def spec_of(ckpt: Mapping[str, Any]) -> TaskSpec:
    s = ckpt["spec"]
    return TaskSpec(tuple(s["modalities"]), dict(s["heads"]), tuple(s.get("multilabel", ())))
