"""FitRequest.from_config: the model section is checked against the data's facts before
any Ray Train work, and the facts travel to the workers, whose make_model builds through the
encoder registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.data import PreparedData
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.launch import FitRequest
from i2m2_ray.training.worker import make_model

PREPARED = PreparedData(
    spec=TaskSpec(("image", "audio"), {"digit": 10}),
    datasets={},
    class_counts={"digit": [1] * 10},
    sizes={"train": 10},
    info={"inputs": {"image": [1, 28, 28], "audio": [1, 28, 28]}, "encoders": ["lenet"]},
)
LENET = ["experiment=avmnist", "model.encoder=lenet", "model.blocks=[1, 2]", "model.width=2"]


def request(overrides: list[str], paradigm: str, tmp_path: Path) -> FitRequest:
    cfg = load_config(None, [*LENET, "model.inter_fusion=concat", *overrides])
    out = {"storage_path": str(tmp_path), "checkpoint_path": tmp_path / "m.pt"}
    return FitRequest.from_config(cfg, PREPARED, paradigm, **out)


def test_a_model_the_data_cannot_feed_is_refused_before_ray(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.encoder='preact_resnet' is not available for avmnist; use 'lenet'"):
        request(["model.encoder=preact_resnet"], "unimodal_image", tmp_path)
    with pytest.raises(ConfigError, match=r"model.blocks must list the LeNet stages of \[image, audio\]"):
        request(["model.blocks=[1]"], "i2m2", tmp_path)
    request(["model.inter_fusion=early"], "unimodal_image", tmp_path)  # no inter expert in this model


def test_the_facts_travel_and_the_worker_builds_through_the_registry(tmp_path: Path) -> None:
    req = request([], "i2m2", tmp_path)
    assert req.loop.input_facts == PREPARED.info
    model = make_model(req.loop)
    assert [type(model.experts[e].encoder).__name__ for e in ("image", "audio")] == ["LeNet", "LeNet"]
    assert model.experts["audio"].encoder.out_features == 4  # width 2, two stages (model.blocks[1])
    out = model({"image": torch.zeros(2, 1, 28, 28), "audio": torch.zeros(2, 1, 28, 28)})
    assert out["digit"].shape == (2, 10)


class FakeTaskError(Exception):
    """What Ray raises for a task that failed: a class posing as the original, ``cause`` set."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"ray::MapBatches() (pid=1)\n  traceback...\n{cause}")
        self.cause = cause


def test_errors_that_would_recur_are_found_inside_ray_s_wrappers_with_their_text() -> None:
    from i2m2_ray.data import DataError
    from i2m2_ray.placement import ResourceTimeoutError
    from i2m2_ray.training.launch import recurring_error, resource_error

    original = DataError("/d/image/train_data.npy: 'image' row 5 holds 300.0; expected values 0-255")
    posing = type("RayTaskError(DataError)", (FakeTaskError, DataError), {})(original)
    failed = RuntimeError("Training failed due to worker errors:")
    failed.worker_failures = {0: posing}  # type: ignore[attr-defined]  # Ray Train's WorkerGroupError
    found = recurring_error(failed)
    assert type(found) is DataError and str(found) == str(original)
    noted = DataError(f"{original}\nFailed to apply UDF transform after 1/1 attempts.\nTo change retry attempts, ...")
    assert str(recurring_error(noted)) == str(original)  # Ray Data's note on retries is dropped
    assert recurring_error(RuntimeError("worker died")) is None  # restarted, not recurring
    timeout = ResourceTimeoutError("inter: ... did not get their resources within run.resource_timeout_s=5 s")
    wrapped = FakeTaskError(timeout)
    assert type(recurring_error(wrapped)) is ResourceTimeoutError  # the subclass survives
    startup = type("WorkerGroupStartupTimeoutError", (Exception,), {})("timed out")
    controller = RuntimeError("Training failed due to controller error")
    controller.controller_failure = startup  # type: ignore[attr-defined]
    assert resource_error(controller) is startup
