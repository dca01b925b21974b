"""How hard the generated fastMRI sample is for each paradigm, without Ray: slices are
generated in memory with :func:`i2m2_ray.data.fastmri_sample.synth_slice`, preprocessed by
the reader's own functions (truncated k-space -> zero-fill -> inverse FFT -> crop ->
magnitude / phase), and each paradigm's model (the demo's sizes) is trained by a plain
PyTorch loop with early stopping on the validation AUROC mean.

    python benchmarks/sample_difficulty.py --seed 0
    python benchmarks/sample_difficulty.py --cues '{"mag_noise": 0.15, "phase_noise": 0.25}'

Prints one JSON line: the cue strengths used and the test AUROC mean per paradigm. This is
how the sample's ``CUES`` were chosen (README, "The generated sample").
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from i2m2_ray.config import ModelConfig
from i2m2_ray.data import fastmri_sample
from i2m2_ray.data.fastmri import LABELS, MODALITIES, image_to_modalities, kspace_to_image
from i2m2_ray.models.build import build_model
from i2m2_ray.models.registry import encoder_factory
from i2m2_ray.spec import TaskSpec

HEIGHT, WIDTH, PAD, CROP = 128, 72, 80, 64  # the demo's sizes


def make_split(rng: np.random.Generator, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    kspace, labels = [], []
    for _ in range(n):
        image, lab, _ = fastmri_sample.synth_slice(rng, HEIGHT, PAD, CROP)
        kspace.append(fastmri_sample.image_to_kspace(image, WIDTH))
        labels.append([lab[h] for h in LABELS])
    mods = image_to_modalities(kspace_to_image(np.stack(kspace), PAD, CROP))
    return {k: torch.from_numpy(v) for k, v in mods.items()}, torch.tensor(labels)


def auroc_mean(model: torch.nn.Module, split: tuple[dict[str, torch.Tensor], torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        out = model(split[0])
    y = split[1].numpy()
    return float(
        np.mean([roc_auc_score(y[:, i], torch.softmax(out[h], -1)[:, 1].numpy()) for i, h in enumerate(LABELS)])
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cues", default="{}", help="JSON overrides of fastmri_sample.CUES")
    p.add_argument("--sizes", type=int, nargs=3, default=[420, 90, 300], help="train / val / test slices")
    p.add_argument("--epochs", type=int, default=20)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    fastmri_sample.CUES.update(json.loads(a.cues))
    rng = np.random.default_rng(a.seed)
    train, val, test = (make_split(rng, n) for n in a.sizes)
    spec = TaskSpec(("magnitude", "phase"), {h: 2 for h in LABELS})
    cfg = ModelConfig(width=8, blocks=[1, 1, 1], groups=4)
    build_encoder = encoder_factory({"inputs": {m: [1, CROP, CROP] for m in MODALITIES}})  # the data's facts
    result: dict[str, object] = {"cues": dict(fastmri_sample.CUES), "seed": a.seed}
    for paradigm in spec.paradigms():
        torch.manual_seed(a.seed)
        model = build_model(paradigm, spec, cfg, build_encoder)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        order = torch.Generator().manual_seed(a.seed)
        best, best_test, waited = -1.0, float("nan"), 0
        for _ in range(a.epochs):
            model.train()
            perm = torch.randperm(len(train[1]), generator=order)
            for i in range(0, len(perm), 32):
                idx = perm[i : i + 32]
                out = model({k: v[idx] for k, v in train[0].items()})
                loss = torch.stack([F.cross_entropy(out[h], train[1][idx, j]) for j, h in enumerate(LABELS)]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            score = auroc_mean(model, val)
            if score > best:
                best, best_test, waited = score, auroc_mean(model, test), 0
            else:
                waited += 1
                if waited >= 5:
                    break
        result[paradigm] = round(best_test, 4)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
