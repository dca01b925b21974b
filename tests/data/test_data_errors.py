"""A reader's DataError reaches the user with the file, field and row: readers that fail
unexpectedly are turned into DataErrors naming their batch, and data_error_from finds the
message again in what Ray wraps it in (real Ray errors: Ray Data, and a Ray Train worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.data.base import (
    DataError,
    GuardedReader,
    capped,
    data_error_from,
    index_dataset,
    quiet_data_context,
    sample_settings,
    spaced,
)

MESSAGE = "/data/audio/train_data.npy: 'audio' row 3 holds nan; expected values 0-255"


class FailsOnRow3:
    """A reader that checks its rows, as the datasets' readers do."""

    paths = {"audio": "/data/audio/train_data.npy"}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if 3 in batch["row"]:
            raise DataError(MESSAGE)
        return {"row": batch["row"]}


class Breaks:
    """A reader that fails in a way it does not check (a bug, or data it never expected)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": np.asarray(batch["path"]).astype(float)}  # 'path' strings are not numbers


def drain(ds: Any) -> None:
    for _ in ds.iter_batches(batch_size=4):
        pass


# ---- without Ray: the wrappers data_error_from looks through ----------------------------


class FakeWorkerGroupError(Exception):
    """Shaped like Ray Train's WorkerGroupError: a truncated snippet, the failures by rank."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__("Training failed due to worker errors:\n[Rank 0 Error Snippet]: ...(Output truncated)...")
        self.worker_failures = failures


def test_data_error_from_looks_through_causes_attributes_and_text() -> None:
    assert str(data_error_from(DataError(MESSAGE))) == MESSAGE
    try:
        try:
            raise DataError(MESSAGE + "\nFailed to apply UDF transform after 1/1 attempts (total backoff 0.0s).")
        except DataError as inner:
            raise RuntimeError("UDF failed to process a data block.") from inner
    except RuntimeError as outer:
        assert str(data_error_from(outer)) == MESSAGE  # Ray Data's note is dropped
        group = FakeWorkerGroupError({0: outer})
    assert str(data_error_from(group)) == MESSAGE
    text = RuntimeError(f"stage 'components' failed: inter: Traceback ...\ni2m2_ray.data.base.DataError: {MESSAGE}\n")
    assert str(data_error_from(text)) == MESSAGE  # only a traceback's text is left
    assert data_error_from(RuntimeError("out of memory")) is None
    assert data_error_from(ValueError("x")) is None


def test_an_unexpected_reader_error_becomes_a_data_error_naming_files_and_rows() -> None:
    batch = {"path": np.array(["/d/a.arrow", "/d/a.arrow", "/d/b.arrow"]), "row": np.array([7, 8, 2])}
    with pytest.raises(
        DataError, match=r"^/d/a.arrow, /d/b.arrow, rows 7, 8, 2: Breaks failed \(ValueError: could not"
    ):
        GuardedReader(Breaks())(batch)
    with pytest.raises(DataError, match=f"^{MESSAGE}$"):  # a reader's own DataError passes as it is
        GuardedReader(FailsOnRow3())({"row": np.array([2, 3])})


def test_capped_takes_evenly_spaced_items_in_order() -> None:
    assert capped(list(range(10)), None) == list(range(10))
    assert capped(list(range(10)), 3) == [0, 4, 9] and capped([1, 2], 5) == [1, 2]
    assert spaced(100, 4).tolist() == [0, 33, 66, 99] and len(spaced(5, 5)) == 5


def test_sample_settings_name_unknown_keys_and_wrong_kinds() -> None:
    defaults = {"volumes": 40, "seed": 0, "lang": 0.7, "files": None}
    cfg = load_config(None, ["data.sample={volumes: 3, lang: 1}"])
    assert sample_settings(cfg, defaults, "toy") == {"volumes": 3, "seed": 0, "lang": 1, "files": None}
    cases = {
        "{volumez: 3}": r"unknown data.sample key\(s\) \['volumez'\] for toy; known: \['files', 'lang', 'seed', ",
        "{volumes: many}": r"data.sample.volumes must be a whole number >= 1, got 'many'",
        "{volumes: 0}": r"data.sample.volumes must be a whole number >= 1, got 0",
        "{volumes: 2.5}": r"data.sample.volumes must be a whole number >= 1, got 2.5",
        "{seed: -1}": r"data.sample.seed must be a whole number >= 0, got -1",
        "{lang: 1.5}": r"data.sample.lang must be a number in \[0, 1\], got 1.5",
        "{files: [a]}": r"data.sample.files must be a mapping",
    }
    for value, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            sample_settings(load_config(None, [f"data.sample={value}"]), defaults, "toy")


# ---- real Ray errors ----------------------------------------------------------------------


def test_a_readers_data_error_reaches_the_driver_from_ray_data(ray_local: None) -> None:
    quiet_data_context()
    ds = index_dataset([{"row": i} for i in range(8)], FailsOnRow3(), batch_size=4, blocks=2)
    with pytest.raises(Exception) as err:
        drain(ds)
    assert isinstance(err.value, DataError)  # Ray's RayTaskError(DataError): still a DataError
    assert str(data_error_from(err.value)) == MESSAGE


def test_an_unexpected_reader_error_reaches_the_driver_named(ray_local: None) -> None:
    quiet_data_context()
    ds = index_dataset([{"path": "/d/x.arrow", "row": i} for i in range(4)], Breaks(), batch_size=4, blocks=1)
    with pytest.raises(Exception) as err:
        drain(ds)
    found = data_error_from(err.value)
    assert found is not None and str(found).startswith("/d/x.arrow, rows 0, 1, 2, 3: Breaks failed (ValueError")


def test_data_error_from_digs_through_ray_datas_user_code_exception(ray_local: None) -> None:
    """Where Ray Data wraps the reader's error (its default), the message is two causes down."""
    from ray.data import DataContext
    from ray.exceptions import UserCodeException

    ctx = DataContext.get_current()
    saved = ctx.raise_original_map_exception
    ctx.raise_original_map_exception = False
    try:
        ds = index_dataset([{"row": i} for i in range(8)], FailsOnRow3(), batch_size=4, blocks=2)
        with pytest.raises(UserCodeException) as err:
            drain(ds)
    finally:
        ctx.raise_original_map_exception = saved
    assert "UDF failed to process a data block" in str(err.value)
    assert str(data_error_from(err.value)) == MESSAGE


@pytest.mark.slow
def test_a_readers_data_error_reaches_the_driver_through_a_ray_train_worker(ray_local: None, tmp_path: Path) -> None:
    """The pipeline's path: a Ray Train worker iterates its shard, the trainer is fitted from
    the driver (fit_concurrently's threads); what reaches the driver is a training failure
    (WorkerGroupError) whose text holds only a truncated snippet of the worker's traceback."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    quiet_data_context()
    ds = index_dataset([{"row": i} for i in range(8)], FailsOnRow3(), batch_size=4, blocks=2)

    def loop(config: dict[str, Any]) -> None:
        for _ in ray.train.get_dataset_shard("train").iter_batches(batch_size=4):
            pass

    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=1),
        datasets={"train": ds},
        run_config=RunConfig(storage_path=str(tmp_path), failure_config=FailureConfig(max_failures=0)),
    )
    with pytest.raises(Exception) as err:
        trainer.fit()
    assert "Training failed due to worker errors" in str(err.value)
    assert str(data_error_from(err.value)) == MESSAGE
    # what the pipeline keeps when it joins the failures into one message
    assert str(data_error_from(RuntimeError(f"stage 'components' failed: inter: {err.value}"))) == MESSAGE
