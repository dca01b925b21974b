from pathlib import Path

import numpy as np
import pytest

from i2m2_ray import tracking
from i2m2_ray.training.launch import FitResult

from .conftest import free_port


def test_dead_server_turns_tracking_off_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    tracker = tracking.Tracker(f"http://127.0.0.1:{free_port()}", "/out/results")
    assert not tracker.enabled
    assert tracker.call(tracking.log_metrics, "run", {"a": 1.0}) is None
    out = capsys.readouterr().out
    assert "MLflow tracking failed" in out and "/out/results" in out and "upload" in out


def test_sqlite_store_runs_end_and_nest(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = tracking.Tracker(uri, str(tmp_path))
    exp = tracker.call(tracking.get_experiment_id, "e", tmp_path / "art")
    parent = tracker.call(tracking.start_run, exp, "p", tags={"stage": "pipeline"}, params={"a": {"b": 1}})
    child = tracker.call(tracking.start_run, exp, "c", tags={}, parent_run_id=parent)
    tracker.call(tracking.log_metrics, child, {"x": 0.5, "nan": float("nan")}, 2)
    tracking.kill_stale_runs(uri, exp, parent)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    c, p = client.get_run(child), client.get_run(parent)
    assert c.data.tags[tracking.PARENT_TAG] == parent
    assert c.data.metrics == {"x": 0.5}  # NaN is not logged
    assert p.data.params == {"a.b": "1"}
    assert c.info.status == p.info.status == "KILLED"


def test_a_write_to_a_locked_sqlite_store_waits_for_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process holding the sqlite write lock past the driver's 5 s busy timeout
    (a loaded machine, concurrent fits) delays tracking; it does not turn it off."""
    import sqlite3
    import threading

    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    tracker = tracking.Tracker(uri, str(tmp_path))
    exp = tracker.call(tracking.get_experiment_id, "e", tmp_path / "art")
    run = tracker.call(tracking.start_run, exp, "r", tags={})
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # no other connection can read or write now
    release = threading.Timer(7.0, holder.execute, args=("COMMIT",))
    release.start()
    try:
        tracker.call(tracking.log_metrics, run, {"x": 0.25}, 1)
    finally:
        release.join()
        holder.close()
    assert tracker.enabled, capsys.readouterr().out
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(run).data.metrics == {"x": 0.25}


def test_a_tracking_error_other_than_a_lock_is_not_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("no such table: runs")

    with pytest.raises(ValueError, match="no such table"):
        tracking.retry_locked(broken, wait_s=0.0)
    assert calls == [1]


def test_fit_result_round_trip(tmp_path: Path) -> None:
    res = FitResult(
        name="inter",
        paradigm="inter",
        test={"auroc_mean": 0.7},
        val={"val_auroc_mean": 0.6},
        best_epoch=2,
        epochs_run=3,
        worker_nodes=["n1"],
        wall_seconds=1.5,
        checkpoint="/x.pt",
        test_labels={"acl": np.array([0, 1])},
        test_probs={"acl": np.array([[0.9, 0.1], [0.2, 0.8]])},
        history=[{"epoch": 1, "val_auroc_mean": 0.5}],
    )
    res.save(tmp_path)
    back = FitResult.load(tmp_path, "inter")
    assert back.test == res.test and back.history == res.history and back.worker_nodes == ["n1"]
    np.testing.assert_array_equal(back.test_probs["acl"], res.test_probs["acl"])
