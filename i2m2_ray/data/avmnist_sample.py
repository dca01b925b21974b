"""Write a small AV-MNIST sample in the MultiBench layout.

Files (exactly the real layout)::

    <out>/image/train_data.npy   (N_train, 784)      float32, grey values 0-255
    <out>/image/test_data.npy    (N_test, 784)       float32
    <out>/audio/train_data.npy   (N_train, 112, 112) uint8 spectrograms 0-255
    <out>/audio/test_data.npy    (N_test, 112, 112)  uint8
    <out>/train_labels.npy       (N_train,)          int64 digits 0-9
    <out>/test_labels.npy        (N_test,)           int64

What it plants, so that the paradigms differ. Each digit ``y = u + 5 v`` is made of a
*shape* ``u`` in 0..4 and a *parity* bit ``v``:

* ``u`` -- in each modality alone, and better in both: the image holds a 14x14 patch of one
  of five textures (horizontal, vertical, ``/`` and ``\\`` stripes, checkerboard; period 4
  pixels), the spectrogram one of five coarse shapes (tone = horizontal band, click =
  vertical band, up-chirp, down-chirp, burst = disc; bands 8 pixels thick, so they survive
  4x4 pooling). Each cue is drawn at a random place with a random strength, and is missing
  with probability 0.25 (independently per modality), so one modality names ``u`` about
  80% of the time and the two together about 95%.
* ``v`` -- only in the combination: the image background is dark or mid-grey (``s_img``),
  the spectrogram's noise floor quiet or loud (``s_aud``), each a fair coin; ``v = s_img XOR
  s_aud``. Either modality alone carries no information on ``v``, and a product of
  unimodal experts cannot express an exclusive or.

So a unimodal expert reaches about 0.4 accuracy, the intra product about 0.47, and only a
model that sees both modalities jointly (inter, I2M2) can approach 0.95. Noise (Gaussian,
sd 20 in the image, 25 in the spectrogram) is drawn for each modality separately.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

IMAGE_SIDE = 28
AUDIO_SIDE = 112
SHAPES = 5  # values of u; y = u + 5 v
# background levels for s = 0 / 1 (the parity cue), noise sd, strength range and presence
# probability of the shape cue, for the image and the spectrogram
IMAGE_BACKGROUND, AUDIO_BACKGROUND = (30.0, 90.0), (30.0, 100.0)
IMAGE_NOISE, AUDIO_NOISE = 20.0, 25.0
CUE_STRENGTH = ((90.0, 150.0), (90.0, 150.0))  # for s = 0 / 1
CUE_PRESENT = 0.75


def image_textures(size: int = 14) -> np.ndarray:
    """Five 0/1 texture patches ``(5, size, size)``: -, |, /, \\ stripes and a checkerboard."""
    yy, xx = np.mgrid[:size, :size]
    return np.stack(
        [
            (yy // 2) % 2 == 0,
            (xx // 2) % 2 == 0,
            ((xx + yy) // 2) % 2 == 0,
            ((xx - yy) // 2) % 2 == 0,
            (xx // 2 + yy // 2) % 2 == 0,
        ]
    ).astype(np.float32)


def audio_shapes(size: int = 64, thick: int = 8) -> np.ndarray:
    """Five 0/1 spectrogram shapes ``(5, size, size)``: tone, click, up-chirp, down-chirp, burst."""
    yy, xx = np.mgrid[:size, :size]
    mid = size // 2
    half = thick / 2
    return np.stack(
        [
            np.abs(yy - mid) < half,
            np.abs(xx - mid) < half,
            np.abs((size - 1 - yy) - xx) < half * 1.4,
            np.abs(yy - xx) < half * 1.4,
            (yy - mid) ** 2 + (xx - mid) ** 2 < (size * 0.3) ** 2,
        ]
    ).astype(np.float32)


def synth(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` samples: images ``(n, 784)`` float32, spectrograms ``(n, 112, 112)`` uint8,
    digits ``(n,)`` int64 (see the module docstring for the cues)."""
    textures = image_textures()
    shapes = audio_shapes()
    u = rng.integers(SHAPES, size=n)
    s_img = rng.integers(2, size=n)
    s_aud = rng.integers(2, size=n)
    y = u + SHAPES * (s_img ^ s_aud)

    image = np.asarray(IMAGE_BACKGROUND)[s_img][:, None, None] + IMAGE_NOISE * rng.standard_normal(
        (n, IMAGE_SIDE, IMAGE_SIDE)
    )
    audio = np.asarray(AUDIO_BACKGROUND)[s_aud][:, None, None] + AUDIO_NOISE * rng.standard_normal(
        (n, AUDIO_SIDE, AUDIO_SIDE)
    )
    show_img = rng.random(n) < CUE_PRESENT
    show_aud = rng.random(n) < CUE_PRESENT
    ti, ta = textures.shape[-1], shapes.shape[-1]
    for i in range(n):
        if show_img[i]:
            r, c = rng.integers(0, IMAGE_SIDE - ti + 1, size=2)
            image[i, r : r + ti, c : c + ti] += rng.uniform(*CUE_STRENGTH[s_img[i]]) * textures[u[i]]
        if show_aud[i]:
            r, c = rng.integers(0, AUDIO_SIDE - ta + 1, size=2)
            audio[i, r : r + ta, c : c + ta] += rng.uniform(*CUE_STRENGTH[s_aud[i]]) * shapes[u[i]]
    image_flat = np.clip(image, 0, 255).astype(np.float32).reshape(n, IMAGE_SIDE * IMAGE_SIDE)
    audio_u8 = np.clip(np.rint(audio), 0, 255).astype(np.uint8)
    return image_flat, audio_u8, y.astype(np.int64)


def write_sample(out_dir: str | Path, train: int = 6000, test: int = 1500, seed: int = 0) -> Path:
    """Write the sample (``train`` rows in the train files, ``test`` in the test files);
    return ``out_dir``. Rows are generated and written in chunks, so real-size samples
    (60,000 + 10,000) fit in little memory."""
    if train < 12 or test < 1:
        raise ValueError(f"need train >= 12 (so that validation is not empty) and test >= 1; got {train}, {test}")
    root = Path(out_dir)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        img = np.lib.format.open_memmap(
            root / "image" / f"{split}_data.npy", mode="w+", dtype=np.float32, shape=(n, IMAGE_SIDE**2)
        )
        aud = np.lib.format.open_memmap(
            root / "audio" / f"{split}_data.npy", mode="w+", dtype=np.uint8, shape=(n, AUDIO_SIDE, AUDIO_SIDE)
        )
        labels = np.empty(n, dtype=np.int64)
        for start in range(0, n, 2000):
            stop = min(n, start + 2000)
            img[start:stop], aud[start:stop], labels[start:stop] = synth(rng, stop - start)
        img.flush()
        aud.flush()
        del img, aud
        np.save(root / f"{split}_labels.npy", labels)
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write an AV-MNIST sample in the MultiBench layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=6000, help="rows of the train files (55/60 train, 5/60 validation)")
    p.add_argument("--test", type=int, default=1500, help="rows of the test files")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(write_sample(args.out, args.train, args.test, args.seed))


if __name__ == "__main__":
    main()
