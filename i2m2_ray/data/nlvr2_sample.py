"""Write a small NLVR2 sample in the ViLT/METER Arrow layout (``nlvr2_{train,dev,test1}.arrow``).

Each row is a pair of JPEG images (grey background, one to three coloured squares in the
corners) with two sentences, each true or false of the pair:

| kind | example | label from |
| --- | --- | --- |
| text | "four is more than two" | the sentence alone |
| image | "the two images are the same" | the images alone (same scene or not, whatever the wording) |
| both | "the left image has a red square" | the sentence and the images jointly |

Labels are balanced within each kind. ``python -m i2m2_ray.data.nlvr2_sample --out DIR``
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from i2m2_ray.data.arrow_vl import write_arrow

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40)}
CORNERS = ("top left", "top right", "bottom left", "bottom right")
NUMBERS = ("one", "two", "three", "four", "five")
SAME_TEMPLATES = ("the two images are the same", "both pictures show the same thing", "the images match")
SIDES = ("left", "right")
Scene = list[tuple[str, str]]  # (corner, colour) per square


def draw_image(scene: Scene, size: int, rng: np.random.Generator) -> bytes:
    """JPEG of squares ``(corner, colour)`` on a grey background with mild noise."""
    from PIL import Image

    img = np.full((size, size, 3), 150.0, dtype=np.float32)
    half = size // 2
    side = int(half * 0.7)
    for corner, colour in scene:
        top = (0 if corner.startswith("top") else half) + (half - side) // 2
        left = (0 if corner.endswith("left") else half) + (half - side) // 2
        img[top : top + side, left : left + side] = COLOURS[colour]
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def random_scene(rng: np.random.Generator) -> Scene:
    n = int(rng.integers(1, 4))
    corners = rng.choice(CORNERS, size=n, replace=False)
    return [(str(c), str(rng.choice(sorted(COLOURS)))) for c in corners]


def sentence(kind: str, scenes: tuple[Scene, Scene], same: bool, rng: np.random.Generator) -> tuple[str, bool]:
    """A sentence of one kind about the pair, and whether it is true (drawn balanced)."""
    want = bool(rng.random() < 0.5)
    if kind == "text":
        a, b = sorted(rng.choice(len(NUMBERS), size=2, replace=False))  # a < b
        big, small = (NUMBERS[b], NUMBERS[a]) if want else (NUMBERS[a], NUMBERS[b])
        return f"{big} is more than {small}", want
    if kind == "image":
        return str(rng.choice(SAME_TEMPLATES)), same
    i = int(rng.integers(2))
    present = sorted({c for _, c in scenes[i]})
    absent = sorted(set(COLOURS) - set(present))
    pool = present if (want or not absent) else absent
    colour = str(rng.choice(pool))
    return f"the {SIDES[i]} image has a {colour} square", colour in present


def make_rows(n: int, split: str, rng: np.random.Generator, size: int, per_pair: int) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in ("image_0", "image_1", "questions", "answers", "identifier")}
    for i in range(n):
        first = random_scene(rng)
        same = bool(rng.random() < 0.5)
        second = list(first) if same else random_scene(rng)
        while not same and sorted(second) == sorted(first):
            second = random_scene(rng)
        texts, labels = [], []
        for _ in range(per_pair):
            text, label = sentence(str(rng.choice(["text", "image", "both", "both"])), (first, second), same, rng)
            texts.append(text)
            labels.append("True" if label else "False")  # NLVR2's label strings
        cols["image_0"].append(draw_image(first, size, rng))
        cols["image_1"].append(draw_image(second, size, rng))
        cols["questions"].append(texts)
        cols["answers"].append(labels)
        cols["identifier"].append(f"{split}-{i}-0")
    return cols


SCHEMA = pa.schema(
    [
        ("image_0", pa.binary()),
        ("image_1", pa.binary()),
        ("questions", pa.list_(pa.string())),
        ("answers", pa.list_(pa.string())),
        ("identifier", pa.string()),
    ]
)


def write_sample(
    out: str | Path,
    train: int = 1500,
    val: int = 250,
    test: int = 300,
    per_pair: int = 2,
    size: int = 48,
    seed: int = 0,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``nlvr2_train.arrow``, ``nlvr2_dev.arrow`` (validation) and ``nlvr2_test1.arrow``
    with ``train``/``val``/``test`` image pairs, ``per_pair`` sentences each."""
    root = Path(out)
    names = {"train": "nlvr2_train", "val": "nlvr2_dev", "test": "nlvr2_test1", **dict(files or {})}
    for k, (name, n) in enumerate((("train", train), ("val", val), ("test", test))):
        rng = np.random.default_rng([seed, k])
        split = {"val": "dev", "test": "test1"}.get(name, name)
        write_arrow(root / f"{names[name]}.arrow", pa.table(make_rows(n, split, rng, size, per_pair), schema=SCHEMA))
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="write a small NLVR2 sample in the ViLT Arrow layout")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=1500, help="training image pairs (2 sentences each)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(write_sample(args.out, train=args.train, seed=args.seed))


if __name__ == "__main__":
    main()
