"""Predicting with a trained model, without Ray: the state a checkpoint carries, missing
modalities, the batch predictor, the MLflow (pyfunc) model, the command's errors."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from i2m2_ray.cli.predict import PredictError, checkpoint_path, parse_modalities
from i2m2_ray.config import load_config
from i2m2_ray.models.build import build_model
from i2m2_ray.models.registry import encoder_factory
from i2m2_ray.predict import PREDICT_KEY, BatchPredictor, ModelRunner, add_prediction_state, prediction_state_of
from i2m2_ray.spec import TaskSpec
from i2m2_ray.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent

SPEC = TaskSpec(("static", "timeseries"), {"y": 3})
FACTS = {"inputs": {"static": [5], "timeseries": [24, 12]}, "encoders": ["mlp_gru"]}
MEANS = {"static": torch.arange(5, dtype=torch.float32) / 10, "timeseries": torch.full((24, 12), 0.25)}


def state() -> dict[str, Any]:
    return {
        "dataset": "mimic",
        "data": {"task": "y", "zscore": {}},
        "facts": FACTS,
        "classes": {"y": ["none", "1 day", "2 days"]},
        "input_means": MEANS,
        "stats_samples": 64,
    }


def checkpoint(tmp_path: Path, paradigm: str, with_state: bool = True) -> Path:
    cfg = load_config(None, ["model.encoder=mlp_gru", "model.hidden=[4]", "model.width=4", "model.inter_fusion=concat"])
    torch.manual_seed(0)
    model = build_model(paradigm, SPEC, cfg.model, encoder_factory(FACTS))
    extra = {PREDICT_KEY: state()} if with_state else {}
    return save_checkpoint(tmp_path / f"{paradigm}.pt", model.state_dict(), paradigm, cfg.to_dict(), SPEC, extra)


def inputs(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "static": rng.normal(size=(n, 5)).astype(np.float32),
        "timeseries": rng.normal(size=(n, 24, 12)).astype(np.float32),
    }


def test_a_checkpoint_carries_the_prediction_state_weights_only(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, "i2m2", with_state=False)
    add_prediction_state(path, state())
    ckpt = load_checkpoint(path)  # weights_only=True
    got = prediction_state_of(ckpt, path)
    assert got["classes"] == {"y": ["none", "1 day", "2 days"]} and got["facts"] == FACTS
    assert torch.equal(got["input_means"]["static"], MEANS["static"])


def test_a_checkpoint_without_prediction_state_names_what_is_missing(tmp_path: Path) -> None:
    bare = load_checkpoint(checkpoint(tmp_path, "i2m2", with_state=False))
    with pytest.raises(CheckpointError, match=r"no prediction state \(key 'predict'.*input_means"):
        prediction_state_of(bare, "i2m2.pt")
    partial = {**bare, PREDICT_KEY: {k: v for k, v in state().items() if k != "input_means"}}
    with pytest.raises(CheckpointError, match=r"lacks 'input_means' \(the training-split mean"):
        prediction_state_of(partial, "i2m2.pt")


def test_probabilities_sum_to_one_and_match_the_model(tmp_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint(tmp_path, "i2m2"))
    runner = ModelRunner(ckpt, device="cpu")
    x = inputs()
    p = runner.probabilities(x)["y"]
    assert p.shape == (6, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        want = torch.softmax(runner.model({k: torch.from_numpy(v) for k, v in x.items()})["y"], -1).numpy()
    np.testing.assert_allclose(p, want, atol=1e-6)
    cols = runner.columns(runner.probabilities(x))
    assert list(cols) == ["prob_y_none", "prob_y_1_day", "prob_y_2_days", "pred_y"]
    assert list(cols["pred_y"]) == [["none", "1 day", "2 days"][i] for i in p.argmax(1)]


def test_a_product_without_a_modality_is_the_product_of_the_other_experts(tmp_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint(tmp_path, "i2m2"))
    full = ModelRunner(ckpt, device="cpu")
    x = inputs()
    only_static = ModelRunner(ckpt, ["static"], device="cpu")
    p = only_static.probabilities({"static": x["static"]})["y"]  # no timeseries given at all
    with torch.no_grad():  # only the static expert reads static alone: its own distribution
        experts: Any = full.model.experts
        logits = experts["static"]({"static": torch.from_numpy(x["static"])})["y"]
    np.testing.assert_allclose(p, torch.softmax(logits, -1).numpy(), atol=1e-6)


def test_a_single_expert_gets_a_missing_modality_filled_with_its_training_mean(tmp_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint(tmp_path, "inter"))
    x = inputs()
    p = ModelRunner(ckpt, ["timeseries"], device="cpu").probabilities({"timeseries": x["timeseries"]})["y"]
    filled = {"static": np.tile(MEANS["static"].numpy(), (6, 1)), "timeseries": x["timeseries"]}
    np.testing.assert_allclose(p, ModelRunner(ckpt, device="cpu").probabilities(filled)["y"], atol=1e-6)


def test_the_batch_predictor_keeps_ids_and_labels(tmp_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint(tmp_path, "intra"))
    batch = {**inputs(4), "row": np.arange(4), "y_y": np.array([0, 1, 2, 0])}
    out = BatchPredictor(ckpt, ["static", "timeseries"], ["row"])(batch)
    assert list(out["row"]) == [0, 1, 2, 3] and list(out["label_y"]) == [0, 1, 2, 0]
    probs = np.stack([out[c] for c in ("prob_y_none", "prob_y_1_day", "prob_y_2_days")], 1)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_the_mlflow_model_predicts_like_the_checkpoint(tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from i2m2_ray.predict import log_pyfunc_model

    path = checkpoint(tmp_path, "i2m2")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("toy", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp).info.run_id
    x = inputs()
    t0 = time.perf_counter()
    log_pyfunc_model(uri, run, path, {m: v[:2] for m, v in x.items()}, register="toy-i2m2")
    took = time.perf_counter() - t0
    assert took < 20, f"logging the MLflow model took {took:.1f} s"
    assert client.get_run(run).info.status == "FINISHED" and "MLFLOW_TRACKING_URI" not in os.environ
    assert str(client.get_registered_model("toy-i2m2").latest_versions[0].version) == "1"
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run}/model")
    assert loaded.metadata.get_input_schema() is not None
    runner = ModelRunner(load_checkpoint(path), device="cpu")
    frame = __import__("pandas").DataFrame({m: [v.reshape(-1).tolist() for v in x[m]] for m in x})
    got = loaded.predict(frame)
    want = runner.columns(runner.probabilities(x))
    assert list(got.columns) == list(want)
    np.testing.assert_allclose(got["prob_y_none"].to_numpy(), want["prob_y_none"], atol=1e-6)
    # a frame without a modality's column: that modality is missing (the product drops its experts)
    # logged without an example: two samples of the training means stand in
    second = client.create_run(exp).info.run_id
    log_pyfunc_model(uri, second, path)
    mlflow.set_tracking_uri(uri)
    example = mlflow.pyfunc.load_model(f"runs:/{second}/model").input_example
    np.testing.assert_allclose(np.asarray(example["static"][0], dtype=np.float32), MEANS["static"].numpy())
    alone = loaded.predict(frame[["static"]])
    want_alone = ModelRunner(load_checkpoint(path), ["static"], device="cpu").probabilities(x)["y"]
    np.testing.assert_allclose(alone["prob_y_1_day"].to_numpy(), want_alone[:, 1], atol=1e-6)


def test_request_errors_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert parse_modalities("timeseries, static", ["static", "timeseries"]) == ["static", "timeseries"]
    with pytest.raises(PredictError, match="--modalities 'audio': the model reads static, timeseries"):
        parse_modalities("audio", ["static", "timeseries"])
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    with pytest.raises(PredictError, match=r"i2m2.pt: checkpoint not found \(the folder has none\); see --model"):
        checkpoint_path(str(tmp_path / "out"), "i2m2", None, tmp_path)
    with pytest.raises(PredictError, match="give --tracking-uri"):
        checkpoint_path("runs:/abc", "i2m2", None, tmp_path)


def test_the_command_refuses_a_checkpoint_without_state_before_ray_starts(tmp_path: Path) -> None:
    """The script itself, in a process of its own (Ray may already run in this one)."""
    import subprocess
    import sys

    path = checkpoint(tmp_path, "i2m2", with_state=False)
    cmd = [sys.executable, "experiments/predict.py", "--run", str(path), "--data-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "p.csv")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: {path}: no prediction state (key 'predict'") and proc.stderr.count("\n") == 1
    assert "Ray" not in proc.stdout + proc.stderr  # refused before a local Ray started
    assert not (tmp_path / "p.csv").exists()


def test_the_readers_read_only_the_modalities_asked_for_and_labels_when_there(
    tmp_path: Path, tiny_fastmri: tuple[Path, Path]
) -> None:
    from i2m2_ray.data.avmnist import AVMNISTReader
    from i2m2_ray.data.fastmri import SlicePreprocessor
    from i2m2_ray.data.mimic import MIMICReader

    image = (np.arange(3 * 784) % 256).astype(np.uint8).reshape(3, 784)
    np.save(tmp_path / "image.npy", image)
    out = AVMNISTReader(str(tmp_path / "image.npy"), None, 4, keep=("row",))({"row": np.array([2, 0])})
    assert sorted(out) == ["image", "row"] and list(out["row"]) == [2, 0]
    np.testing.assert_allclose(out["image"][0, 0].reshape(-1), image[2] / 255.0, atol=1e-7)
    labelled = AVMNISTReader(str(tmp_path / "image.npy"), None)({"row": np.array([1]), "y_digit": np.array([7])})
    assert sorted(labelled) == ["image", "y_digit"]

    series = np.full((2, 24, 12), 3.0, dtype=np.float32)
    np.save(tmp_path / "series.npy", series)
    stats = {"static_mean": [0.0] * 5, "static_std": [1.0] * 5, "series_mean": [1.0] * 12, "series_std": [2.0] * 12}
    got = MIMICReader(None, str(tmp_path / "series.npy"), stats, "mortality", keep=("row",))({"row": np.array([1])})
    assert sorted(got) == ["row", "timeseries"] and np.all(got["timeseries"] == 1.0)  # (3 - 1) / 2

    knee, _ = tiny_fastmri
    volume = sorted(knee.glob("*.h5"))[0]
    batch = {"path": np.array([str(volume)] * 2), "volume": np.array([volume.stem] * 2), "slice": np.array([0, 1])}
    slices = SlicePreprocessor(40, 32, keep=("volume", "slice"))(batch)
    assert sorted(slices) == ["magnitude", "phase", "slice", "volume"] and slices["magnitude"].shape == (2, 1, 32, 32)


def test_a_word_tokenizer_travels_in_its_state(tmp_path: Path) -> None:
    import json

    from i2m2_ray.data.arrow_vl import TextTokenizer, arrow_file, make_tokenizer

    tok = make_tokenizer(None, ["is the cat left", "two dogs"], tmp_path, 6)
    state = json.loads(json.dumps(tok.state()))  # plain values: fits a weights-only checkpoint
    (tmp_path / "tokenizer.json").unlink()  # the file is not needed any more
    again = TextTokenizer.from_state(state)
    np.testing.assert_array_equal(again(["the cat", "two birds"]), tok(["the cat", "two birds"]))
    assert again.pad_token_id == tok.pad_token_id == 0
    assert arrow_file(tmp_path, {"test": "nlvr2_test1"}, "test") == tmp_path / "nlvr2_test1.arrow"
    assert arrow_file(tmp_path, {}, "dev") == tmp_path / "dev.arrow"
