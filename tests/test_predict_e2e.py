"""Predicting on each dataset's real-format files with a real local Ray (Ray Data batch
inference over model actors), real checkpoints and a real MLflow sqlite store.

One AV-MNIST pipeline is trained once at smoke size (only I2M2, from scratch) and shared:
its checkpoint and its MLflow model must give the same probabilities, and the scored test
accuracy must be the pipeline's own. MIMIC and fastMRI use an untrained I2M2 with the
prediction state of their real loaders (what the pipeline writes), which tests the
readers and the missing-modality rule without another training run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from i2m2_ray.cli.common import CONFIG_DIR, smoke_overrides
from i2m2_ray.cli.predict import PredictError, checkpoint_path, predict_files
from i2m2_ray.predict import PREDICT_KEY, ModelRunner, prediction_state, training_input_stats
from i2m2_ray.training.checkpoint import load_checkpoint, save_checkpoint

from .conftest import REPO

pytestmark = pytest.mark.slow


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def probs_of(rows: list[dict[str, str]], columns: list[str]) -> np.ndarray:
    return np.array([[float(r[c]) for c in columns] for r in rows])


@pytest.fixture(scope="module")
def avmnist_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A smoke AV-MNIST pipeline that trains I2M2 only (from scratch), registered in MLflow."""
    out = tmp_path_factory.mktemp("avmnist_predict") / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    cmd = [
        sys.executable, "experiments/avmnist.py", "--smoke-test", "--output-dir", str(out), "--seed", "1",
        "--set", "run.paradigms=[i2m2]", "--set", "product.init=scratch", "--register", "avmnist-i2m2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    logged = [line for line in proc.stdout.splitlines() if line.startswith("models: prediction state")]
    assert len(logged) == 1, proc.stdout[-4000:]
    print(logged[0])  # what completing the checkpoints and logging the MLflow models cost
    yield out


def test_avmnist_predictions_from_the_checkpoint_and_the_mlflow_model_agree(
    avmnist_run: Path, ray_local: None, tmp_path: Path
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from i2m2_ray.data.avmnist import AVMNISTReader

    out = avmnist_run
    csv_path = tmp_path / "predictions.csv"
    result = predict_files(out / "checkpoints" / "i2m2.pt", out / "sample_data", csv_path, score=True)
    assert result.rows == 80  # the smoke sample's test files
    columns, rows = read_csv(csv_path)
    prob_cols = [f"prob_digit_{d}" for d in range(10)]
    assert columns == ["row", *prob_cols, "pred_digit", "label_digit"]
    assert [int(r["row"]) for r in rows] == list(range(80))
    p = probs_of(rows, prob_cols)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert [r["pred_digit"] for r in rows] == [str(i) for i in p.argmax(axis=1)]
    # scored on the test files, the model's test accuracy in the pipeline's summary
    summary = json.loads((out / "summary.json").read_text())
    assert result.metrics["accuracy"] == pytest.approx(summary["i2m2"]["accuracy"], abs=1e-9)

    # the pipeline's MLflow runs: the checkpoint artifact is the output folder's, byte for byte
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = json.loads((out / "pipeline.json").read_text())["parent_run_id"]
    fetched = checkpoint_path(f"runs:/{parent}", "i2m2", uri, tmp_path / "downloaded")
    assert fetched.read_bytes() == (out / "checkpoints" / "i2m2.pt").read_bytes()
    assert str(client.get_registered_model("avmnist-i2m2").latest_versions[0].version) == "1"

    # the MLflow model on a pandas frame of the first 16 samples' arrays: the same probabilities
    child = next(r for r in client.search_runs([client.get_run(parent).info.experiment_id])
                 if r.data.tags.get("paradigm") == "i2m2")  # fmt: skip
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{child.info.run_id}/model")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    files = out / "sample_data"
    reader = AVMNISTReader(str(files / "image" / "test_data.npy"), str(files / "audio" / "test_data.npy"), 4)
    arrays = reader({"row": np.arange(16)})
    import pandas as pd

    frame = pd.DataFrame({m: [a.reshape(-1).tolist() for a in arrays[m]] for m in ("image", "audio")})
    got = model.predict(frame)[prob_cols].to_numpy()
    gap = float(np.abs(got - p[:16]).max())
    print(f"max |prob(checkpoint) - prob(MLflow model)| = {gap:.2e}")
    assert gap < 1e-5


def test_avmnist_predicts_without_a_modality_whose_files_are_gone(
    avmnist_run: Path, ray_local: None, tmp_path: Path
) -> None:
    import ray

    data = tmp_path / "new"
    shutil.copytree(avmnist_run / "sample_data", data)
    shutil.rmtree(data / "audio")  # no audio files at all
    shutil.copy(avmnist_run / "checkpoints" / "i2m2.pt", tmp_path / "i2m2.pt")
    csv_path = tmp_path / "image_only.csv"
    # the command, joining the running Ray
    address = ray.get_runtime_context().gcs_address
    cmd = [
        sys.executable, "experiments/predict.py", "--run", str(avmnist_run), "--data-dir", str(data),
        "--modalities", "image", "--out", str(csv_path), "--address", address, "--score",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "predictions: 80 rows" in proc.stdout and "scores: {" in proc.stdout
    _, rows = read_csv(csv_path)
    p = probs_of(rows, [f"prob_digit_{d}" for d in range(10)])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    # the product without audio is its image expert's distribution
    from i2m2_ray.data.avmnist import AVMNISTReader

    image = AVMNISTReader(str(data / "image" / "test_data.npy"), None, 4)({"row": np.arange(80)})["image"]
    ckpt = load_checkpoint(avmnist_run / "checkpoints" / "i2m2.pt")
    runner = ModelRunner(ckpt, device="cpu")
    with torch.no_grad():
        experts: Any = runner.model.experts
        logits = experts["image"]({"image": torch.from_numpy(image)})["digit"]
    np.testing.assert_allclose(p, torch.softmax(logits, -1).numpy(), atol=1e-5)
    # audio asked for but gone: named
    bad = subprocess.run(
        [*cmd[:6], "--modalities", "image,audio", "--out", str(tmp_path / "x.csv"), "--address", address],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: {data / 'audio' / 'test_data.npy'}: file not found (expected audio/test_data.npy, "
        "(N, 112, 112) spectrograms)"
    )
    # GPU actors asked of a cluster without a GPU: refused at once, not a wait for one
    gpu = subprocess.run([*cmd, "--use-gpu"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert gpu.returncode == 2, gpu.stdout[-2000:] + gpu.stderr[-2000:]
    assert gpu.stderr.strip().splitlines()[-1] == (
        "error: --use-gpu: the Ray cluster has no GPU (nor can its autoscaler add one); drop --use-gpu"
    )


def untrained(experiment: str, work: Path) -> tuple[Path, Any]:
    """An I2M2 checkpoint (untrained weights) with the prediction state the pipeline writes,
    from the dataset's real loader on its smoke sample."""
    from i2m2_ray.config import load_config
    from i2m2_ray.data import get_dataset
    from i2m2_ray.models.build import build_model
    from i2m2_ray.models.registry import encoder_factory

    cfg = load_config(CONFIG_DIR / f"{experiment}_demo.yaml", smoke_overrides(experiment))
    prepared = get_dataset(experiment).load(cfg, work)
    stats = training_input_stats(prepared, 64, 32)
    torch.manual_seed(0)
    model = build_model("i2m2", prepared.spec, cfg.model, encoder_factory(prepared.info))
    extra = {PREDICT_KEY: prediction_state(experiment, prepared, stats)}
    path = save_checkpoint(work / "i2m2.pt", model.state_dict(), "i2m2", cfg.to_dict(), prepared.spec, extra)
    return path, prepared


def test_mimic_predicts_on_an_npz_and_without_the_static_features(ray_local: None, tmp_path: Path) -> None:
    path, prepared = untrained("mimic", tmp_path)
    head = next(iter(prepared.spec.heads))
    source = tmp_path / "sample_data" / "im.npz"
    result = predict_files(path, source, tmp_path / "all.csv", score=True)
    assert result.rows == 300 and f"accuracy_{head}" in result.metrics
    columns, rows = read_csv(tmp_path / "all.csv")
    prob_cols = [c for c in columns if c.startswith("prob_")]
    assert len(prob_cols) == prepared.spec.heads[head]
    np.testing.assert_allclose(probs_of(rows, prob_cols).sum(axis=1), 1.0, atol=1e-6)

    # a file with the series only (no adm_features_all, no labels): the series expert alone,
    # on the series cleaned and z-scored with the training statistics in the checkpoint
    with np.load(source) as npz:
        series = npz["ep_tdata"]
    np.savez(tmp_path / "series.npz", ep_tdata=series)
    with pytest.raises(PredictError, match=r"--score: .*series.npz holds no labels \(label files or keys needed\)"):
        predict_files(path, tmp_path / "series.npz", tmp_path / "x.csv", modalities="timeseries", score=True)
    alone = predict_files(path, tmp_path / "series.npz", tmp_path / "series.csv", modalities="timeseries")
    assert alone.rows == 300 and "label_" not in ",".join(alone.columns)
    _, rows = read_csv(tmp_path / "series.csv")
    zs = load_checkpoint(path)[PREDICT_KEY]["data"]["zscore"]
    clean = np.where(np.isfinite(series), series, 0).astype(np.float32)
    x = ((clean - np.asarray(zs["series_mean"], np.float32)) / np.asarray(zs["series_std"], np.float32))
    runner = ModelRunner(load_checkpoint(path), ["timeseries"], device="cpu")
    want = runner.probabilities({"timeseries": x.astype(np.float32)})[head]
    np.testing.assert_allclose(probs_of(rows, prob_cols), want, atol=1e-5)


def test_fastmri_predicts_every_slice_of_a_folder_of_volumes(ray_local: None, tmp_path: Path) -> None:
    path, prepared = untrained("fastmri", tmp_path)
    knee, annotations = tmp_path / "sample_data" / "knee", tmp_path / "sample_data" / "Annotations"
    result = predict_files(path, knee, tmp_path / "p.csv", annotations=annotations, score=True)
    columns, rows = read_csv(tmp_path / "p.csv")
    assert columns[:2] == ["volume", "slice"]
    assert result.rows == len(rows) == sum(prepared.sizes.values())  # every slice of every volume
    assert len({r["volume"] for r in rows}) == prepared.info["volumes"]
    for head in ("abnormal", "acl", "cartilage", "mtear"):
        p = probs_of(rows, [f"prob_{head}_absent", f"prob_{head}_present"])
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert f"auroc_{head}" in result.metrics
    assert any("not listed in knee_file_list.csv" in n for n in result.notes)  # the sample's unreviewed one
    assert any("wider than the pad width 40" in n for n in result.notes)  # and its too wide one
    # magnitude only, no labels: every volume that fits the pad width, reviewed or not
    from i2m2_ray.data.fastmri import inspect_volume

    shapes = [inspect_volume(p) for p in knee.glob("*.h5")]
    only = predict_files(path, knee, tmp_path / "m.csv", modalities="magnitude")
    assert only.rows == sum(n for n, _, w in shapes if w <= 40) > result.rows
    assert only.columns[-1] == "pred_mtear"


def test_nlvr2_predicts_from_the_sentences_alone_of_a_file_without_images(ray_local: None, tmp_path: Path) -> None:
    import pyarrow as pa

    from i2m2_ray.data.arrow_vl import write_arrow

    path, _ = untrained("nlvr2", tmp_path)
    source = tmp_path / "sample_data" / "nlvr2_test1.arrow"
    both = predict_files(path, tmp_path / "sample_data", tmp_path / "both.csv", score=True)
    columns, rows = read_csv(tmp_path / "both.csv")
    assert columns == ["identifier", "prob_label_False", "prob_label_True", "pred_label", "label_label"]
    assert both.rows == len(rows) > 0 and "accuracy" in both.metrics
    np.testing.assert_allclose(probs_of(rows, columns[1:3]).sum(axis=1), 1.0, atol=1e-6)
    table = pa.ipc.open_file(pa.memory_map(str(source), "r")).read_all()
    write_arrow(tmp_path / "text.arrow", table.select(["questions", "identifier"]))  # no images, no answers
    text = predict_files(path, tmp_path / "text.arrow", tmp_path / "text.csv", modalities="text")
    _, text_rows = read_csv(tmp_path / "text.csv")
    assert text.rows == both.rows and [r["identifier"] for r in text_rows] == [r["identifier"] for r in rows]
    np.testing.assert_allclose(probs_of(text_rows, columns[1:3]).sum(axis=1), 1.0, atol=1e-6)


def test_vqa_predicts_a_score_for_every_answer(ray_local: None, tmp_path: Path) -> None:
    path, prepared = untrained("vqa", tmp_path)
    result = predict_files(path, tmp_path / "sample_data", tmp_path / "p.csv", modalities="text", score=True)
    columns, rows = read_csv(tmp_path / "p.csv")
    assert 0.0 <= result.metrics["vqa_score"] <= 1.0  # the soft answer scores, scored (not in the CSV)
    assert not any(c.startswith("label_") for c in columns)
    answers = load_checkpoint(path)[PREDICT_KEY]["data"]["answers"]
    prob_cols = [c for c in columns if c.startswith("prob_answer_")]
    assert columns[0] == "question_id" and len(prob_cols) == len(answers) == prepared.spec.heads["answer"]
    assert result.rows == len(rows) > 0
    p = probs_of(rows, prob_cols)  # a sigmoid per answer (soft-score head)
    assert ((p > 0) & (p < 1)).all()
    assert {r["pred_answer"] for r in rows} <= set(answers)
