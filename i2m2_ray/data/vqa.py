"""VQA-VS in the ViLT/METER Arrow layout: IID and nine OOD test sets.

Real layout (../shared/reference/method.md): one Arrow IPC file per split, one row per
image, columns ``image`` (encoded JPEG bytes), ``questions`` (list of strings), ``answers``
(per question, the answer strings), ``answer_labels`` (per question, their ids in the
answer vocabulary), ``answer_scores`` (per question, their soft scores), ``image_id``,
``question_id`` (list), ``split``. One sample per question.

Files (``data.options.files``, split or OOD set -> file stem): ``vqavs_train``,
``vqavs_val``, ``vqavs_test_iid`` (the "test" split) and the nine OOD sets
``vqavs_test_<set>`` for ``qt kw kwp qt_kw`` (language shortcuts), ``ko kop`` (visual) and
``qt_ko kw_ko qt_kw_ko`` (multimodal). Each OOD set is its own Ray Dataset ``test_ood_<set>``;
its metrics come back as ``ood_<set>_<metric>`` (and ``ood_mean_<metric>`` over the nine).

Answer vocabulary: the (answer string, answer id) pairs of the train and val files, as
ViLT builds it; its size is the largest id + 1. An id seen for two strings (or a string
with two ids) is an error. Test answers whose id is outside the vocabulary are dropped
(counted in ``info``): no model can predict them, and they score 0.

Target: one multi-label head ``answer`` whose label is the ``(answers,)`` vector of soft
scores; loss: binary cross-entropy per answer; the product of experts is taken per answer
(:func:`i2m2_ray.models.experts.binary_product_of_experts`); metric: ``vqa_score``.

Modalities: ``image`` ``(3, S, S)`` float32 in [-1, 1] and ``text`` ``(L,)`` int64 token
ids, decoded and tokenised in ``map_batches``. The facts for the encoders: ``info["inputs"]``,
the tokeniser's ``vocab_size`` and ``pad_token_id``, and ``encoders`` = ``["transformers"]``.
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
    whole_number,
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
HEAD = "answer"
OOD_SETS = ("qt", "kw", "kwp", "qt_kw", "ko", "kop", "qt_ko", "kw_ko", "qt_kw_ko")
COLUMNS = {
    "image": "encoded image bytes",
    "questions": "list of question strings",
    "answers": "per question, a list of answer strings",
    "answer_labels": "per question, a list of answer ids",
    "answer_scores": "per question, a list of soft scores",
    "image_id": "image id",
    "question_id": "list of question ids",
    "split": "split name",
}
OPTIONS: dict[str, Any] = {  # data.options known to this dataset, with defaults
    "files": {},  # split / OOD set -> file stem (defaults: DEFAULT_FILES)
    "ood_sets": list(OOD_SETS),  # the OOD sets to evaluate ([] for none)
    "image_size": 384,
    "max_text_length": 40,
    "tokenizer": None,  # pretrained name / path; None: a word-level tokeniser from the training text
    "max_questions": None,  # per split, for quick runs
    # keep the preprocessed splits in Ray's object store after one pass (small data: the
    # demo), instead of decoding and tokenising again every epoch
    "cache": False,
}
DEFAULT_FILES = {"train": "vqavs_train", "val": "vqavs_val", "test": "vqavs_test_iid"}
DEFAULT_FILES.update({k: f"vqavs_test_{k}" for k in OOD_SETS})


# data.sample: vqa_sample.write_sample's settings
SAMPLE: dict[str, Any] = {
    "train": 1200, "val": 200, "test": 300, "ood": 100, "questions": 3, "size": 48, "lang": 0.7, "vis": 0.7,
    "seed": 0, "files": None,
}  # fmt: skip


def options(cfg: ExperimentConfig) -> dict[str, Any]:
    unknown = sorted(set(cfg.data.options) - set(OPTIONS))
    if unknown:
        raise DataError(f"unknown data.options {unknown} for VQA-VS; known: {sorted(OPTIONS)}")
    opts = check_options({**OPTIONS, **cfg.data.options}, limit="max_questions")
    if not isinstance(opts["ood_sets"], list):
        raise DataError(f"data.options.ood_sets must be a list of OOD set names, got {opts['ood_sets']!r}")
    bad = sorted(set(opts["ood_sets"]) - set(OOD_SETS))
    if bad:
        raise DataError(f"data.options.ood_sets: unknown set(s) {bad}; known: {list(OOD_SETS)}")
    return opts


def file_paths(data_dir: str | Path, opts: Mapping[str, Any]) -> dict[str, Path]:
    """split / OOD set -> Arrow file path (train, val, test, then the OOD sets asked for)."""
    stems = {**DEFAULT_FILES, **dict(opts.get("files") or {})}
    unknown = sorted(set(stems) - set(DEFAULT_FILES))
    if unknown:
        raise DataError(f"data.options.files: unknown key(s) {unknown}; known: {sorted(DEFAULT_FILES)}")
    names = ["train", "val", "test", *opts.get("ood_sets", OOD_SETS)]
    return {n: Path(data_dir) / f"{stems[n]}.arrow" for n in names}


def read_questions(path: Path) -> list[dict[str, Any]]:
    """One entry per question of an Arrow file: row, question, answers, ids, scores, ids.

    Raises:
        DataError: a missing column, or lists of different lengths in a row (named).
    """
    table = open_table(path, COLUMNS)
    check_binary_columns(table, path, ("image",))
    cols = {c: table.column(c).to_pylist() for c in ("questions", "answers", "answer_labels", "answer_scores")}
    qids = table.column("question_id").to_pylist()
    out: list[dict[str, Any]] = []
    for row in range(table.num_rows):
        qs = as_list(cols["questions"][row], path, "questions", row)
        per = {c: as_list(cols[c][row], path, c, row) for c in ("answers", "answer_labels", "answer_scores")}
        ids = as_list(qids[row], path, "question_id", row)
        for c, v in [*per.items(), ("question_id", ids)]:
            if len(v) != len(qs):
                raise DataError(f"{path}, row {row}: '{c}' has {len(v)} entries for {len(qs)} questions")
        for j, q in enumerate(qs):
            at = f"{path}, row {row}, question {j}"
            answers = [str(a) for a in as_list(per["answers"][j] or [], path, "answers", row)]
            labels = [whole_number(x, at, "answer_labels", "answer ids") for x in per["answer_labels"][j] or []]
            scores = [_score(x, at) for x in per["answer_scores"][j] or []]
            if len(labels) != len(scores) or (answers and len(answers) != len(labels)):
                raise DataError(
                    f"{path}, row {row}, question {j}: {len(answers)} answers, {len(labels)} answer_labels and "
                    f"{len(scores)} answer_scores; expected equal lengths"
                )
            if any(not 0.0 <= s <= 1.0 for s in scores):
                raise DataError(f"{path}, row {row}, question {j}: answer_scores {scores} outside [0, 1]")
            out.append(
                {"row": row, "question": str(q), "answers": answers, "labels": labels, "scores": scores, "qid": ids[j]}
            )
    return out


def _score(value: Any, at: str) -> float:
    """A soft score: a number (not a string or a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{at}: 'answer_scores' holds {value!r} ({type(value).__name__}); expected numbers in [0, 1]")
    return float(value)


def answer_vocabulary(questions: list[list[dict[str, Any]]], paths: list[Path]) -> list[str]:
    """Answer strings by id from the (answer, id) pairs of the given files' questions;
    ``len`` = the largest id + 1 (an id never seen with a string gets ``"<id>"``)."""
    by_id: dict[int, str] = {}
    by_answer: dict[str, int] = {}
    for qs, path in zip(questions, paths, strict=True):
        for q in qs:
            for a, i in zip(q["answers"], q["labels"], strict=False):
                if i < 0:
                    raise DataError(f"{path}, row {q['row']}: negative answer id {i}")
                if by_id.get(i, a) != a or by_answer.get(a, i) != i:
                    raise DataError(
                        f"{path}, row {q['row']}: answer '{a}' has id {i}, but the vocabulary already maps "
                        f"id {i} to {by_id.get(i)!r} and {a!r} to {by_answer.get(a)}"
                    )
                by_id[i], by_answer[a] = a, i
    if not by_id:
        raise DataError(f"{paths[0]}: no answers in the training and validation files; cannot build a vocabulary")
    return [by_id.get(i, f"<{i}>") for i in range(max(by_id) + 1)]


def soft_targets(labels: list[list[int]], scores: list[list[float]], num_answers: int) -> np.ndarray:
    """``(N, num_answers)`` float32 soft-score matrix from sparse (ids, scores) per question;
    ids outside the vocabulary are left out."""
    out = np.zeros((len(labels), num_answers), dtype=np.float32)
    for i, (ids, sc) in enumerate(zip(labels, scores, strict=True)):
        for a, s in zip(ids, sc, strict=True):
            if 0 <= a < num_answers:
                out[i, a] = max(out[i, a], s)
    return out


class VQAPreprocessor:
    """Ray Data batch UDF: index rows (path, row, question, sparse answers) -> ``image``
    ``(B, 3, S, S)``, ``text`` ``(B, L)`` token ids (of the ``modalities`` asked for) and
    ``y_answer`` ``(B, answers)`` soft scores (when the index has answers), and the index
    columns in ``keep``."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        image_size: int,
        num_answers: int,
        modalities: tuple[str, ...] = MODALITIES,
        keep: tuple[str, ...] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.num_answers = num_answers
        self.modalities = modalities
        self.keep = keep
        self.rows = ArrowRows()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths, rows = batch["path"], batch["row"].astype(np.int64)
        out = {k: batch[k] for k in self.keep}
        if "image" in self.modalities:
            images = np.zeros((len(paths), 3, self.image_size, self.image_size), dtype=np.float32)
            for path in dict.fromkeys(paths.tolist()):
                idx = np.flatnonzero(paths == path)
                for i, data in zip(idx, self.rows.take(path, "image", rows[idx]), strict=True):
                    images[i] = decode_cell(data, self.image_size, path, int(rows[i]), "image")
            out["image"] = images
        if "text" in self.modalities:
            out["text"] = self.tokenizer([str(q) for q in batch["question"]])
        if "labels" in batch:
            labels = [list(x) for x in batch["labels"]]
            scores = [list(x) for x in batch["scores"]]
            out[label_column(HEAD)] = soft_targets(labels, scores, self.num_answers)
        return out


def prepare(cfg: ExperimentConfig, data_dir: str | Path, work_dir: Path) -> PreparedData:
    """Index every file's questions, build the answer vocabulary and tokeniser, and the
    streaming Ray Datasets (``train``, ``val``, ``test`` = IID, ``test_ood_<set>``)."""
    import ray.data

    opts = options(cfg)
    paths = file_paths(data_dir, opts)
    questions = {name: read_questions(p) for name, p in paths.items()}
    limit = opts["max_questions"]
    if limit is not None:
        questions = {n: q[: int(limit)] for n, q in questions.items()}
    questions = {n: capped(q, cfg.data.max_samples) for n, q in questions.items()}
    for name, qs in questions.items():
        if not qs:
            raise DataError(f"{paths[name]}: no questions")
    vocab = answer_vocabulary([questions["train"], questions["val"]], [paths["train"], paths["val"]])
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "answers.json").write_text(json.dumps(vocab))
    tokenizer = make_tokenizer(
        opts["tokenizer"], (q["question"] for q in questions["train"]), work_dir, int(opts["max_text_length"])
    )
    size, length = int(opts["image_size"]), int(opts["max_text_length"])
    info: dict[str, Any] = {
        "answers": len(vocab),
        "vocab_size": tokenizer.vocab_size,
        "pad_token_id": tokenizer.pad_token_id,
        "inputs": {"image": [3, size, size], "text": [length]},
        "encoders": ["transformers"],
    }
    quiet_data_context(cfg.run.deterministic)
    prep = VQAPreprocessor(tokenizer, int(opts["image_size"]), len(vocab))
    datasets: dict[str, ray.data.Dataset] = {}
    sizes: dict[str, int] = {}
    for name, qs in questions.items():
        dropped = sum(1 for q in qs for i in q["labels"] if i >= len(vocab))
        if dropped:
            info[f"{name}_answers_outside_vocabulary"] = dropped
        key = name if name in ("train", "val", "test") else f"test_ood_{name}"
        items = [
            {"path": str(paths[name]), "row": q["row"], "question": q["question"], "labels": q["labels"],
             "scores": q["scores"]}
            for q in qs
        ]  # fmt: skip
        sizes[key] = len(items)
        datasets[key] = index_dataset(
            items,
            prep,
            batch_size=64,
            blocks=min(len(items) // 64, 64),
            shuffle_seed=shuffle_seed(cfg) if key == "train" else None,
            cache=bool(opts["cache"]),
        )
    log.info("VQA-VS: %s", info)
    return PreparedData(
        spec=TaskSpec(MODALITIES, {HEAD: len(vocab)}, multilabel=(HEAD,)),
        datasets=datasets,
        class_counts={},
        sizes=sizes,
        info=info,
        state={"tokenizer": tokenizer.state(), "image_size": size, "answers": list(vocab)},
        classes={HEAD: list(vocab)},
    )


LABEL_COLUMNS = ("answers", "answer_labels", "answer_scores")


def predict_data(source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
    """Every question of a VQA-VS Arrow file (``source.data_dir``: the file, or the folder
    holding the ``source.split`` file: ``test`` = ``vqavs_test_iid``, ``kw`` =
    ``vqavs_test_kw``, ...), decoded and tokenised as in training (tokeniser, image size and
    answer vocabulary from ``state``). ``image`` is read only when asked for; the answers
    only when the file has them (then every column of the real layout is checked)."""
    check_state(state, ("tokenizer", "image_size", "answers"), "VQA-VS")
    quiet_data_context(True)
    path = arrow_file(source.data_dir, DEFAULT_FILES, source.split)
    wanted = {k: COLUMNS[k] for k in ("questions", "question_id")}
    if "image" in source.modalities:
        wanted["image"] = COLUMNS["image"]
    table = open_table(path, wanted)
    if "image" in source.modalities:
        check_binary_columns(table, path, ("image",))
    labelled = all(c in table.column_names for c in LABEL_COLUMNS)
    items: list[dict[str, Any]] = []
    if labelled:
        for q in read_questions(path):
            items.append({"path": str(path), "row": q["row"], "question": q["question"],
                          "question_id": str(q["qid"]), "labels": q["labels"], "scores": q["scores"]})  # fmt: skip
    else:
        questions = table.column("questions").to_pylist()
        qids = table.column("question_id").to_pylist()
        for row in range(table.num_rows):
            qs = as_list(questions[row], path, "questions", row)
            ids = as_list(qids[row], path, "question_id", row)
            if len(ids) != len(qs):
                raise DataError(f"{path}, row {row}: 'question_id' has {len(ids)} entries for {len(qs)} questions")
            for q, i in zip(qs, ids, strict=True):
                items.append({"path": str(path), "row": row, "question": str(q), "question_id": str(i)})
    if not items:
        raise DataError(f"{path}: no questions")
    answers = list(state["answers"])
    prep = VQAPreprocessor(
        TextTokenizer.from_state(state["tokenizer"]), int(state["image_size"]), len(answers), source.modalities,
        keep=("question_id",),
    )  # fmt: skip
    ds = index_dataset(items, prep, batch_size=64, blocks=min(len(items) // 64, 64))
    return PredictInput(dataset=ds, ids=("question_id",), labelled=labelled, rows=len(items))


SAMPLE_VERSION = 1  # bump when the generator changes, so stale samples are rewritten


@register_dataset("vqa")
class VQAVS(Dataset):
    """VQA-VS: Arrow files in ``data.data_dir``, or the generated sample."""

    def load(self, cfg: ExperimentConfig, work_dir: Path) -> PreparedData:
        """Prepare real Arrow files from ``data.data_dir``, or write (once) and prepare the
        generated sample. ``data.annotations`` is not used (the answers are in the Arrow files)."""
        from i2m2_ray.data.vqa_sample import write_sample

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
        return sample_settings(cfg, SAMPLE, "vqa")

    def predict_data(self, cfg: ExperimentConfig, source: PredictSource, state: Mapping[str, Any]) -> PredictInput:
        """New files for a trained model (:func:`predict_data`)."""
        return predict_data(source, state)
