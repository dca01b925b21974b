"""Shared parts of the vision-language readers (VQA-VS, NLVR2): ViLT/METER Arrow files,
image decoding and tokenising.

The files are Arrow IPC files (``pa.ipc.RecordBatchFileReader``), one per split, one row
per image (VQA) or image pair (NLVR2), with lists of questions / sentences per row. They
are memory-mapped: the driver reads only the small text and label columns to build an
index (file, row, question); image bytes are read, decoded and resized inside Ray Data's
``map_batches``, where the text is tokenised too.

No torch here (Ray Data workers import this module); the tokeniser libraries are imported
inside the functions that use them.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from i2m2_ray.data.base import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
IMAGE_MEAN = 0.5  # ViLT's pixel normalisation: (x / 255 - 0.5) / 0.5, to [-1, 1]
IMAGE_STD = 0.5


def open_table(path: str | Path, columns: Mapping[str, str]) -> pa.Table:
    """Memory-map an Arrow IPC file and check that it has ``columns`` (name -> what is
    expected there, for the error message). Nothing is copied until a column is used."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        table = pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{p}: not an Arrow IPC file ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        wanted = "; ".join(f"'{c}' ({what})" for c, what in columns.items() if c in missing)
        raise DataError(f"{p}: missing column(s) {wanted}; the file has {table.column_names}")
    return table


def as_list(value: Any, path: Path, column: str, row: int) -> list[Any]:
    """A list cell (a scalar is taken as a one-element list); ``None`` is an error."""
    if value is None:
        raise DataError(f"{path}, row {row}: column '{column}' is null")
    return list(value) if isinstance(value, list | tuple) else [value]


def check_binary_columns(table: pa.Table, path: Path, columns: Sequence[str]) -> None:
    """Image columns must hold bytes (Arrow ``binary``): checked on the driver from the
    schema, so a column of strings or numbers fails here and not in a Ray Data task."""
    for column in columns:
        kind = table.schema.field(column).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)):
            raise DataError(f"{path}: column '{column}' has type {kind}; expected binary (encoded image bytes)")


def whole_number(value: Any, at: str, column: str, what: str) -> int:
    """An integer cell (a whole float is accepted); strings, booleans and fractions are errors."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DataError(f"{at}: '{column}' holds {value!r} ({type(value).__name__}); expected whole-number {what}")


def check_options(opts: dict[str, Any], limit: str) -> dict[str, Any]:
    """Values of the options both vision-language readers share; ``limit`` names the
    dataset's per-split cap (``max_questions``, ``max_sentences``)."""

    def whole(key: str, low: int, none_ok: bool = False) -> None:
        v = opts[key]
        if (v is None and none_ok) or (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            return
        raise DataError(f"data.options.{key} must be a whole number >= {low}{' or null' if none_ok else ''}, got {v!r}")

    whole("image_size", 1)
    whole("max_text_length", 2)  # [CLS] and [SEP]
    whole(limit, 1, none_ok=True)
    if not isinstance(opts["cache"], bool):
        raise DataError(f"data.options.cache must be true or false, got {opts['cache']!r}")
    if opts["tokenizer"] is not None and not (isinstance(opts["tokenizer"], str) and opts["tokenizer"]):
        raise DataError(f"data.options.tokenizer must be a pretrained name or path, or null, got {opts['tokenizer']!r}")
    if opts["files"] is not None and not isinstance(opts["files"], Mapping):
        raise DataError(f"data.options.files must map splits to file stems, got {opts['files']!r}")
    return opts


def decode_cell(data: Any, size: int, path: str, row: int, column: str) -> np.ndarray:
    """One image cell -> :func:`decode_image`; an empty, non-bytes or undecodable cell is a
    :class:`DataError` naming the file, row and column."""
    if not data:
        raise DataError(f"{path}, row {row}: column '{column}' is empty")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DataError(
            f"{path}, row {row}: column '{column}' holds {type(data).__name__}; expected encoded image bytes"
        )
    try:
        return decode_image(bytes(data), size)
    except Exception as exc:  # Pillow raises OSError, ValueError, DecompressionBombError...
        raise DataError(f"{path}, row {row}: '{column}' is not a readable image ({exc})") from None


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> ``(3, size, size)`` float32 RGB in [-1, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(rgb, dtype=np.float32) / 255.0
    return ((arr - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1)


def words(text: str) -> list[str]:
    """The word-level tokeniser's split: lower case, runs of word characters or of
    punctuation (the ``Whitespace`` pre-tokeniser of ``tokenizers``)."""
    from tokenizers.pre_tokenizers import Whitespace

    return [w for w, _ in Whitespace().pre_tokenize_str(text.lower())]


def word_vocabulary(texts: Iterable[str], min_count: int = 1) -> dict[str, int]:
    """``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3``, then words by falling count, ties in
    alphabetical order (so the ids depend on the texts only)."""
    counts = Counter(w for t in texts for w in words(t))
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in ranked:
        vocab.setdefault(w, len(vocab))
    return vocab


def write_word_tokenizer(vocab: Mapping[str, int], path: str | Path) -> Path:
    """Save a ``tokenizers`` word-level tokeniser (``[CLS] words [SEP]``) as ``tokenizer.json``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel(dict(vocab), unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(out)
    return out


class TextTokenizer:
    """Token ids for a batch of texts, padded / truncated to ``max_length``.

    ``source`` is a ``tokenizer.json`` file (the word-level tokeniser built from the
    training text) or a pretrained name / path (``transformers.AutoTokenizer``). Loaded on
    first use, so the object pickles small into Ray Data tasks.
    """

    def __init__(self, source: str, max_length: int, content: str | None = None) -> None:
        self.source = source
        self.max_length = max_length
        # a tokenizer.json travels with the object, so workers on other nodes need no shared disk
        if content is None and source.endswith(".json") and Path(source).is_file():
            content = Path(source).read_text()
        self.content = content
        self._tok: Any = None

    def state(self) -> dict[str, Any]:
        """What rebuilds this tokeniser where new files are read (:meth:`from_state`): the
        word-level tokeniser's JSON itself, or the pretrained name, and the length."""
        return {"source": self.source, "json": self.content, "max_length": self.max_length}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TextTokenizer:
        return cls(str(state["source"]), int(state["max_length"]), state.get("json"))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tok": None}

    def _load(self) -> Any:
        if self._tok is None:
            if self.content is not None:
                from tokenizers import Tokenizer

                tok = Tokenizer.from_str(self.content)
                tok.enable_truncation(self.max_length)
                tok.enable_padding(length=self.max_length, pad_id=self.pad_token_id, pad_token="[PAD]")
                self._tok = tok
            else:
                from transformers import AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(self.source)
        return self._tok

    @property
    def pad_token_id(self) -> int:
        if self.content is not None:
            return int(json.loads(self.content)["model"]["vocab"]["[PAD]"])
        return int(self._load().pad_token_id or 0)

    @property
    def vocab_size(self) -> int:
        tok = self._load()
        return int(tok.get_vocab_size()) if hasattr(tok, "get_vocab_size") else len(tok)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), max_length)`` int64 token ids."""
        tok = self._load()
        if hasattr(tok, "encode_batch"):
            return np.asarray([e.ids for e in tok.encode_batch(list(texts))], dtype=np.int64)
        enc = tok(list(texts), padding="max_length", truncation=True, max_length=self.max_length)
        return np.asarray(enc["input_ids"], dtype=np.int64)


def make_tokenizer(source: str | None, texts: Iterable[str], work_dir: Path, max_length: int) -> TextTokenizer:
    """The configured tokeniser, or (``source`` None) a word-level one built from ``texts``
    and saved to ``work_dir/tokenizer.json``."""
    if source:
        return TextTokenizer(source, max_length)
    path = write_word_tokenizer(word_vocabulary(texts), work_dir / "tokenizer.json")
    return TextTokenizer(str(path), max_length)


class ArrowRows:
    """Per-process cache of memory-mapped tables; ``take(path, column, rows)`` reads cells."""

    def __init__(self) -> None:
        self._tables: dict[str, pa.Table] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"_tables": {}}

    def take(self, path: str, column: str, rows: np.ndarray) -> list[Any]:
        table = self._tables.get(path)
        if table is None:
            try:
                table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: cannot be read as an Arrow IPC file ({exc})") from None
            self._tables[path] = table
        return table.column(column).take(pa.array(rows.astype(np.int64))).to_pylist()


def arrow_file(data_dir: str | Path, stems: Mapping[str, str], split: str) -> Path:
    """The Arrow file to predict on: ``data_dir`` itself when it is a file, else the split's
    file in it (``<stems[split]>.arrow``, or ``<split>.arrow`` for a name not in ``stems``)."""
    p = Path(data_dir)
    return p if p.is_file() else p / f"{stems.get(split, split)}.arrow"


def check_state(state: Mapping[str, Any], keys: Sequence[str], dataset: str) -> None:
    """The checkpoint's preprocessing state has ``keys``."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise DataError(f"the checkpoint's preprocessing state has no {missing} ({dataset})")


def write_arrow(path: str | Path, table: pa.Table) -> Path:
    """Write ``table`` as an Arrow IPC file (the ``RecordBatchFileWriter`` format)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return out
