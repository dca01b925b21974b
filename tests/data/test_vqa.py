"""VQA-VS Arrow reader, answer vocabulary, soft scores, preprocessing and sample generator:
known answers on tiny hand-written files."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from i2m2_ray.config import load_config
from i2m2_ray.data import vqa, vqa_sample
from i2m2_ray.data.arrow_vl import (
    TextTokenizer,
    decode_image,
    make_tokenizer,
    open_table,
    word_vocabulary,
    write_arrow,
)
from i2m2_ray.data.base import DataError


def png(colours: list[list[tuple[int, int, int]]]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(colours, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


RED = png([[(255, 0, 0)] * 2] * 2)
BLUE = png([[(0, 0, 255)] * 2] * 2)


def tiny_vqa(path: Path, **replace: object) -> Path:
    """Two images: three questions with answers ids 0 "yes", 1 "no", 2 "red"."""
    cols = {
        "image": [RED, BLUE],
        "questions": [["is it red?", "what colour?"], ["is it red?"]],
        "answers": [[["yes", "no"], ["red"]], [["no"]]],
        "answer_labels": [[[0, 1], [2]], [[1]]],
        "answer_scores": [[[1.0, 0.3333], [0.6667]], [[1.0]]],
        "image_id": [7, 8],
        "question_id": [[70, 71], [80]],
        "split": ["train", "train"],
    }
    cols.update(replace)  # type: ignore[arg-type]
    return write_arrow(path, pa.table(cols))


def test_human_score_is_min_one_count_over_three() -> None:
    assert [vqa_sample.human_score(n) for n in (0, 1, 2, 3, 4, 10)] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]


def test_read_questions_one_entry_per_question(tmp_path: Path) -> None:
    qs = vqa.read_questions(tiny_vqa(tmp_path / "vqavs_train.arrow"))
    assert [(q["row"], q["question"], q["labels"], q["scores"], q["qid"]) for q in qs] == [
        (0, "is it red?", [0, 1], [1.0, 0.3333], 70),
        (0, "what colour?", [2], [0.6667], 71),
        (1, "is it red?", [1], [1.0], 80),
    ]
    assert qs[0]["answers"] == ["yes", "no"]


def test_reader_names_missing_column_and_bad_lengths(tmp_path: Path) -> None:
    t = pa.table({"image": [RED], "questions": [["q"]]})
    write_arrow(tmp_path / "bad.arrow", t)
    with pytest.raises(DataError, match=r"bad.arrow: missing column\(s\) 'answers'"):
        vqa.read_questions(tmp_path / "bad.arrow")
    path = tiny_vqa(tmp_path / "len.arrow", question_id=[[70], [80]])
    with pytest.raises(DataError, match=r"len.arrow, row 0: 'question_id' has 1 entries for 2 questions"):
        vqa.read_questions(path)
    path = tiny_vqa(tmp_path / "score.arrow", answer_scores=[[[1.0, 2.0], [0.5]], [[1.0]]])
    with pytest.raises(DataError, match="outside"):
        vqa.read_questions(path)
    with pytest.raises(DataError, match=r"nope.arrow: file not found"):
        vqa.read_questions(tmp_path / "nope.arrow")
    (tmp_path / "junk.arrow").write_bytes(b"not arrow")
    with pytest.raises(DataError, match="not an Arrow IPC file"):
        open_table(tmp_path / "junk.arrow", {})


def test_answer_vocabulary_from_train_and_val_pairs(tmp_path: Path) -> None:
    train = vqa.read_questions(tiny_vqa(tmp_path / "t.arrow"))
    val = [{"row": 0, "answers": ["blue"], "labels": [4], "scores": [1.0]}]
    vocab = vqa.answer_vocabulary([train, val], [tmp_path / "t.arrow", tmp_path / "v.arrow"])
    assert vocab == ["yes", "no", "red", "<3>", "blue"]  # size = largest id + 1
    clash = [{"row": 3, "answers": ["green"], "labels": [2], "scores": [1.0]}]
    with pytest.raises(DataError, match=r"v.arrow, row 3: answer 'green' has id 2.*'red'"):
        vqa.answer_vocabulary([train, clash], [tmp_path / "t.arrow", tmp_path / "v.arrow"])


def test_soft_targets_dense_matrix_drops_ids_outside_vocabulary() -> None:
    y = vqa.soft_targets([[0, 2], [5, 1]], [[1.0, 0.5], [1.0, 0.25]], 3)
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.5], [0.0, 0.25, 0.0]])


def test_word_tokenizer_known_ids(tmp_path: Path) -> None:
    vocab = word_vocabulary(["what is red?", "What is blue"])
    assert vocab == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "is": 4, "what": 5, "?": 6, "blue": 7, "red": 8}
    tok = make_tokenizer(None, ["what is red?", "What is blue"], tmp_path, max_length=8)
    assert tok.vocab_size == 9 and tok.pad_token_id == 0
    ids = tok(["What is green?", "red red red red red red red red red"])
    np.testing.assert_array_equal(ids, [[2, 5, 4, 1, 6, 3, 0, 0], [2, 8, 8, 8, 8, 8, 8, 3]])
    import pickle

    again = pickle.loads(pickle.dumps(tok))  # what a Ray Data task receives
    assert isinstance(again, TextTokenizer) and again._tok is None
    np.testing.assert_array_equal(again(["what is red?"]), [[2, 5, 4, 8, 6, 3, 0, 0]])


def test_decode_image_resizes_and_normalises() -> None:
    x = decode_image(png([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 255)]]), 2)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [1, -1, -1])
    np.testing.assert_allclose(x[:, 1, 1], [1, 1, 1])


def test_preprocessor_batch(tmp_path: Path) -> None:
    path = tiny_vqa(tmp_path / "vqavs_train.arrow")
    tok = make_tokenizer(None, ["is it red?", "what colour?"], tmp_path, max_length=6)
    prep = vqa.VQAPreprocessor(tok, image_size=4, num_answers=3)
    batch = {
        "path": np.array([str(path), str(path)], dtype=object),
        "row": np.array([1, 0]),
        "question": np.array(["is it red?", "what colour?"], dtype=object),
        "labels": np.array([np.array([1]), np.array([2])], dtype=object),
        "scores": np.array([np.array([1.0]), np.array([0.6667])], dtype=object),
    }
    out = prep(batch)
    assert out["image"].shape == (2, 3, 4, 4)
    np.testing.assert_allclose(out["image"][0, :, 0, 0], [-1, -1, 1])  # row 1: blue
    np.testing.assert_allclose(out["image"][1, :, 0, 0], [1, -1, -1])  # row 0: red
    np.testing.assert_allclose(out["y_answer"], [[0, 1, 0], [0, 0, 0.6667]], atol=1e-6)
    assert out["text"].shape == (2, 6) and out["text"][0, 0] == 2
    broken = tiny_vqa(tmp_path / "broken.arrow", image=[b"not an image", BLUE])
    with pytest.raises(DataError, match=r"broken.arrow, row 0: 'image' is not a readable image"):
        prep({**batch, "path": np.array([str(broken)] * 2, dtype=object)})


def test_sample_real_layout_and_planted_answers(tmp_path: Path) -> None:
    root = vqa_sample.write_sample(tmp_path, train=30, val=10, test=10, ood=6, seed=3)
    names = sorted(p.name for p in root.glob("*.arrow"))
    assert names == sorted(
        ["vqavs_train.arrow", "vqavs_val.arrow", "vqavs_test_iid.arrow"]
        + [f"vqavs_test_{k}.arrow" for k in vqa.OOD_SETS]
    )
    with pa.memory_map(str(root / "vqavs_train.arrow")) as src:
        table = pa.ipc.open_file(src).read_all()
    assert table.schema.equals(vqa_sample.SCHEMA)
    for q in vqa.read_questions(root / "vqavs_train.arrow"):
        best = q["answers"][int(np.argmax(q["scores"]))]
        m = re.search(r"opposite of (\w+)", q["question"])
        if m:  # text-only questions: the answer follows from the words
            assert best == vqa_sample.OPPOSITES[m.group(1)]
        assert max(q["scores"]) == 1.0
    ood = vqa.read_questions(root / "vqavs_test_ko.arrow")
    assert all("colour" in q["question"] for q in ood)  # OOD sets: image-and-text questions only


def test_prepare_builds_every_test_set(tmp_path: Path, ray_local: None) -> None:
    vqa_sample.write_sample(tmp_path / "data", train=12, val=4, test=4, ood=2, seed=0)
    cfg = load_config(None, ["experiment=vqa", "data.options.image_size=8", "data.options.max_text_length=10"])
    prepared = vqa.prepare(cfg, tmp_path / "data", tmp_path / "work")
    assert prepared.spec.multilabel == ("answer",)
    assert set(prepared.datasets) == {"train", "val", "test", *(f"test_ood_{k}" for k in vqa.OOD_SETS)}
    assert prepared.sizes["train"] == 36 and prepared.sizes["test_ood_kw"] == 6
    batch = prepared.datasets["test_ood_kw"].take_batch(6)
    assert batch["image"].shape == (6, 3, 8, 8) and batch["text"].shape == (6, 10)
    assert batch["y_answer"].shape == (6, prepared.spec.heads["answer"])
    assert (tmp_path / "work" / "tokenizer.json").is_file() and (tmp_path / "work" / "answers.json").is_file()
    with pytest.raises(DataError, match="unknown data.options"):
        vqa.prepare(load_config(None, ["data.options.nope=1"]), tmp_path / "data", tmp_path / "work")


def test_data_modules_import_without_torch() -> None:
    """Ray Data workers import these modules to run the preprocessing UDFs: no torch there."""
    import subprocess
    import sys

    code = (
        "import sys, i2m2_ray.data.vqa, i2m2_ray.data.nlvr2, i2m2_ray.data.vqa_sample, i2m2_ray.data.nlvr2_sample; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- issue 16: wrong types caught on the driver, unreadable cells named ------------------


@pytest.mark.parametrize(
    "replace,message",
    [
        (
            {"answer_labels": [[["0", "1"], ["2"]], [["1"]]]},
            r"s.arrow, row 0, question 0: 'answer_labels' holds '0' \(str\); expected whole-number answer ids",
        ),
        ({"answer_labels": [[[0.0, 1.5], [2.0]], [[1.0]]]}, r"row 0, question 0: 'answer_labels' holds 1.5 \(float\)"),
        (
            {"answer_scores": [[["1", "0.3"], ["0.6"]], [["1"]]]},
            r"row 0, question 0: 'answer_scores' holds '1' \(str\); expected numbers in \[0, 1\]",
        ),
        ({"answer_scores": [[[True, False], [True]], [[True]]]}, r"'answer_scores' holds True \(bool\)"),
        ({"image": ["red.png", "blue.png"]}, r"s.arrow: column 'image' has type string; expected binary"),
    ],
)
def test_wrong_types_are_named_on_the_driver(tmp_path: Path, replace: dict[str, object], message: str) -> None:
    path = tiny_vqa(tmp_path / "s.arrow", **replace)
    with pytest.raises(DataError, match=message):
        vqa.read_questions(path)


def test_an_image_cell_that_is_not_bytes_is_named_with_its_row(tmp_path: Path) -> None:
    from i2m2_ray.data.arrow_vl import decode_cell

    assert decode_cell(RED, 2, "f.arrow", 0, "image").shape == (3, 2, 2)
    with pytest.raises(DataError, match=r"f.arrow, row 4: column 'image' holds str; expected encoded image bytes"):
        decode_cell("red.png", 2, "f.arrow", 4, "image")
    with pytest.raises(DataError, match=r"f.arrow, row 5: column 'image' is empty"):
        decode_cell(b"", 2, "f.arrow", 5, "image")
    with pytest.raises(DataError, match=r"f.arrow, row 6: 'image' is not a readable image"):
        decode_cell(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 2, "f.arrow", 6, "image")


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.options={image_size: big}", r"data.options.image_size must be a whole number >= 1, got 'big'"),
        ("data.options={max_text_length: 1}", r"data.options.max_text_length must be a whole number >= 2"),
        ("data.options={max_questions: 0}", r"data.options.max_questions must be a whole number >= 1 or null"),
        ("data.options={cache: yes please}", r"data.options.cache must be true or false"),
        ("data.options={ood_sets: kw}", r"data.options.ood_sets must be a list of OOD set names"),
        ("data.sample={train: 12, odd: 3}", r"unknown data.sample key\(s\) \['odd'\] for vqa"),
        ("data.sample={lang: 2}", r"data.sample.lang must be a number in \[0, 1\], got 2"),
    ],
)
def test_bad_settings_are_named_before_anything_is_read(tmp_path: Path, override: str, message: str) -> None:
    from i2m2_ray.config import ConfigError
    from i2m2_ray.data import check_data_config, get_dataset

    with pytest.raises(ConfigError, match=message):
        check_data_config(get_dataset("vqa"), load_config(None, [override]))
    with pytest.raises((ConfigError, DataError), match=message):
        get_dataset("vqa").load(load_config(None, [override]), tmp_path)
    assert not (tmp_path / "sample_data").exists()


def test_max_samples_caps_every_set_evenly(tmp_path: Path, ray_local: None) -> None:
    vqa_sample.write_sample(tmp_path / "d", train=12, val=6, test=6, ood=4, size=8)
    options = "data.options={image_size: 8, max_text_length: 8, ood_sets: [kw, ko]}"
    cfg = load_config(None, [options, "data.max_samples=5"])
    prepared = vqa.prepare(cfg, tmp_path / "d", tmp_path / "work")
    assert prepared.sizes == {"train": 5, "val": 5, "test": 5, "test_ood_kw": 5, "test_ood_ko": 5}
