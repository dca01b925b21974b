"""Known-answer tests of ``benchmarks/real_data.py`` and its helper ``real_data_sources.py``.

Pure functions only, on tiny hand-made inputs: no Ray, no pipeline, no speech engine, no
download. (Building the real data sets is exercised by running the script; see its docstring.)
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from i2m2_ray.data.avmnist import read_split, train_val_sizes
from i2m2_ray.data.mimic import read_source, task_labels, validate

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    """Import a benchmark script by path (``benchmarks/`` is not a package); registered in
    ``sys.modules`` so that ``real_data``'s ``import real_data_sources`` finds the helper."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


src = _load("real_data_sources")
rd = _load("real_data")

YEAR = 365.25


# ---- spectrograms ----------------------------------------------------------------------


def test_spectrogram_is_uint8_112x112_spanning_0_to_255_with_a_tone_in_its_row() -> None:
    rate = 8000
    t = np.arange(rate // 2) / rate
    clip = np.concatenate([np.sin(2 * np.pi * 1000 * t), np.zeros(rate // 2)])  # 1 kHz, then silence
    spec = src.log_spectrogram_uint8(clip)
    assert spec.shape == (112, 112) and spec.dtype == np.uint8
    assert spec.max() == 255 and spec.min() == 0  # the peak, and silence 80 dB below it
    # 222-sample frames: bin k is k * 8000 / 222 Hz, so 1 kHz is bin 27.75 -> row 28
    assert int(spec[:, :40].mean(axis=1).argmax()) == 28
    assert (spec[:, -40:] == 0).all()  # the silent half


def test_spectrogram_of_silence_is_zero_and_short_clips_are_padded() -> None:
    assert (src.log_spectrogram_uint8(np.zeros(8000)) == 0).all()
    short = src.log_spectrogram_uint8(np.ones(50), side=8)
    assert short.shape == (8, 8) and short.dtype == np.uint8


def test_noise_is_mixed_at_the_requested_snr() -> None:
    word = np.ones(400, dtype=np.float32)
    spec = src.ClipSpec(
        digit=3, engine="espeak-ng", voice="en-us+m1", rate=150, pitch=50, perturb=1.0,
        onset=0.5, snr_db=20.0, colour=0.0, noise_seed=7,
    )  # fmt: skip
    mixed = src.place_and_mix(word, spec, 1000)
    noise = mixed.copy()
    noise[300:700] -= 1.0  # the word (RMS 1) sits in the middle of the free 600 samples
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(0.1, rel=1e-4)  # 20 dB below the word


# ---- images --------------------------------------------------------------------------


def test_remove_energy_keeps_the_leading_components() -> None:
    # two directions: variance 9 along pixel 0, 1 along pixel 1 -> the first explains 90%
    train = np.array([[100 + 3 * a, 100 + b, 50] for a in (-1, 1) for b in (-1, 1)], dtype=np.float64)
    test = np.array([[103.0, 101.0, 50.0]])
    tr, te, k, kept = src.remove_energy(train, test, keep=0.5)
    assert k == 1 and kept == pytest.approx(0.9)
    assert tr.dtype == np.uint8 and tr.shape == train.shape
    np.testing.assert_array_equal(te, [[103, 100, 50]])  # pixel 1's deviation is removed
    assert src.remove_energy(train, test, keep=1.0)[2] == 2


# ---- AV-MNIST files ------------------------------------------------------------------


def test_avmnist_writer_gives_files_read_split_accepts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        digits = np.arange(n) % 10
        return rng.integers(0, 256, (n, 784)), rng.integers(0, 256, (n, 112, 112)), digits

    src.write_avmnist(tmp_path, {"train": split(24), "test": split(5)})
    _, train_digits = read_split(tmp_path, "train")
    paths, test_digits = read_split(tmp_path, "test")
    assert len(train_digits) == 24 and len(test_digits) == 5
    assert train_val_sizes(len(train_digits)) == (22, 2)
    assert np.load(paths["audio"]).dtype == np.uint8 and np.load(paths["image"]).shape == (5, 784)
    np.testing.assert_array_equal(test_digits, [0, 1, 2, 3, 4])
    # the real sizes: 4,364 rows -> 4,000 training and 364 validation rows
    assert train_val_sizes(4364) == (4000, 364)


def test_speakers_are_disjoint_and_clip_commands_are_well_formed() -> None:
    speakers = src.split_speakers(seed=3)
    assert not set(speakers["train"]) & set(speakers["test"])
    for side in speakers.values():
        assert {s.engine for s in side} == {"espeak-ng", "flite"}
    plan = src.plan_clips([7] * 40, speakers["test"], np.random.default_rng(0), (0.0, 10.0))
    assert plan == src.plan_clips([7] * 40, speakers["test"], np.random.default_rng(0), (0.0, 10.0))
    test_names = {s.name for s in speakers["test"]}
    for spec in plan:
        cmd = src.synth_command(spec, Path("x.wav"))
        assert cmd[-1] == "seven" or cmd[cmd.index("-t") + 1] == "seven"
        if spec.engine == "espeak-ng":
            accent, variant = spec.voice.split("+")
            assert accent in src.ESPEAK_ACCENTS and variant in test_names
        else:
            assert any(spec.voice in src.FLITE_SPEAKERS[n] for n in test_names if n in src.FLITE_SPEAKERS)
        assert 0 <= spec.snr_db <= 10


# ---- MIMIC mapping -------------------------------------------------------------------


def test_death_times_map_to_mortality_classes() -> None:
    days = np.array([100, YEAR, 400, 2.5 * YEAR, 4 * YEAR, 9 * YEAR, 11 * YEAR, 100])
    died = np.array([True, True, True, True, True, True, True, False])  # the last is censored
    flags = src.mortality_flags(days, died)
    assert flags.shape == (8, 6) and set(np.unique(flags)) <= {0, 1}
    arrays = {"adm_labels_all": flags, "y_icd9": np.zeros((8, 20), np.uint8)}
    # <=1y, exactly 1y, <=2y, <=3y, <=5y, <=10y, after 10y, censored
    np.testing.assert_array_equal(task_labels(arrays, "mortality", "test"), [1, 1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(flags[:, 0], [1, 1, 1, 0, 0, 0, 0, 0])  # died within the 24-month window
    assert (np.diff(flags[:, 1:].astype(int), axis=1) >= 0).all()  # cumulative, as MIMIC's flags


def test_visits_are_carried_forward_on_monthly_steps() -> None:
    days = np.array([40.0, 0.0, 800.0])  # any order; day 800 is after the 24-month window
    values = np.array([[2.0, 5.0], [1.0, np.nan], [9.0, 9.0]])
    series = src.visits_to_series(days, values)
    assert series.shape == (24, 2) and series.dtype == np.float32
    np.testing.assert_array_equal(series[0], [1.0, np.nan])  # month 0: only day 0, its second value missing
    np.testing.assert_array_equal(series[1:], np.tile([2.0, 5.0], (23, 1)))  # day 40 is in month 1


def _pbc_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two patients in the columns of survival::pbcseq and survival::pbc."""
    nan = np.nan
    visits = pd.DataFrame(
        {
            "id": [1, 1, 2, 2, 2], "futime": [400, 400, 5000, 5000, 5000], "status": [2, 2, 1, 1, 1],
            "trt": [1, 1, 0, 0, 0], "age": [58.5, 58.5, 40.0, 40.0, 40.0], "sex": ["f", "f", "m", "m", "m"],
            "day": [0, 192, 0, 365, 900], "ascites": [1.0, 1.0, 0.0, nan, 1.0], "hepato": [1.0] * 5,
            "spiders": [0.0] * 5, "edema": [0.5] * 5, "bili": [14.5, 21.3, 1.1, 1.0, 3.0],
            "chol": [261.0, nan, nan, 300.0, nan], "albumin": [2.6] * 5, "alk.phos": [1718.0] * 5,
            "ast": [138.0] * 5, "platelet": [190.0] * 5, "protime": [12.2] * 5, "stage": [4, 4, 3, 3, 3],
        }
    )  # fmt: skip
    baseline = pd.DataFrame(
        {"id": [2, 1, 3], "trt": [2.0, 1.0, nan], "age": [40.0, 58.5, 70.0], "sex": ["m", "f", "f"],
         "copper": [54.0, 156.0, nan], "trig": [nan, 172.0, 1.0]}
    )  # fmt: skip
    return visits, baseline


def test_pbc_cohort_maps_to_the_mimic_arrays(tmp_path: Path) -> None:
    arrays = src.pbc_to_mimic(*_pbc_frames())
    assert validate(arrays, "hand-made") == 2
    np.testing.assert_allclose(arrays["adm_features_all"], [[58.5, 1, 1, 156, 172], [40, 0, 0, 54, np.nan]])
    series = arrays["ep_tdata"]
    assert series.shape == (2, 24, 12)
    bili, chol = src.SERIES_VARIABLES.index("bili"), src.SERIES_VARIABLES.index("chol")
    assert series[0, 5, bili] == 14.5 and series[0, 6, bili] == 21.3  # day 192 falls in month 6
    assert series[0, 23, chol] == 261.0  # carried forward past the visit that missed it
    assert np.isnan(series[1, 10, chol]) and series[1, 11, chol] == 300.0  # unmeasured until day 365 (month 11)
    assert series[1, 23, bili] == 1.0  # the day-900 visit lies after the window
    np.testing.assert_array_equal(task_labels(arrays, "mortality", "x"), [2, 0])  # died on day 400; transplanted
    np.testing.assert_array_equal(arrays["y_icd9"][:, 1], [0, 1])  # transplant
    np.testing.assert_array_equal(arrays["y_icd9"][:, 7], [0, 1])  # ascites after month 24 (day 900)
    assert arrays["y_icd9"].sum() == 2
    path = tmp_path / "im.npz"
    np.savez(path, **arrays)
    assert validate(read_source(path), str(path)) == 2  # the project's reader takes the file


def test_pbc_join_refuses_mismatched_patients() -> None:
    visits, baseline = _pbc_frames()
    baseline.loc[baseline["id"] == 2, "age"] = 41.0
    with pytest.raises(src.SourceError, match="disagree"):
        src.pbc_to_mimic(visits, baseline)


def test_restricted_unpickler_refuses_anything_but_data() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        src.restricted_load(pickle.dumps(Evil()), src.PANDAS_GLOBALS)
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(src.restricted_load(pickle.dumps(arr), src.NUMPY_GLOBALS), arr)


def test_requirements_file_pins_the_wheels_the_builder_reads() -> None:
    lines = [ln.split("#")[0].strip() for ln in (BENCH / "requirements-realdata.txt").read_text().splitlines()]
    pins = {ln.split()[0]: ln.split("--hash=sha256:")[1] for ln in lines if ln}
    assert pins == {w.requirement: w.sha256 for w in src.WHEELS}


# ---- run and table -------------------------------------------------------------------


def _write_summaries(root: Path, experiment: str, values: dict[int, dict[str, float]], metric: str) -> None:
    for seed, by_paradigm in values.items():
        d = rd.seed_dir(root, experiment, seed)
        d.mkdir(parents=True)
        summary = {p: {metric: v, "wall_seconds": 10.0 + seed} for p, v in by_paradigm.items()}
        (d / "summary.json").write_text(json.dumps(summary))
        record = {"wall_seconds": 100.0 + seed, "load_before": 1.0, "load_after": 2.5, "data_dir": str(root / "data")}
        (d / rd.RUN_RECORD).write_text(json.dumps(record))


def test_table_gives_mean_std_chance_and_i2m2_verdicts(tmp_path: Path) -> None:
    values = {
        0: {"unimodal_image": 0.50, "unimodal_audio": 0.30, "inter": 0.55, "intra": 0.52, "i2m2": 0.50},
        1: {"unimodal_image": 0.60, "unimodal_audio": 0.30, "inter": 0.58, "intra": 0.60, "i2m2": 0.60},
        2: {"unimodal_image": 0.70, "unimodal_audio": 0.30, "inter": 0.60, "intra": 0.65, "i2m2": 0.70},
    }
    _write_summaries(tmp_path, "avmnist", values, "accuracy")
    # test labels with a 40% majority class -> chance 0.4
    digits = np.array([1, 1, 2, 3, 4])
    src.write_avmnist(tmp_path / "data", {
        "train": (np.zeros((12, 784)), np.zeros((12, 112, 112)), np.arange(12) % 10),
        "test": (np.zeros((5, 784)), np.zeros((5, 112, 112)), digits),
    })  # fmt: skip
    table = rd.table_from_outputs(tmp_path, "avmnist", [0, 1, 2])
    rows: dict[str, str] = {}
    for ln in table.splitlines():  # the first table: paradigm | seeds | mean ± std
        if ln.startswith("| "):
            rows.setdefault(ln.split(" | ")[0].lstrip("| "), ln)
    assert rows["unimodal_image"].endswith("| 0.600 ± 0.100 |")  # sample std (ddof=1) of .5 .6 .7
    assert rows["unimodal_audio"].endswith("| 0.300 ± 0.000 |")
    assert "Chance (majority-class rate of the test labels): 0.400" in table
    assert "| unimodal_image | 0.600 | +0.200 | 3/3 |" in table
    assert "| unimodal_audio | 0.300 | -0.100 | 0/3 |" in table
    assert "| 0 | 0.500 | 0.550 (inter) | no | 100 | 1.0 → 2.5 |" in table
    assert "| 1 | 0.600 | 0.600 (unimodal_image) | yes | 101 |" in table  # a tie counts as >=
    assert "I2M2 >= every other paradigm on 2 of 3 seeds." in table


def test_main_metric_and_task_follow_the_overrides() -> None:
    assert rd.task_from_overrides([]) == "mortality"
    assert rd.task_from_overrides(["train.epochs=3", "data.options.task=icd9_7"]) == "icd9_7"
    assert rd.task_from_overrides(["data.options={task: icd9_1, split_seed: 3}"]) == "icd9_1"
    assert rd.main_metric("avmnist") == "accuracy"
    assert rd.main_metric("mimic", "mortality") == "accuracy"
    assert rd.main_metric("mimic", "icd9_1") == "auprc"
    assert rd.split_seed_from_overrides(["data.options.split_seed=4"]) == 4


def test_mimic_chance_is_the_positive_rate_for_auprc(tmp_path: Path) -> None:
    n = 40
    flags = np.zeros((n, 6), np.uint8)
    icd9 = np.zeros((n, 20), np.uint8)
    icd9[:, 1] = np.arange(n) % 4 == 0
    arrays = {"ep_tdata": np.zeros((n, 24, 12)), "adm_features_all": np.zeros((n, 5)), "adm_labels_all": flags,
              "y_icd9": icd9}  # fmt: skip
    np.savez(tmp_path / "im.npz", **arrays)
    from i2m2_ray.data.mimic import split_rows

    test_rows = split_rows(n)["test"]
    assert rd.chance_level("mimic", tmp_path, "icd9_1") == pytest.approx(icd9[test_rows, 1].mean())
    assert rd.chance_level("mimic", tmp_path / "im.npz", "mortality") == 1.0  # nobody died


def test_dry_run_prints_one_command_per_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd.main(["run", "avmnist", "--data-dir", "/d", "--seeds", "0", "2", "--output-root", str(tmp_path),
             "--set", "train.epochs=2", "data.options.audio_pool=4", "--dry-run"])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and not any(tmp_path.iterdir())  # nothing ran, nothing written
    assert "experiments/avmnist.py --data-dir /d --seed 2 --output-dir" in lines[1]
    assert f"{tmp_path}/avmnist-seed2 --set train.epochs=2 --set data.options.audio_pool=4" in lines[1]


FAKE_EXPERIMENT = """
import argparse, json, pathlib
p = argparse.ArgumentParser()
p.add_argument("--data-dir"); p.add_argument("--seed", type=int); p.add_argument("--output-dir")
p.add_argument("--config"); p.add_argument("--set", action="append", default=[])
a = p.parse_args()
out = pathlib.Path(a.output_dir)
acc = {"unimodal_static": 0.6, "unimodal_timeseries": 0.62, "inter": 0.63, "intra": 0.64, "i2m2": 0.6 + 0.05 * a.seed}
summary = {k: {"accuracy": v, "auprc": v / 2, "wall_seconds": 1.0} for k, v in acc.items()}
(out / "summary.json").write_text(json.dumps(summary))
(out / "args.json").write_text(json.dumps(vars(a)))
"""


def test_run_times_each_seed_then_tables_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` on a stand-in experiment script (no Ray): one subprocess per seed, its record,
    and the table with the task read from ``--set``."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mimic.py").write_text(FAKE_EXPERIMENT)
    monkeypatch.setattr(rd, "REPO", tmp_path)
    n = 40
    icd9 = np.zeros((n, 20), np.uint8)
    icd9[::2, 7] = 1
    arrays = {"ep_tdata": np.zeros((n, 24, 12)), "adm_features_all": np.zeros((n, 5)),
              "adm_labels_all": np.zeros((n, 6), np.uint8), "y_icd9": icd9}  # fmt: skip
    np.savez(tmp_path / "im.npz", **arrays)
    root = tmp_path / "out"
    rd.main(["run", "mimic", "--data-dir", str(tmp_path / "im.npz"), "--seeds", "0", "1", "--output-root", str(root),
             "--set", "data.options.task=icd9_7", "train.epochs=1"])  # fmt: skip
    printed = capsys.readouterr().out
    record = json.loads((root / "mimic-seed1" / rd.RUN_RECORD).read_text())
    assert record["returncode"] == 0 and record["task"] == "icd9_7" and record["wall_seconds"] > 0
    args = json.loads((root / "mimic-seed1" / "args.json").read_text())
    assert args["seed"] == 1 and args["set"] == ["data.options.task=icd9_7", "train.epochs=1"]
    assert "### mimic (icd9_7): test auprc, seeds 0, 1" in printed
    assert "| i2m2 | 0.300 | 0.325 | 0.312 ± 0.018 |" in printed  # auprc = accuracy / 2 in the stand-in
    assert "I2M2 >= every other paradigm on 1 of 2 seeds." in printed  # seed 1: 0.325 >= intra's 0.320
    # the table again from the outputs alone: the task and data folder come from the records
    rd.main(["table", "mimic", "--output-root", str(root), "--seeds", "0", "1"])
    assert capsys.readouterr().out.strip() == printed.split("mimic seed 1: exit 0")[1].split("\n", 1)[1].strip()
