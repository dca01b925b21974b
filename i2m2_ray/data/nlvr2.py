"""NLVR2 in the ViLT/METER Arrow layout: is a sentence true of a pair of images?

Real layout (../shared/reference/method.md): ``nlvr2_{split}.arrow`` Arrow IPC files, one
row per image pair, columns ``image_0``, ``image_1`` (encoded image bytes), ``questions``
(the sentences about the pair: a list, or one string), ``answers`` (one label per sentence:
``"True"``/``"False"``, any case, or booleans) and ``identifier``. One sample per sentence.

Files (``data.options.files``): train ``nlvr2_train``, validation ``nlvr2_dev``, test
``nlvr2_test1``.

Target: one 2-way head ``label`` (0 = false, 1 = true); metric: accuracy. Modalities:
``image`` ``(2, 3, S, S)`` float32 in [-1, 1] (the pair, left then right) and ``text``
``(L,)`` int64 token ids, decoded and tokenised in ``map_batches``. The image expert reads
both images with one ViT; the inter expert runs ViLT on the sentence with each image (token
types 1 and 2) and classifies the two pooled outputs together (the facts in ``info``:
``inputs``, the tokeniser's ``vocab_size`` and ``pad_token_id``, ``encoders``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from i2m2_ray.config import ExperimentConfig
from i2m2_ray.data.arrow_vl import (
    ArrowRows,
    TextTokenizer,
    arrow_file,
    as_list,
    check_binary_columns,
    check_options,
    check_state,
    decode_cell,
    make_tokenizer,
    open_table,
)
from i2m2_ray.data.base import (
    DataError,
    Dataset,
    PredictInput,
    PredictSource,
    PreparedData,
    capped,
    index_dataset,
    label_column,
    quiet_data_context,
    sample_settings,
    shuffle_seed,
)
from i2m2_ray.data.registry import register_dataset
from i2m2_ray.spec import TaskSpec

log = logging.getLogger(__name__)

MODALITIES = ("image", "text")
HEAD = "label"
COLUMNS = {
    "image_0": "encoded bytes of the left image",
    "image_1": "encoded bytes of the right image",
    "questions": "the sentences about the pair",
    "answers": "one True/False label per sentence",
    "identifier": "pair identifier",
}
OPTIONS: dict[str, Any] = {
    "files": {},  # split -> file stem (defaults: DEFAULT_FILES)
    "image_size": 384,
    "max_text_length": 40,
    "tokenizer": None,  # pretrained name / path; None: a word-level tokeniser from the training text
    "max_sentences": None,  # per split, for quick runs
    # keep the preprocessed splits in Ray's object store after one pass (small data: the
    # demo), instead of decoding and tokenising again every epoch
    "cache": False,
}
DEFAULT_FILES = {"train": "nlvr2_train", "val": "nlvr2_dev", "test": "nlvr2_test1"}


# data.sample: nlvr2_sample.write_sample's settings
SAMPLE: dict[str, Any] = {"train": 1500, "val": 250, "test": 300, "per_pair": 2, "size": 48, "seed": 0, "files": None}


def options(cfg: ExperimentConfig) -> dict[str, Any]:
    unknown = sorted(set(cfg.data.options) - set(OPTIONS))
    if unknown:
        raise DataError(f"unknown data.options {unknown} for NLVR2; known: {sorted(OPTIONS)}")
    return check_options({**OPTIONS, **cfg.data.options}, limit="max_sentences")


def parse_label(value: Any, path: Path, row: int) -> int:
    """``"True"``/``"False"`` (any case) or a boolean -> 1 / 0."""
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return int(text == "true")
    raise DataError(f"{path}, row {row}: 'answers' holds {value!r}; expected 'True' or 'False'")


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """One entry per sentence: row, sentence, label (0/1), identifier."""
    table = open_table(path, COLUMNS)
    check_binary_columns(table, path, ("image_0", "image_1"))
    questions = table.column("questions").to_pylist()
    answers = table.column("answers").to_pylist()
    idents = table.column("identifier").to_pylist()
    out: list[dict[str, Any]] = []
    for row in range(table.num_rows):
        qs = as_list(questions[row], path, "questions", row)
        ans = as_list(answers[row], path, "answers", row)
        if len(qs) != len(ans):
            raise DataError(f"{path}, row {row}: {len(qs)} sentences but {len(ans)} answers")
        for j, (q, a) in enumerate(zip(qs, ans, strict=True)):
            out.append(
                {"row": row, "sentence": str(q), "label": parse_label(a, path, row), "identifier": f"{idents[row]}-{j}"}
            )
    return out


class NLVR2Preprocessor:
    """Ray Data batch UDF: index rows (path, row, sentence, label) -> ``image``
    ``(B, 2, 3, S, S)``, ``text`` ``(B, L)`` token ids and ``y_label`` ``(B,)`` (when the
    index has labels), of the ``modalities`` asked for, and the index columns in ``keep``."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        image_size: int,
        modalities: tuple[str, ...] = MODALITIES,
        keep: tuple[str, ...] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.modalities = modalities
        self.keep = keep
        self.rows = ArrowRows()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths, rows = batch["path"], batch["row"].astype(np.int64)
        out = {k: batch[k] for k in self.keep}
        if "image" in self.modalities:
            s = self.image_size
            images = np.zeros((len(paths), 2, 3, s, s), dtype=np.float32)
            for path in dict.fromkeys(paths.tolist()):
                idx = np.flatnonzero(paths == path)
                for k, column in enumerate(("image_0", "image_1")):
                    for i, data in zip(idx, self.rows.take(path, column, rows[idx]), strict=True):
                        images[i, k] = decode_cell(data, s, path, int(rows[i]), column)
            out["image"] = images
        if "text" in self.modalities:
            out["text"] = self.tokenizer([str(t) for t in batch["sentence"]])
        if "label" in batch:
            out[label_column(HEAD)] = batch["label"].astype(np.int64)
        return out


def prepare(cfg: ExperimentConfig, data_dir: str | Path, work_dir: Path) -> PreparedData:
    import ray.data

    opts = options(cfg)
    stems: Mapping[str, str] = {**DEFAULT_FILES, **dict(opts["files"] or {})}
    unknown = sorted(set(stems) - set(DEFAULT_FILES))
    if unknown:
        raise DataError(f"data.options.files: unknown key(s) {unknown}; known: {sorted(DEFAULT_FILES)}")
    paths = {n: Path(data_dir) / f"{stems[n]}.arrow" for n in DEFAULT_FILES}
    pairs = {n: read_pairs(p) for n, p in paths.items()}
    if opts["max_sentences"] is not None:
        pairs = {n: v[: int(opts["max_sentences"])] for n, v in pairs.items()}
    pairs = {n: capped(v, cfg.data.max_samples) for n, v in pairs.items()}
    for n, v in pairs.items():
        if not v:
            raise DataError(f"{paths[n]}: no sentences")
    work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(
        opts["tokenizer"], (p["sentence"] for p in pairs["train"]), work_dir, int(opts["max_text_length"])
    )
    quiet_data_context(cfg.run.deterministic)
    prep = NLVR2Preprocessor(tokenizer, int(opts["image_size"]))
    datasets: dict[str, ray.data.Dataset] = {}
    sizes: dict[str, int] = {}
    for name, v in pairs.items():
        items = [{"path": str(paths[name]), "row": p["row"], "sentence": p["sentence"], "label": p["label"]} for p in v]
        sizes[name] = len(items)
        datasets[name] = index_dataset(
            items,
            prep,
            batch_size=64,
            blocks=min(len(items) // 64, 64),
            shuffle_seed=shuffle_seed(cfg) if name == "train" else None,
            cache=bool(opts["cache"]),
        )
    train_labels = [p["label"] for p in pairs["train"]]
    counts = {HEAD: [train_labels.count(0), train_labels.count(1)]}
    size = int(opts["image_size"])
    info = {
        "vocab_size": tokenizer.vocab_size,
        "train_true": counts[HEAD][1],
        "pad_token_id": tokenizer.pad_token_id,
        "inputs": {"image": [2, 3, size, size], "text": [int(opts["max_text_length"])]},
        "encoders": ["transformers"],
    }
    log.info("NLVR2: %s", info)
    return PreparedData(
        spec=TaskSpec(MODALITIES, {HEAD: 2}),
        datasets=datasets,
        class_counts=counts,
        sizes=sizes,
        info=info,
        state={"tokenizer": tokenizer.state(), "image_size": size},
        classes={HEAD: ["False", "True"]},
    )


def predict_data(source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
    """Every sentence of an NLVR2 Arrow file (``source.data_dir``: the file, or the folder
    holding ``nlvr2_<split>``'s file), decoded and tokenised as in training (the tokeniser
    and image size from ``state``). Image columns are read only for ``image``; ``answers``
    only when the file has it."""
    check_state(state, ("tokenizer", "image_size"), "NLVR2")
    quiet_data_context(True)
    path = arrow_file(source.data_dir, DEFAULT_FILES, source.split)
    wanted = {k: COLUMNS[k] for k in ("questions", "identifier")}
    if "image" in source.modalities:
        wanted.update({k: COLUMNS[k] for k in ("image_0", "image_1")})
    table = open_table(path, wanted)
    if "image" in source.modalities:
        check_binary_columns(table, path, ("image_0", "image_1"))
    labelled = "answers" in table.column_names
    questions = table.column("questions").to_pylist()
    answers = table.column("answers").to_pylist() if labelled else [None] * table.num_rows
    idents = table.column("identifier").to_pylist()
    items: list[dict[str, Any]] = []
    for row in range(table.num_rows):
        qs = as_list(questions[row], path, "questions", row)
        ans = as_list(answers[row], path, "answers", row) if labelled else [None] * len(qs)
        if len(qs) != len(ans):
            raise DataError(f"{path}, row {row}: {len(qs)} sentences but {len(ans)} answers")
        for j, (q, a) in enumerate(zip(qs, ans, strict=True)):
            item = {"path": str(path), "row": row, "sentence": str(q), "identifier": f"{idents[row]}-{j}"}
            if labelled:
                item["label"] = parse_label(a, path, row)
            items.append(item)
    if not items:
        raise DataError(f"{path}: no sentences")
    prep = NLVR2Preprocessor(
        TextTokenizer.from_state(state["tokenizer"]), int(state["image_size"]), source.modalities, keep=("identifier",)
    )
    ds = index_dataset(items, prep, batch_size=64, blocks=min(len(items) // 64, 64))
    return PredictInput(dataset=ds, ids=("identifier",), labelled=labelled, rows=len(items))


SAMPLE_VERSION = 1


@register_dataset("nlvr2")
class NLVR2(Dataset):
    """NLVR2: Arrow files in ``data.data_dir``, or the generated sample."""

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData:
        """Prepare real Arrow files from ``data.data_dir``, or write (once) and prepare the
        generated sample. ``data.annotations`` is not used (the answers are in the Arrow files)."""
        from i2m2_ray.data.nlvr2_sample import write_sample

        s = self.check_config(cfg)
        data_dir = cfg.data.data_dir
        if data_dir is None:
            sample_dir = Path(work_dir) / "sample_data"
            marker = sample_dir / "sample.json"
            wanted = {**cfg.data.sample, "generator": SAMPLE_VERSION}
            if not marker.is_file() or json.loads(marker.read_text()) != wanted:
                write_sample(sample_dir, **s)
                marker.write_text(json.dumps(wanted))
            data_dir = str(sample_dir)
        return prepare(cfg, data_dir, Path(work_dir))

    def check_config(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Cheap checks of the ``data`` settings, before Ray starts: the options and the
        generated sample's settings (returned)."""
        options(cfg)
        return sample_settings(cfg, SAMPLE, "nlvr2")

    def predict_data(self, cfg: ExperimentConfig, source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
        """New files for a trained model (:func:`predict_data`)."""
        return predict_data(source, state)
