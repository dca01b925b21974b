from pathlib import Path

import pytest
import torch

from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, spec_of

SPEC = TaskSpec(("a", "b"), {"y": 2})


def test_round_trip_is_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.pt", model.state_dict(), "inter", {"train": {"lr": 0.1}}, SPEC, {"epoch": 3})
    ckpt = load_checkpoint(path, paradigm="inter")
    assert ckpt["epoch"] == 3 and ckpt["config"] == {"train": {"lr": 0.1}}
    assert spec_of(ckpt) == SPEC
    torch.testing.assert_close(ckpt["state_dict"]["weight"], model.weight.detach())


def test_wrong_paradigm_and_bad_files_are_named(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", {}, "unimodal_a", {}, SPEC)
    with pytest.raises(CheckpointError, match=r"m.pt: holds a 'unimodal_a' model, expected 'inter'"):
        load_checkpoint(path, paradigm="inter")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable weights-only checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: expected a dict with keys"):
        load_checkpoint(tmp_path / "other.pt")


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    # a whole pickled module is exactly what weights_only loading must refuse
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint") as caught:
        load_checkpoint(tmp_path / "module.pt")
    assert "holds Python objects, not only tensors: Unsupported global: GLOBAL torch.nn.modules.linear.Linear" in str(
        caught.value
    )


def test_no_message_suggests_loading_without_weights_only(tmp_path: Path) -> None:
    """torch's own message advises ``weights_only=False`` (running the file's code): never passed on."""
    path = save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(3, 2).state_dict(), "inter", {}, SPEC)
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:200])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    for name in ("truncated.pt", "junk.pt", "module.pt"):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(tmp_path / name)
        text = str(caught.value)
        assert text.startswith(f"{tmp_path / name}: not a readable weights-only checkpoint (")
        assert "weights_only" not in text and "trust" not in text, text
