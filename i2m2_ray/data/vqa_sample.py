"""Write a small VQA-VS sample in the ViLT/METER Arrow layout (train, val, the IID test set
and the nine OOD test sets).

Each image (JPEG) shows a background whose shade is the time of day (day, dusk, night) and
two coloured squares, a big and a small one, in two of the four corners. Questions (three
per image, each answered by ten simulated annotators, soft scores ``min(1, n / 3)``):

| kind | example | answer from |
| --- | --- | --- |
| image | "what time of day is it?" | the image alone (the background) |
| text | "what is the opposite of hot?" | the text alone |
| both | "what colour is the object at the top left?" | the text and the image jointly |

Two shortcuts are planted in train, val and the IID test set: the colour asked about is the
corner's usual colour with probability ``lang`` (top left: red, ...: a language prior), and
the object asked about is the big one with probability ``vis`` (a salient-object prior).
The OOD test sets hold "both" questions on which the shortcuts fail: language sets (QT, KW,
KWP, QT+KW) never use the corner's usual colour, visual sets (KO, KOP) always ask about the
small object, multimodal sets (QT+KO, KW+KO, QT+KW+KO) do both. (The real VQA-VS mines its
shortcuts from question types, keywords and objects; here each group breaks one planted
prior, each set drawn with its own seed.)

``python -m i2m2_ray.data.vqa_sample --out DIR``
"""

from __future__ import annotations

import argparse
import io
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from i2m2_ray.data.arrow_vl import write_arrow

SCENES = {"day": (205, 205, 200), "dusk": (115, 110, 120), "night": (25, 25, 30)}
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 190),
    "cyan": (40, 200, 210),
}
CORNERS = ("top left", "top right", "bottom left", "bottom right")
CORNER_PRIOR = {"top left": "red", "top right": "green", "bottom left": "blue", "bottom right": "yellow"}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "up": "down",
    "fast": "slow",
    "happy": "sad",
    "old": "new",
    "wet": "dry",
    "open": "closed",
}
OPPOSITES.update({v: k for k, v in list(OPPOSITES.items())})
IMAGE_TEMPLATES = ("what time of day is it?", "when was this picture taken?", "what time is it in this scene?")
TEXT_TEMPLATES = ("what is the opposite of {w}?", "what word means the opposite of {w}?", "name the opposite of {w}.")
BOTH_TEMPLATES = ("what colour is the object at the {c}?", "what is the colour of the {c} square?")
ANSWERS = sorted({*SCENES, *COLOURS, *OPPOSITES})  # the answer vocabulary (label ids)
OOD_SETS = {  # name -> (group, P(asked colour = corner prior), P(asked object = big one))
    "qt": ("language", 0.0, 0.7),
    "kw": ("language", 0.0, 0.7),
    "kwp": ("language", 0.0, 0.7),
    "qt_kw": ("language", 0.0, 0.7),
    "ko": ("visual", 0.7, 0.0),
    "kop": ("visual", 0.7, 0.0),
    "qt_ko": ("multimodal", 0.0, 0.0),
    "kw_ko": ("multimodal", 0.0, 0.0),
    "qt_kw_ko": ("multimodal", 0.0, 0.0),
}
ANNOTATORS = 10


def human_score(count: int) -> float:
    """VQA soft score of an answer ``count`` of the ten annotators gave: ``min(1, count / 3)``."""
    return min(1.0, count / 3.0)


def draw_image(scene: str, objects: list[tuple[str, str, bool]], size: int, rng: np.random.Generator) -> bytes:
    """JPEG of a background and squares ``(corner, colour, big)``; mild pixel noise."""
    from PIL import Image

    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = SCENES[scene]
    half = size // 2
    for corner, colour, big in objects:
        side = int(half * (0.8 if big else 0.45))
        top = (0 if corner.startswith("top") else half) + (half - side) // 2
        left = (0 if corner.endswith("left") else half) + (half - side) // 2
        img[top : top + side, left : left + side] = COLOURS[colour]
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def annotate(answer: str, confusions: list[str], rng: np.random.Generator) -> tuple[list[str], list[float]]:
    """Ten annotators: most give ``answer``, a few a confusable one. Returns the distinct
    answers (most given first) and their soft scores."""
    wrong = int(rng.choice([0, 0, 0, 1, 1, 2]))
    given = [answer] * (ANNOTATORS - wrong) + [str(rng.choice(confusions)) for _ in range(wrong)]
    counts = Counter(given)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return ranked, [human_score(counts[a]) for a in ranked]


def make_question(
    kind: str, scene: str, objects: list[tuple[str, str, bool]], asked: int, rng: np.random.Generator
) -> tuple[str, str, list[str]]:
    """(question, answer, confusable answers) of one kind about one image."""
    if kind == "image":
        return str(rng.choice(IMAGE_TEMPLATES)), scene, [s for s in SCENES if s != scene]
    if kind == "text":
        w = str(rng.choice(sorted(OPPOSITES)))
        return str(rng.choice(TEXT_TEMPLATES)).format(w=w), OPPOSITES[w], [w]
    corner, colour, _ = objects[asked]
    return str(rng.choice(BOTH_TEMPLATES)).format(c=corner), colour, [o[1] for o in objects if o[1] != colour]


def make_scene(rng: np.random.Generator, lang: float, vis: float) -> tuple[str, list[tuple[str, str, bool]], int]:
    """A background, two squares ``(corner, colour, big)`` and which one "both" asks about."""
    scene = str(rng.choice(sorted(SCENES)))
    corners = [str(c) for c in rng.choice(CORNERS, size=2, replace=False)]
    asked = 0 if rng.random() < vis else 1  # object 0 is the big one
    prior = CORNER_PRIOR[corners[asked]]
    if rng.random() < lang:
        colour = prior
    else:
        colour = str(rng.choice([c for c in COLOURS if c != prior]))
    other = str(rng.choice([c for c in COLOURS if c != colour]))
    colours = [colour, other] if asked == 0 else [other, colour]
    return scene, [(corners[0], colours[0], True), (corners[1], colours[1], False)], asked


def make_rows(
    n_images: int,
    split: str,
    rng: np.random.Generator,
    lang: float,
    vis: float,
    kinds: tuple[str, ...],
    questions: int,
    size: int,
    first_image_id: int,
) -> dict[str, list[Any]]:
    label = {a: i for i, a in enumerate(ANSWERS)}
    cols: dict[str, list[Any]] = {
        k: [] for k in ("image", "questions", "answers", "answer_labels", "answer_scores", "image_id", "question_id")
    }
    for i in range(n_images):
        scene, objects, asked = make_scene(rng, lang, vis)
        image_id = first_image_id + i
        qs, ans, labs, scores, qids = [], [], [], [], []
        for j in range(questions):
            kind = str(rng.choice(kinds))
            text, answer, confusions = make_question(kind, scene, objects, asked, rng)
            given, soft = annotate(answer, confusions, rng)
            qs.append(text)
            ans.append(given)
            labs.append([label[a] for a in given])
            scores.append(soft)
            qids.append(image_id * 10 + j)
        cols["image"].append(draw_image(scene, objects, size, rng))
        cols["questions"].append(qs)
        cols["answers"].append(ans)
        cols["answer_labels"].append(labs)
        cols["answer_scores"].append(scores)
        cols["image_id"].append(image_id)
        cols["question_id"].append(qids)
    cols["split"] = [split] * n_images
    return cols


SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("questions", pa.list_(pa.string())),
        ("answers", pa.list_(pa.list_(pa.string()))),
        ("answer_labels", pa.list_(pa.list_(pa.int64()))),
        ("answer_scores", pa.list_(pa.list_(pa.float64()))),
        ("image_id", pa.int64()),
        ("question_id", pa.list_(pa.int64())),
        ("split", pa.string()),
    ]
)


def write_sample(
    out: str | Path,
    train: int = 1200,
    val: int = 200,
    test: int = 300,
    ood: int = 100,
    questions: int = 3,
    size: int = 48,
    lang: float = 0.7,
    vis: float = 0.7,
    seed: int = 0,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``vqavs_{train,val,test_iid}.arrow`` and the nine ``vqavs_test_<ood>.arrow``
    (``files`` renames them: split or OOD name -> file stem). ``train``/``val``/``test``/``ood``
    are numbers of images. Returns ``out``."""
    root = Path(out)
    names = {"train": "vqavs_train", "val": "vqavs_val", "test": "vqavs_test_iid"}
    names.update({k: f"vqavs_test_{k}" for k in OOD_SETS})
    names.update(dict(files or {}))
    mixed = ("image", "text", "both")
    plan: list[tuple[str, int, float, float, tuple[str, ...]]] = [
        ("train", train, lang, vis, mixed),
        ("val", val, lang, vis, mixed),
        ("test", test, lang, vis, mixed),
    ]
    plan += [(k, ood, g_lang, g_vis, ("both",)) for k, (_, g_lang, g_vis) in OOD_SETS.items()]
    next_id = 1
    for k, (name, n, p_lang, p_vis, kinds) in enumerate(plan):
        rng = np.random.default_rng([seed, k])
        split = name if name in ("train", "val") else "test"
        cols = make_rows(n, split, rng, p_lang, p_vis, kinds, questions, size, next_id)
        next_id += n
        write_arrow(root / f"{names[name]}.arrow", pa.table(cols, schema=SCHEMA))
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="write a small VQA-VS sample in the ViLT Arrow layout")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=1200, help="training images (3 questions each)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(write_sample(args.out, train=args.train, seed=args.seed))


if __name__ == "__main__":
    main()
