"""Predicting with a trained model on new files: what a checkpoint must carry, a model
runner that honours missing modalities, and Ray Data batch inference over a pool of model
actors.

A checkpoint made by the pipeline holds, besides the weights and the config, the
prediction state under :data:`PREDICT_KEY` (:func:`prediction_state`): the dataset's name,
its preprocessing state (``PreparedData.state``), the input facts the encoders are built
from (:data:`~i2m2_ray.data.base.FACTS`), the class names of every head and the
training-split mean of every continuous modality. Only tensors, lists, dicts, strings and
numbers: it still loads with ``weights_only=True``.

Missing modalities follow :mod:`i2m2_ray.training.robustness`: a product of experts drops
the experts that read a missing modality (:class:`~i2m2_ray.training.robustness.Available`);
a single expert gets the modality filled with its training mean (token ids: padding).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from i2m2_ray.data.base import FACTS
from i2m2_ray.spec import TaskSpec, label_column
from i2m2_ray.training.checkpoint import CheckpointError

if TYPE_CHECKING:
    import pandas as pd
    import ray.data

    from i2m2_ray.data.base import PreparedData
    from i2m2_ray.training.robustness import InputStats

PREDICT_KEY = "predict"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
# what the prediction state holds (a checkpoint without one of these cannot predict)
STATE_KEYS = {
    "dataset": "the experiment whose reader reads new files",
    "data": "the dataset's preprocessing state (z-score statistics, answer vocabulary, tokeniser, ...)",
    "facts": "the input facts the encoders are built from (inputs, vocab_size, pad_token_id, ...)",
    "classes": "every head's class names",
    "input_means": "the training-split mean of every continuous modality (to fill a missing one)",
}


# ---- the state a checkpoint carries ---------------------------------------------------


def training_input_stats(prepared: PreparedData, max_samples: int, batch_size: int) -> InputStats:
    """Mean (and standard deviation) per element of every continuous modality over the first
    ``max_samples`` samples of the training split (read through Ray Data, on the driver)."""
    from i2m2_ray.training.robustness import input_stats

    train = prepared.datasets["train"].limit(max_samples)
    batches = train.iter_torch_batches(batch_size=batch_size, drop_last=False)
    return input_stats(batches, prepared.spec.modalities, max_samples)


def prediction_state(experiment: str, prepared: PreparedData, stats: InputStats) -> dict[str, Any]:
    """What a checkpoint needs besides weights and config to predict on new files."""
    return {
        "dataset": experiment,
        "data": dict(prepared.state),
        "facts": {k: prepared.info[k] for k in FACTS if k in prepared.info},
        "classes": prepared.class_names(),
        "input_means": {m: v.detach().cpu().float().contiguous() for m, v in stats.mean.items()},
        "stats_samples": int(stats.samples),
    }


def add_prediction_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` into the checkpoint at ``path`` (atomically, weights unchanged)."""
    from i2m2_ray.training.checkpoint import load_checkpoint, save_checkpoint, spec_of

    ckpt = load_checkpoint(path)
    extra = {k: v for k, v in ckpt.items() if k not in ("state_dict", "paradigm", "config", "spec")}
    extra[PREDICT_KEY] = dict(state)
    save_checkpoint(path, ckpt["state_dict"], ckpt["paradigm"], ckpt["config"], spec_of(ckpt), extra)


def prediction_state_of(ckpt: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
    """The checkpoint's prediction state, checked.

    Raises:
        CheckpointError: it has none, or lacks a part; the message names what is missing.
    """
    state = ckpt.get(PREDICT_KEY)
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{where}: no prediction state (key '{PREDICT_KEY}': {', '.join(STATE_KEYS)}); the checkpoint was "
            "written before models carried it (or is a sweep's best whose trial sampled data.* settings): train "
            "the model again with the pipeline"
        )
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        wanted = "; ".join(f"'{k}' ({STATE_KEYS[k]})" for k in missing)
        raise CheckpointError(f"{where}: the prediction state ('{PREDICT_KEY}') lacks {wanted}")
    if "inputs" not in state["facts"]:
        raise CheckpointError(f"{where}: the prediction state's 'facts' lack 'inputs' (each modality's shape)")
    return dict(state)


# ---- running a model ---------------------------------------------------------------------


def column_name(text: str) -> str:
    """A class name as part of a column name: runs of other characters than letters,
    digits and ``_`` become one ``_``."""
    return re.sub(r"\W+", "_", str(text)).strip("_") or "_"


class ModelRunner:
    """A trained model from a checkpoint, asked over the available modalities only.

    Args:
        ckpt: a checkpoint dict (:func:`~i2m2_ray.training.checkpoint.load_checkpoint`)
            with a prediction state.
        available: the modalities given (None: all); a product drops the experts of the
            others, a single expert gets them filled with their training mean.
        device: where the model runs (None: a GPU when there is one).
    """

    def __init__(
        self,
        ckpt: Mapping[str, Any],
        available: Sequence[str] | None = None,
        device: str | None = None,
        where: str = "checkpoint",
    ) -> None:
        from i2m2_ray.assess import model_from_checkpoint
        from i2m2_ray.models.experts import ProductOfExperts
        from i2m2_ray.training.robustness import Available, InputStats

        self.state = prediction_state_of(ckpt, where)
        model, spec = model_from_checkpoint(ckpt, self.state["facts"])
        self.spec: TaskSpec = spec
        self.paradigm = str(ckpt["paradigm"])
        given = list(spec.modalities) if available is None else [m for m in spec.modalities if m in set(available)]
        unknown = sorted(set(available or ()) - set(spec.modalities))
        if unknown or not given:
            raise ValueError(f"modalities {sorted(available or ())}: the model reads {list(spec.modalities)}")
        self.available = given
        self.missing = [m for m in spec.modalities if m not in set(given)]
        self.product = isinstance(model, ProductOfExperts)
        self.stats = InputStats(mean=dict(self.state["input_means"]), std={}, samples=0)
        self.pad_id = int(self.state["facts"].get("pad_token_id", 0))
        self.shapes = {m: tuple(int(s) for s in self.state["facts"]["inputs"][m]) for m in spec.modalities}
        runner: nn.Module = model
        if self.product and self.missing:
            runner = Available(model, given)  # type: ignore[arg-type]
            with torch.no_grad():
                runner(self._dummy(1))  # an error now, not per batch, when no expert is left
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = runner.to(self.device).eval()
        self.classes: dict[str, list[str]] = {h: list(self.state["classes"][h]) for h in spec.heads}

    def is_tokens(self, modality: str) -> bool:
        """Token ids (no training mean) rather than continuous values."""
        return modality not in self.stats.mean

    def _dummy(self, n: int) -> dict[str, Tensor]:
        return {m: self._blank(m, n) for m in self.available}

    def stand_in(self, modality: str, n: int) -> Tensor:
        """``n`` samples standing in for a missing modality: its training mean (token ids:
        padding), as :func:`~i2m2_ray.training.robustness.fill_like` fills them."""
        from i2m2_ray.training.robustness import fill_like

        return fill_like(self._blank(modality, n), modality, self.stats, "mean", self.pad_id)

    def _blank(self, modality: str, n: int) -> Tensor:
        shape = (n, *self.shapes[modality])
        return torch.zeros(shape, dtype=torch.long if self.is_tokens(modality) else torch.float32)

    @torch.no_grad()
    def probabilities(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Head -> ``(B, classes)`` probabilities (softmax; per class sigmoid for a
        multi-label head) from ``inputs``: modality -> ``(B, *shape)`` arrays."""
        x: dict[str, Tensor] = {}
        for m in self.available:
            dtype = torch.long if self.is_tokens(m) else torch.float32
            x[m] = torch.as_tensor(np.asarray(inputs[m])).to(self.device, dtype)
        n = len(next(iter(x.values())))
        if not self.product:
            for m in self.missing:
                x[m] = self.stand_in(m, n).to(self.device)
        out = self.model(x)
        probs = {}
        for h in self.spec.heads:
            z = out[h].float()
            p = torch.sigmoid(z) if self.spec.is_multilabel(h) else torch.softmax(z, dim=-1)
            probs[h] = p.cpu().numpy()
        return probs

    @staticmethod
    def prob_columns(head: str, names: Sequence[str]) -> list[str]:
        """``prob_<head>_<class>`` for every class of a head (``prob_<head>_<k>_<class>`` when
        two class names would give one column, e.g. VQA answers that differ in punctuation)."""
        cols = [column_name(name) for name in names]
        if len(set(cols)) < len(cols):
            cols = [f"{k}_{c}" for k, c in enumerate(cols)]
        return [f"prob_{head}_{c}" for c in cols]

    @staticmethod
    def columns_of(state: Mapping[str, Any], spec: TaskSpec) -> list[str]:
        """The prediction columns (:meth:`columns`) of a model with this state and spec."""
        out: list[str] = []
        for h in spec.heads:
            out += [*ModelRunner.prob_columns(h, state["classes"][h]), f"pred_{h}"]
        return out

    def columns(self, probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``prob_<head>_<class>`` for every class of every head and ``pred_<head>``, the
        predicted class's name."""
        out: dict[str, np.ndarray] = {}
        for h in self.spec.heads:
            names = self.classes[h]
            for k, col in enumerate(self.prob_columns(h, names)):
                out[col] = probs[h][:, k].astype(np.float64)
            out[f"pred_{h}"] = np.asarray([names[i] for i in probs[h].argmax(axis=1)], dtype=object)
        return out


class BatchPredictor:
    """Ray Data batch UDF run by a pool of actors: each builds the model once (on its GPU
    when it has one) and turns batches of ids, modality arrays and labels into the ids, the
    probability columns and the predicted classes (and ``label_<head>`` where labelled; a
    soft-score head's labels are a ``(B, classes)`` array)."""

    def __init__(self, ckpt: Mapping[str, Any], available: Sequence[str], ids: Sequence[str]) -> None:
        torch.set_num_threads(1)  # one actor per CPU: no oversubscription
        self.runner = ModelRunner(ckpt, available)
        self.ids = list(ids)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = self.runner.probabilities(batch)
        out = {k: batch[k] for k in self.ids}
        out.update(self.runner.columns(probs))
        for h in self.runner.spec.heads:
            col = label_column(h)
            if col in batch:  # a soft-score head's (B, classes) labels: scored, not written to the CSV
                out[f"label_{h}"] = batch[col]
        return out


def predict_dataset(
    ds: ray.data.Dataset,
    ckpt: Mapping[str, Any],
    available: Sequence[str],
    ids: Sequence[str],
    *,
    actors: int = 1,
    use_gpu: bool = False,
    batch_size: int = 64,
) -> ray.data.Dataset:
    """``ds`` (ids, modality arrays, labels) -> prediction rows, by ``actors`` model actors
    (one GPU or one CPU each)."""
    return ds.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={"ckpt": dict(ckpt), "available": list(available), "ids": list(ids)},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=max(1, actors),
        num_gpus=1 if use_gpu else 0,
        num_cpus=0 if use_gpu else 1,
    )


def write_predictions(rows: Iterator[dict[str, np.ndarray]], path: str | Path, columns: Sequence[str]) -> int:
    """Write prediction batches to a CSV (``columns`` in this order; probabilities with
    full precision); returns the number of rows."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    n = 0
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for batch in rows:
            values = [np.asarray(batch[c]).tolist() for c in columns]
            writer.writerows(zip(*values, strict=True))
            n += len(values[0]) if values else 0
    tmp.replace(p)
    return n


# ---- the MLflow model ---------------------------------------------------------------------


def frame_inputs(frame: pd.DataFrame, runner: ModelRunner) -> dict[str, np.ndarray]:
    """Modality arrays from a pandas frame whose columns are modalities and whose cells are
    one sample's array (any nesting, or flattened)."""
    out = {}
    for m in runner.available:
        if m not in frame.columns:
            raise ValueError(f"column '{m}' missing; the model reads {runner.available}")
        dtype = np.int64 if runner.is_tokens(m) else np.float32
        cells = [np.asarray(v, dtype=dtype).reshape(runner.shapes[m]) for v in frame[m]]
        out[m] = np.stack(cells) if cells else np.zeros((0, *runner.shapes[m]), dtype)
    return out


def _python_model_class() -> type:
    import mlflow.pyfunc
    import pandas as pd

    class I2M2Model(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
        """A trained model and its preprocessing state, as an MLflow pyfunc: ``predict`` takes
        a pandas frame with one column per modality (the missing ones are missing
        modalities) and returns the probability columns and the predicted classes."""

        def load_context(self, context: Any) -> None:
            from i2m2_ray.training.checkpoint import load_checkpoint

            self.ckpt = load_checkpoint(context.artifacts["checkpoint"])
            self.runners: dict[tuple[str, ...], ModelRunner] = {}

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            modalities = tuple(m for m in self.ckpt["spec"]["modalities"] if m in model_input.columns)
            if modalities not in self.runners:
                self.runners[modalities] = ModelRunner(self.ckpt, modalities, device="cpu")
            runner = self.runners[modalities]
            return pd.DataFrame(runner.columns(runner.probabilities(frame_inputs(model_input, runner))))

        # a pandas frame in: MLflow infers no schema from this hint (the logged signature says
        # the columns) and stops asking for one
        predict.__annotations__["model_input"] = pd.DataFrame

    return I2M2Model


def example_frame(runner: ModelRunner, inputs: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """A pandas frame of modality arrays (each cell a flattened list), as the MLflow model reads."""
    import pandas as pd

    return pd.DataFrame({m: [np.asarray(v).reshape(-1).tolist() for v in inputs[m]] for m in runner.available})


def log_pyfunc_model(
    uri: str,
    run_id: str,
    checkpoint: str | Path,
    example: Mapping[str, np.ndarray] | None = None,
    register: str | None = None,
) -> str:
    """Log the checkpoint at ``checkpoint`` as the MLflow model ``model`` of run ``run_id``
    (pyfunc flavour, with a signature and ``example`` -- modality -> a few samples; None: two
    samples of the training means -- as its input example); ``register``: also register it
    under that name. Returns the model URI."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from i2m2_ray.training.checkpoint import load_checkpoint

    runner = ModelRunner(load_checkpoint(checkpoint), device="cpu", where=str(checkpoint))
    if example is None:
        example = {m: runner.stand_in(m, 2).numpy() for m in runner.available}
    frame = example_frame(runner, example)
    output = pd.DataFrame(runner.columns(runner.probabilities(frame_inputs(frame, runner))))
    inferred = infer_signature(frame, output)
    # every modality column optional: a frame without one predicts without that modality
    columns: list[ColSpec | TensorSpec] = [ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]
    signature = ModelSignature(inputs=Schema(columns), outputs=inferred.outputs)
    before = mlflow.get_tracking_uri() if os.environ.get(TRACKING_ENV) else None
    mlflow.set_tracking_uri(uri)  # (sets $MLFLOW_TRACKING_URI too: put back below)
    # given, not inferred: inferring loads the model in a subprocess (seconds per model)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    requirements.append(f"mlflow=={mlflow.__version__}")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_python_model_class()(),
            artifacts={"checkpoint": str(checkpoint)},
            signature=signature,
            input_example=frame,
            pip_requirements=requirements,
            registered_model_name=register,
        )
    mlflow.set_tracking_uri(before) if before else os.environ.pop(TRACKING_ENV, None)
    return str(info.model_uri)
