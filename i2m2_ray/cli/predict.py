"""``experiments/predict.py``: predict with a trained model on new files in the dataset's real
format and write one CSV row per sample (its ids, every class's probability per head, the
predicted class), by Ray Data batch inference over a pool of model actors.

The model comes from a pipeline's output folder (``checkpoints/<model>.pt``), a checkpoint
file, or MLflow (``runs:/<run_id>``: a pipeline's parent run, whose child for ``--model`` is
taken, or a model's own run); everything else it needs travels in the checkpoint
(:mod:`i2m2_ray.predict`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.config import ConfigError
from i2m2_ray.data.base import DataError, PredictSource, data_error_from
from i2m2_ray.tracking import TRACKING_ENV
from i2m2_ray.training.checkpoint import CheckpointError

RUNS_PREFIX = "runs:/"
DEFAULT_MODEL = "i2m2"
DATA_WAIT_S = 600.0  # the longest the batch inference may go without progress


class PredictError(ValueError):
    """The command cannot predict as asked; the message says what to give instead."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="experiments/predict.py", description="predict with a trained I2M2 model on new files"
    )
    p.add_argument(
        "--run",
        required=True,
        help="a pipeline's output folder, a checkpoint file (.pt), or runs:/<run_id> (with --tracking-uri)",
    )
    p.add_argument("--data-dir", required=True, help="the new files, in the dataset's real format")
    p.add_argument("--annotations", help="labels kept apart (fastMRI+: the Annotations folder); optional")
    p.add_argument("--model", default=DEFAULT_MODEL, help="which model: i2m2 (default), intra, inter, unimodal_<m>")
    p.add_argument(
        "--modalities",
        help="comma-separated modalities to predict from (default: all); the others' files need not exist",
    )
    p.add_argument("--split", default="test", help="where files come per split (AV-MNIST): which (default: test)")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--score", action="store_true", help="score the predictions against the labels in the files")
    p.add_argument("--tracking-uri", help=f"MLflow store runs:/ is read from (default: ${TRACKING_ENV})")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--actors", type=int, default=1, help="model actors in the pool (default 1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per model actor")
    p.add_argument("--batch-size", type=int, default=64, help="samples per inference batch (default 64)")
    return p


def parse_modalities(text: str | None, known: Sequence[str]) -> list[str]:
    """The ``--modalities`` list, in the model's order (None: all)."""
    if text is None:
        return list(known)
    asked = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in asked if m not in known]
    if unknown or not asked:
        raise PredictError(f"--modalities {text!r}: the model reads {', '.join(known)}")
    return [m for m in known if m in asked]


def checkpoint_from_run(run: str, model: str, tracking_uri: str | None, download_to: Path) -> Path:
    """The checkpoint of ``--run runs:/<run_id>``: the run's own (a model's run) or that of its
    child for ``model`` (a pipeline's run), downloaded to ``download_to``."""
    from mlflow.tracking import MlflowClient

    run_id = run[len(RUNS_PREFIX) :].strip("/").split("/")[0]
    uri = tracking_uri or os.environ.get(TRACKING_ENV)
    if not uri:
        raise PredictError(f"--run {run}: give --tracking-uri (or set ${TRACKING_ENV}), the store holding the run")
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_run(run_id)
    except Exception as exc:
        raise PredictError(f"--run {run}: no such run in {uri} ({type(exc).__name__})") from None
    if found.data.tags.get("stage") == "pipeline":
        children = client.search_runs([found.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
        named = [c for c in children if c.data.tags.get("paradigm") == model]
        if not named:
            have = sorted(c.data.tags.get("paradigm", "?") for c in children)
            raise PredictError(f"--run {run}: the pipeline has no '{model}' model (it has {have}); see --model")
        found = named[0]
    name = found.data.tags.get("paradigm", model)
    files = [a.path for a in client.list_artifacts(found.info.run_id, "checkpoint")]
    wanted = f"checkpoint/{name}.pt"
    if wanted not in files:
        raise PredictError(f"--run {run}: run {found.info.run_id} has no artifact {wanted} (it has {files})")
    local = client.download_artifacts(found.info.run_id, wanted, str(download_to))
    return Path(local)


def checkpoint_path(run: str, model: str, tracking_uri: str | None, download_to: Path) -> Path:
    """Where ``--run`` points: a checkpoint file, ``<folder>/checkpoints/<model>.pt``, or MLflow."""
    if run.startswith(RUNS_PREFIX):
        return checkpoint_from_run(run, model, tracking_uri, download_to)
    p = Path(run)
    if p.is_file():
        return p
    if p.is_dir():
        ckpt = p / "checkpoints" / f"{model}.pt"
        if not ckpt.is_file():
            have = sorted(q.stem for q in (p / "checkpoints").glob("*.pt"))
            raise PredictError(f"{ckpt}: checkpoint not found (the folder has {have or 'none'}); see --model")
        return ckpt
    raise PredictError(f"--run {run}: not a folder, a checkpoint file or runs:/<run_id>")


def check_request(checkpoint: str | Path, modalities: str | None) -> None:
    """The checkpoint is readable, carries the prediction state, and ``--modalities`` fits it."""
    from i2m2_ray.predict import prediction_state_of
    from i2m2_ray.training.checkpoint import load_checkpoint, spec_of

    ckpt = load_checkpoint(checkpoint)
    prediction_state_of(ckpt, checkpoint)
    parse_modalities(modalities, spec_of(ckpt).modalities)


@dataclass
class Prediction:
    """What a prediction run did: the CSV, its rows and columns, and the scores (``--score``)."""

    out: Path
    rows: int
    columns: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def predict_files(
    checkpoint: str | Path,
    data_dir: str | Path,
    out: str | Path,
    *,
    annotations: str | Path | None = None,
    modalities: str | None = None,
    split: str = "test",
    score: bool = False,
    actors: int = 1,
    use_gpu: bool = False,
    batch_size: int = 64,
) -> Prediction:
    """Predict with the checkpoint on the files (Ray must be running) and write the CSV.

    Raises:
        CheckpointError: the checkpoint is unreadable or lacks the prediction state.
        DataError: the files are not in the dataset's format (named).
        PredictError: the request does not fit the model or the files.
    """
    from i2m2_ray.config import config_from_dict
    from i2m2_ray.data import get_dataset
    from i2m2_ray.predict import ModelRunner, predict_dataset, prediction_state_of, write_predictions
    from i2m2_ray.training.checkpoint import load_checkpoint, spec_of
    from i2m2_ray.training.metrics import compute_metrics

    ckpt = load_checkpoint(checkpoint)
    state = prediction_state_of(ckpt, checkpoint)
    spec = spec_of(ckpt)
    available = parse_modalities(modalities, spec.modalities)
    dataset = get_dataset(str(state["dataset"]))
    if not hasattr(dataset, "predict_data"):
        raise PredictError(f"dataset '{state['dataset']}' does not read new files for prediction (no predict_data)")
    try:
        ModelRunner(ckpt, available, device="cpu", where=str(checkpoint))  # fails here, not in an actor
    except ValueError as exc:
        raise PredictError(f"--modalities {','.join(available)}: {exc}") from None
    if use_gpu:  # Ray Data would wait for a GPU actor that no node can hold
        from i2m2_ray.cli.session import planning_cluster

        gpus = planning_cluster().gpus
        if gpus < 1:
            raise PredictError("--use-gpu: the Ray cluster has no GPU (nor can its autoscaler add one); drop --use-gpu")
    cfg = config_from_dict(ckpt["config"])
    with tempfile.TemporaryDirectory(prefix="i2m2_predict_") as work:
        source = PredictSource(
            data_dir=Path(data_dir),
            annotations=Path(annotations) if annotations else None,
            modalities=tuple(available),
            split=split,
            work_dir=Path(work),
        )
        found = dataset.predict_data(cfg, source, state["data"])
        if score and not found.labelled:
            what = "--annotations" if state["dataset"] == "fastmri" else "label files or keys"
            raise PredictError(f"--score: {data_dir} holds no labels ({what} needed)")
        rows = predict_dataset(
            found.dataset, ckpt, available, found.ids, actors=actors, use_gpu=use_gpu, batch_size=batch_size
        )
        rows.context.execution_no_progress_timeout_s = DATA_WAIT_S
        heads = [h for h in spec.heads if not spec.is_multilabel(h)]
        columns = [*found.ids, *ModelRunner.columns_of(state, spec)]
        if found.labelled:
            columns += [f"label_{h}" for h in heads]
        kept: list[dict[str, np.ndarray]] = []

        def batches() -> Any:
            for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
                if score:
                    kept.append(batch)
                yield batch

        n = write_predictions(batches(), out, columns)
    metrics: dict[str, float] = {}
    if score:  # every head, a soft-score one (VQA-VS's answers) too: its labels stay out of the CSV
        labels = {h: np.concatenate([b[f"label_{h}"] for b in kept]) for h in spec.heads}
        probs = {}
        for h in spec.heads:
            names = state["classes"][h]
            probs[h] = np.stack(
                [np.concatenate([b[c] for b in kept]) for c in ModelRunner.prob_columns(h, names)], axis=1
            )
        metrics = compute_metrics(labels, probs)
    return Prediction(Path(out), n, columns, metrics, list(found.notes))


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done; 2 a bad request, checkpoint or file (one line naming it)."""
    args = build_parser().parse_args(argv)
    import ray

    started = False
    try:
        with tempfile.TemporaryDirectory(prefix="i2m2_ckpt_") as downloads:
            ckpt = checkpoint_path(args.run, args.model, args.tracking_uri, Path(downloads))
            check_request(ckpt, args.modalities)  # before Ray starts: a bad request costs nothing
            if not ray.is_initialized():
                address = args.address or os.environ.get("RAY_ADDRESS")
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    from i2m2_ray.cli.session import start_local_ray

                    start_local_ray(max(2, args.actors + 1))
                started = True
            try:
                result = predict_files(
                    ckpt,
                    args.data_dir,
                    args.out,
                    annotations=args.annotations,
                    modalities=args.modalities,
                    split=args.split,
                    score=args.score,
                    actors=args.actors,
                    use_gpu=args.use_gpu,
                    batch_size=args.batch_size,
                )
            except Exception as exc:
                found = exc if isinstance(exc, DataError | PredictError | CheckpointError) else data_error_from(exc)
                if found is None:
                    raise
                raise found from None
    except (PredictError, CheckpointError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    for note in result.notes:
        print(f"note: {note}")
    print(f"predictions: {result.rows} rows, {len(result.columns)} columns -> {result.out}")
    if result.metrics:
        scores = result.out.with_suffix(".metrics.json")
        scores.write_text(json.dumps(result.metrics, indent=1, sort_keys=True))
        shown = {k: round(v, 4) for k, v in result.metrics.items() if "_" not in k or k.endswith("_mean")}
        print(f"scores: {shown} (all: {scores})")
    return 0
