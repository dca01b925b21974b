import time
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


def test_runs_read_back_retagged_reopened_and_listed_under_their_parent(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.get_experiment_id(uri, "e", tmp_path / "art")
    parent = tracking.start_run(uri, exp, "p", tags={"stage": "search"})
    first = tracking.start_run(uri, exp, "a", tags={"trial_id": "t1"}, parent_run_id=parent)
    time.sleep(0.01)  # distinct start times: children are listed oldest first
    second = tracking.start_run(uri, exp, "b", tags={"trial_id": "t2"}, parent_run_id=parent)
    tracking.start_run(uri, exp, "other", tags={})  # not a child

    assert [r.run_id for r in tracking.child_runs(uri, exp, parent)] == [first, second]
    assert tracking.child_runs(uri, exp, second) == []

    tracking.set_tag(uri, first, "outcome", "interrupted")
    tracking.end_run(uri, first, "KILLED")
    info = tracking.get_run(uri, first)
    assert info.run_id == first and info.experiment_id == exp and info.status == "KILLED"
    assert info.tags["outcome"] == "interrupted" and info.tags[tracking.PARENT_TAG] == parent

    tracking.reopen_run(uri, first)
    tracking.delete_tag(uri, first, "outcome")
    info = tracking.get_run(uri, first)
    assert info.status == "RUNNING" and "outcome" not in info.tags and info.tags["trial_id"] == "t1"

    note = tmp_path / "note.txt"
    note.write_text("x")
    tracking.log_artifact(uri, second, note, "notes")
    from mlflow.tracking import MlflowClient

    assert [a.path for a in MlflowClient(uri).list_artifacts(second, "notes")] == ["notes/note.txt"]


def test_a_failing_epoch_logger_warns_once_then_stays_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The epoch logger uses the one guard (:class:`tracking.Tracker`): the first failure
    is reported, later epochs are not logged and not reported again."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.get_experiment_id(uri, "e", tmp_path / "art")
    run = tracking.start_run(uri, exp, "r", tags={})
    log = tracking.epoch_logger(uri, run)
    log({"epoch": 1, "val_auroc": 0.5}, 1)
    assert capsys.readouterr().out == ""
    missing = tracking.epoch_logger(uri, "0" * 32)  # no such run: every write fails
    for step in (1, 2, 3):
        missing({"val_auroc": 0.5}, step)
    out = capsys.readouterr().out
    assert out.count("WARNING: MLflow tracking failed") == 1 and "upload" in out
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history(run, "val_auroc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5)]  # "epoch" is the step, not a metric
    assert "epoch" not in MlflowClient(uri).get_run(run).data.metrics


def test_a_guard_without_an_upload_hint_says_what_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = tracking.Tracker(uri, "/out/ray_results", work="the sweep", later=None, check_server=False)
    exp = tracker.call(tracking.get_experiment_id, "e", tmp_path / "art")
    run = tracker.call(tracking.start_run, exp, "r", tags={})
    assert tracker.call(tracking.set_tag, run, "k", "v") is None and tracker.enabled
    assert tracker.call(tracking.set_tag, "0" * 32, "k", "v") is None and not tracker.enabled
    assert tracker.call(tracking.set_tag, run, "k2", "v") is None  # off: nothing written
    assert tracking.get_run(uri, run).tags.get("k") == "v" and "k2" not in tracking.get_run(uri, run).tags
    out = capsys.readouterr().out
    assert out.count("MLflow tracking failed (set_tag") == 1
    assert "the sweep goes on without it" in out and "/out/ray_results." in out and "upload" not in out


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


def test_tracking_uris_are_shown_with_their_password_masked(capsys: pytest.CaptureFixture[str]) -> None:
    mask = tracking.mask_credentials
    assert mask("http://user:pass@host:5000/api") == "http://user:***@host:5000/api"
    assert mask("at https://a:b%40c@h and s3://k:s@bucket/x") == "at https://a:***@h and s3://k:***@bucket/x"
    for plain in ("http://host:5000/x", "http://user@host", "sqlite:////tmp/m.db"):
        assert mask(plain) == plain
    tracking.Tracker(f"http://alice:s3cret@127.0.0.1:{free_port()}", "/out/results")  # nothing listens
    said = capsys.readouterr().out
    assert "MLflow tracking failed" in said and "alice:***@" in said and "s3cret" not in said


def test_a_result_keeps_its_checkpoint_relative_so_a_moved_output_folder_resumes(tmp_path: Path) -> None:
    from i2m2_ray.files import StateFileError

    out = tmp_path / "out"
    res = FitResult("a", "inter", {}, {}, 1, 1, [], 1.0, str(out / "checkpoints" / "a.pt"))
    res.save(out / "results")
    assert '"checkpoint": "checkpoints/a.pt"' in (out / "results" / "a.json").read_text()
    out.rename(tmp_path / "moved")
    assert FitResult.load(tmp_path / "moved" / "results", "a").checkpoint == str(tmp_path / "moved/checkpoints/a.pt")
    (tmp_path / "moved" / "results" / "a.json").write_text('{"name": "a", "parad')
    with pytest.raises(StateFileError, match=r"results/a.json: the saved result of 'a' is damaged.*delete"):
        FitResult.load(tmp_path / "moved" / "results", "a")


def test_experiments_are_model_training_and_the_hint_opens_their_runs_table(tmp_path: Path) -> None:
    """MLflow 3's UI opens a fresh browser on the GenAI overview: experiments carry the
    model-training kind, and the closing hint gives the runs table's address on that side."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.get_experiment_id(uri, "mimic", tmp_path / "art")
    client = MlflowClient(uri)
    assert client.get_experiment(exp).tags[tracking.KIND_TAG] == tracking.MODEL_TRAINING
    old = client.create_experiment("made-elsewhere")  # an experiment made without the tag gets it
    assert tracking.get_experiment_id(uri, "made-elsewhere", None) == old
    assert client.get_experiment(old).tags[tracking.KIND_TAG] == tracking.MODEL_TRAINING
    assert tracking.ui_hint(uri, "mimic", "/venv/bin/mlflow") == [
        f"MLflow:  /venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
        f"         then open http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning",
    ]
    assert tracking.ui_hint(uri, "no-such-experiment") == []
    assert tracking.runs_page("http://me:***@host:5000/", "7") == (
        "http://me:***@host:5000/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_the_comparison_view_names_the_runs_children_and_the_hint_opens_it(tmp_path: Path) -> None:
    """A pipeline saves the experiment's view "Paradigm comparison (latest run)" (MLflow 3's
    saved-view tag); its search filter finds exactly the run's children, charts the report's
    metrics, and the closing hint opens the runs page in that view."""
    import json

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.get_experiment_id(uri, "fastmri", tmp_path / "art")
    parents = [tracking.start_run(uri, exp, f"fastmri-seed{s}", {"stage": "pipeline"}, {}) for s in (0, 1)]
    kids = {
        p: [tracking.start_run(uri, exp, n, {"paradigm": n}, {}, parent_run_id=p) for n in ("inter", "i2m2")]
        for p in parents
    }
    for p in parents:
        assert tracking.save_comparison_view(uri, exp, p, ["auroc_mean", "auroc_acl"]) == tracking.COMPARISON_VIEW

    tags = MlflowClient(uri).get_experiment(exp).tags
    views = [k for k in tags if k.startswith(tracking.VIEW_TAG_PREFIX)]
    assert views == [tracking.VIEW_TAG_PREFIX + tracking.COMPARISON_VIEW]  # one view, the latest run's
    envelope = json.loads(tags[views[0]])
    assert envelope["name"] == "Paradigm comparison (latest run)"
    assert isinstance(envelope["createdAt"], int) and envelope["updatedAt"] >= envelope["createdAt"]
    state = json.loads(envelope["state"])
    assert [c["metricKey"] for c in state["compareRunCharts"]] == ["test_auroc_mean", "test_auroc_acl"]
    assert {c["type"] for c in state["compareRunCharts"]} == {"BAR"}
    assert {c["metricSectionId"] for c in state["compareRunCharts"]} == {state["compareRunSections"][0]["uuid"]}
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "paradigm"}]
    # the view's filter, run by the store itself, finds the latest run's children only
    found = MlflowClient(uri).search_runs([exp], state["searchFilter"])
    assert sorted(r.info.run_id for r in found) == sorted(kids[parents[1]])

    page = f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
    assert tracking.ui_hint(uri, "fastmri")[1] == (
        f"         then open {page}&viewStateShareKey=i2m2-paradigms&compareRunsMode=CHART"
    )
