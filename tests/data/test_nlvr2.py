"""NLVR2 Arrow reader (pairs of images and their sentences), preprocessing and sample
generator: known answers on tiny hand-written files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from i2m2_ray.config import load_config
from i2m2_ray.data import nlvr2, nlvr2_sample
from i2m2_ray.data.arrow_vl import make_tokenizer, write_arrow
from i2m2_ray.data.base import DataError

from .test_vqa import BLUE, RED


def tiny_pairs(path: Path, **replace: object) -> Path:
    cols = {
        "image_0": [RED, BLUE],
        "image_1": [BLUE, BLUE],
        "questions": [["the left image is red", "both are blue"], ["both are blue"]],
        "answers": [["True", "false"], ["TRUE"]],
        "identifier": ["dev-1-0", "dev-2-1"],
    }
    cols.update(replace)  # type: ignore[arg-type]
    return write_arrow(path, pa.table(cols))


def test_parse_label() -> None:
    assert [nlvr2.parse_label(v, Path("f"), 0) for v in ("True", "false", " TRUE ", True, False)] == [1, 0, 1, 1, 0]
    with pytest.raises(DataError, match=r"f, row 4: 'answers' holds 'maybe'"):
        nlvr2.parse_label("maybe", Path("f"), 4)


def test_read_pairs_one_entry_per_sentence(tmp_path: Path) -> None:
    entries = nlvr2.read_pairs(tiny_pairs(tmp_path / "nlvr2_dev.arrow"))
    assert [(e["row"], e["sentence"], e["label"], e["identifier"]) for e in entries] == [
        (0, "the left image is red", 1, "dev-1-0-0"),
        (0, "both are blue", 0, "dev-1-0-1"),
        (1, "both are blue", 1, "dev-2-1-0"),
    ]
    # one sentence per row as a plain string is read too
    single = tiny_pairs(tmp_path / "s.arrow", questions=["a", "b"], answers=["True", "False"])
    assert [e["label"] for e in nlvr2.read_pairs(single)] == [1, 0]
    bad = tiny_pairs(tmp_path / "bad.arrow", answers=[["True"], ["True"]])
    with pytest.raises(DataError, match=r"bad.arrow, row 0: 2 sentences but 1 answers"):
        nlvr2.read_pairs(bad)


def test_preprocessor_keeps_the_pair_in_order(tmp_path: Path) -> None:
    path = tiny_pairs(tmp_path / "nlvr2_dev.arrow")
    tok = make_tokenizer(None, ["the left image is red"], tmp_path, max_length=8)
    out = nlvr2.NLVR2Preprocessor(tok, image_size=4)(
        {
            "path": np.array([str(path)] * 2, dtype=object),
            "row": np.array([0, 1]),
            "sentence": np.array(["the left image is red", "both are blue"], dtype=object),
            "label": np.array([1, 1]),
        }
    )
    assert out["image"].shape == (2, 2, 3, 4, 4)
    np.testing.assert_allclose(out["image"][0, 0, :, 0, 0], [1, -1, -1])  # row 0, left: red
    np.testing.assert_allclose(out["image"][0, 1, :, 0, 0], [-1, -1, 1])  # row 0, right: blue
    np.testing.assert_array_equal(out["y_label"], [1, 1])
    # vocabulary: image 4, is 5, left 6, red 7, the 8 (ties in alphabetical order)
    np.testing.assert_array_equal(out["text"][0], [2, 8, 6, 4, 5, 7, 3, 0])  # [CLS] the left image is red [SEP]
    assert out["text"][1, 1] == 1  # "both": not in the vocabulary -> [UNK]


def test_sample_layout_and_labels(tmp_path: Path) -> None:
    root = nlvr2_sample.write_sample(tmp_path, train=40, val=10, test=10, seed=1)
    assert sorted(p.name for p in root.glob("*.arrow")) == ["nlvr2_dev.arrow", "nlvr2_test1.arrow", "nlvr2_train.arrow"]
    with pa.memory_map(str(root / "nlvr2_train.arrow")) as src:
        assert pa.ipc.open_file(src).read_all().schema.equals(nlvr2_sample.SCHEMA)
    entries = nlvr2.read_pairs(root / "nlvr2_train.arrow")
    assert len(entries) == 80
    for e in entries:
        m = re.fullmatch(r"(\w+) is more than (\w+)", e["sentence"])
        if m:  # text-only sentences are true exactly when the first number is larger
            a, b = (nlvr2_sample.NUMBERS.index(w) for w in m.groups())
            assert e["label"] == int(a > b)
    assert 0.3 < np.mean([e["label"] for e in entries]) < 0.7


def test_prepare_pairs(tmp_path: Path, ray_local: None) -> None:
    nlvr2_sample.write_sample(tmp_path / "data", train=10, val=4, test=4, seed=0)
    cfg = load_config(None, ["experiment=nlvr2", "data.options.image_size=8", "data.options.max_text_length=10"])
    prepared = nlvr2.prepare(cfg, tmp_path / "data", tmp_path / "work")
    assert set(prepared.datasets) == {"train", "val", "test"}
    assert prepared.sizes == {"train": 20, "val": 8, "test": 8}
    assert sum(prepared.class_counts["label"]) == 20
    batch = prepared.datasets["val"].take_batch(8)
    assert batch["image"].shape == (8, 2, 3, 8, 8) and batch["y_label"].shape == (8,)


def test_images_that_are_not_bytes_are_named_on_the_driver(tmp_path: Path) -> None:
    path = tiny_pairs(tmp_path / "p.arrow", image_1=["left.png", "right.png"])
    with pytest.raises(DataError, match=r"p.arrow: column 'image_1' has type string; expected binary"):
        nlvr2.read_pairs(path)
    path = tiny_pairs(tmp_path / "q.arrow", image_0=[1, 2])
    with pytest.raises(DataError, match=r"q.arrow: column 'image_0' has type int64; expected binary"):
        nlvr2.read_pairs(path)


def test_bad_settings_and_max_samples(tmp_path: Path, ray_local: None) -> None:
    from i2m2_ray.config import ConfigError
    from i2m2_ray.data import check_data_config, get_dataset

    with pytest.raises(ConfigError, match=r"data.options.max_sentences must be a whole number >= 1 or null"):
        check_data_config(get_dataset("nlvr2"), load_config(None, ["data.options={max_sentences: -1}"]))
    with pytest.raises(ConfigError, match=r"unknown data.sample key\(s\) \['pairs'\] for nlvr2"):
        check_data_config(get_dataset("nlvr2"), load_config(None, ["data.sample={pairs: 3}"]))
    nlvr2_sample.write_sample(tmp_path / "d", train=8, val=4, test=4, size=8)
    cfg = load_config(None, ["data.options={image_size: 8, max_text_length: 8}", "data.max_samples=3"])
    assert nlvr2.prepare(cfg, tmp_path / "d", tmp_path / "work").sizes == {"train": 3, "val": 3, "test": 3}
