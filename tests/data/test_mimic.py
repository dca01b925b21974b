import pickle
from pathlib import Path

import numpy as np
import pytest

from i2m2_ray.cli import build_parser, resolve_config
from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.data import get_dataset
from i2m2_ray.data.base import DataError
from i2m2_ray.data.mimic import (
    KEYS,
    convert,
    main,
    mortality_class,
    prepare,
    read_source,
    resolve_source,
    split_rows,
    task_labels,
    validate,
    zscore_stats,
)
from i2m2_ray.data.mimic_sample import synth, write_sample

OVERRIDES = ["model.encoder=mlp_gru", "model.inter_fusion=concat", "model.width=4", "model.hidden=[4]"]


def arrays(n: int = 50, label_dtype: type = np.float64) -> dict[str, np.ndarray]:
    """Hand-made arrays: static feature f of sample i is i + 100 f, series value (i, t, c)
    is i + t + 10 c; sample i dies within horizon (i % 6) (0: survives)."""
    i = np.arange(n, dtype=np.float64)
    static = i[:, None] + 100 * np.arange(5)[None]
    series = i[:, None, None] + np.arange(24)[None, :, None] + 10 * np.arange(12)[None, None, :]
    adm = np.zeros((n, 6))
    for k in range(1, 6):
        adm[:, k] = (i % 6 >= 1) & (i % 6 <= k)
    icd = np.zeros((n, 20))
    icd[:, 1] = i % 2
    icd[:, 7] = i % 3 == 0
    return {
        "ep_tdata": series,
        "adm_features_all": static,
        "adm_labels_all": adm.astype(label_dtype),
        "y_icd9": icd.astype(label_dtype),
    }


def write_pickle(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(data, fh)
    return path


def collect(ds) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---- labels, split, statistics -----------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.int64, bool])
def test_mortality_rule_edge_cases(dtype: type) -> None:
    flags = np.array(
        [
            [0, 0, 0, 0, 0, 0],  # survived the year -> 0
            [1, 0, 0, 0, 0, 0],  # in-hospital death only: column 0 is not used -> 0
            [1, 1, 1, 1, 1, 1],  # died within a day (cumulative flags) -> 1
            [0, 0, 1, 1, 1, 1],  # within 2 days -> 2
            [1, 0, 0, 1, 1, 1],  # within 3 days -> 3
            [0, 0, 0, 0, 1, 1],  # within 30 days -> 4
            [0, 0, 0, 0, 0, 1],  # within a year -> 5
            [0, 0, 0, 1, 0, 0],  # not cumulative: the first positive still decides -> 3
            [0, 0, 1, 0, 1, 0],  # two positives -> the first -> 2
        ],
        dtype=dtype,
    )
    assert mortality_class(flags).tolist() == [0, 0, 1, 2, 3, 4, 5, 3, 2]
    labels = task_labels({"adm_labels_all": flags, "y_icd9": np.zeros((9, 20))}, "mortality", "f")
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 2, 3, 4, 5, 3, 2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, bool])
def test_icd9_labels_from_float_or_int_flags(dtype: type) -> None:
    a = arrays(12, label_dtype=dtype)
    assert task_labels(a, "icd9_1", "f").tolist() == [i % 2 for i in range(12)]
    assert task_labels(a, "icd9_7", "f").tolist() == [int(i % 3 == 0) for i in range(12)]
    assert task_labels(a, "mortality", "f").tolist() == [i % 6 for i in range(12)]


@pytest.mark.parametrize("bad", [2.0, 0.5, np.nan, -1.0])
def test_flags_other_than_0_or_1_are_named(bad: float) -> None:
    a = arrays(12)
    a["y_icd9"][4, 7] = bad
    with pytest.raises(DataError, match=r"im.pk: 'y_icd9\[:, 7\]' holds .* at index \(4,\); expected 0 or 1"):
        task_labels(a, "icd9_7", "im.pk")
    a["adm_labels_all"][3, 2] = bad
    with pytest.raises(DataError, match=r"'adm_labels_all\[:, 1:6\]' holds .* at index \(3, 1\)"):
        task_labels(a, "mortality", "im.pk")


@pytest.mark.parametrize("n", [10, 17, 100, 1000, 32_591])
def test_split_is_the_public_codes_python_shuffle(n: int) -> None:
    import random

    order = list(range(n))
    random.seed(10)  # exactly what the public code runs (the global generator)
    random.shuffle(order)
    rows = split_rows(n)
    np.testing.assert_array_equal(rows["val"], order[: n // 10])
    np.testing.assert_array_equal(rows["test"], order[n // 10 : n // 5])
    np.testing.assert_array_equal(rows["train"], order[n // 5 :])


def test_split_sizes_and_coverage() -> None:
    odd = split_rows(17)  # N // 10 = 1 for validation, test up to N // 5 = 3
    assert [len(odd[s]) for s in ("train", "val", "test")] == [14, 1, 2]
    assert sorted(np.concatenate(list(odd.values()))) == list(range(17))


def test_zscore_uses_training_rows_only() -> None:
    static = np.array([[0.0, 5.0], [2.0, 5.0], [100.0, 7.0]])
    series = np.zeros((3, 2, 1))
    series[:, 0, 0], series[:, 1, 0] = [1.0, 3.0, 50.0], [3.0, 5.0, 50.0]
    st = zscore_stats(static, series, np.array([0, 1]))
    np.testing.assert_allclose(st["static_mean"], [1.0, 5.0])
    np.testing.assert_allclose(st["static_std"], [1.0, 1.0])  # constant feature: sd 1, not 0
    np.testing.assert_allclose(st["series_mean"], [3.0])  # over samples and hours
    np.testing.assert_allclose(st["series_std"], [np.sqrt(2.0)])


# ---- sources: pickle, npz, conversion ----------------------------------------------


def test_pickle_needs_trust_and_converts_to_npz(tmp_path: Path) -> None:
    pk = write_pickle(tmp_path / "im.pk", arrays())
    with pytest.raises(DataError, match=r"im.pk: .*a pickle can run arbitrary code.*--trust-pickle.*convert"):
        read_source(pk)
    with pytest.raises(DataError, match="--trust-pickle"):
        convert(pk, tmp_path / "im.npz")
    npz = convert(pk, tmp_path / "im.npz", trust_pickle=True)
    with np.load(npz, allow_pickle=False) as f:  # readable without pickle
        assert sorted(f.files) == sorted(KEYS)
    back = read_source(npz)  # no trust needed
    for k, v in arrays().items():
        np.testing.assert_array_equal(back[k], v)
    assert resolve_source(tmp_path) == npz  # a folder: im.npz first
    (npz).unlink()
    assert resolve_source(tmp_path) == pk


def test_convert_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pk = write_pickle(tmp_path / "im.pk", arrays())
    assert main(["convert", str(pk), str(tmp_path / "out.npz")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(["convert", str(pk), str(tmp_path / "out.npz"), "--trust-pickle"]) == 0
    assert (tmp_path / "out.npz").is_file()


def test_missing_key_is_named(tmp_path: Path) -> None:
    a = arrays()
    del a["y_icd9"]
    pk = write_pickle(tmp_path / "im.pk", a)
    with pytest.raises(DataError, match=r"im.pk: missing key\(s\) \['y_icd9'\]"):
        read_source(pk, trust_pickle=True)
    np.savez(tmp_path / "x.npz", **a)
    with pytest.raises(DataError, match=r"x.npz: missing key\(s\) \['y_icd9'\]"):
        read_source(tmp_path / "x.npz")


def test_pickle_of_something_else_is_named(tmp_path: Path) -> None:
    pk = write_pickle(tmp_path / "im.pk", [1, 2, 3])
    with pytest.raises(DataError, match=r"im.pk: the pickle holds a list; expected a dict"):
        read_source(pk, trust_pickle=True)
    (tmp_path / "junk.pk").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"junk.pk: cannot be unpickled"):
        read_source(tmp_path / "junk.pk", trust_pickle=True)


def test_object_array_in_npz_is_refused(tmp_path: Path) -> None:
    a: dict[str, np.ndarray] = dict(arrays())
    a["y_icd9"] = np.array([None] * 50, dtype=object)
    np.savez(tmp_path / "x.npz", **a)
    with pytest.raises(DataError, match=r"x.npz: key 'y_icd9' holds Python objects"):
        read_source(tmp_path / "x.npz")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("ep_tdata", np.zeros((50, 24, 11)), r"'ep_tdata' has shape \(50, 24, 11\); expected \(N, 24, 12\)"),
        ("adm_features_all", np.zeros((50, 5, 1)), r"'adm_features_all' has shape \(50, 5, 1\); expected \(N, 5\)"),
        ("adm_labels_all", np.zeros((50, 5)), r"'adm_labels_all' has shape \(50, 5\); expected \(N, 6\)"),
        ("ep_tdata", np.zeros((50, 24, 12), dtype=np.complex64), r"'ep_tdata' has dtype complex64; expected"),
        ("adm_features_all", np.full((50, 5), "a"), r"'adm_features_all' has dtype <U1; expected"),
        ("adm_features_all", np.zeros((49, 5)), r"sample counts differ .*ep_tdata: 50, adm_features_all: 49"),
        ("y_icd9", np.zeros((51, 20)), r"sample counts differ .*y_icd9: 51"),
    ],
)
def test_bad_arrays_are_named(key: str, value: np.ndarray, message: str) -> None:
    a = arrays()
    a[key] = value
    with pytest.raises(DataError, match=r"^/data/im.pk: " + message):
        validate(a, "/data/im.pk")


def test_source_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"neither im.npz nor im.pk found"):
        resolve_source(tmp_path)
    with pytest.raises(DataError, match=r"nothing: file or folder not found"):
        resolve_source(tmp_path / "nothing")


# ---- Ray Data ----------------------------------------------------------------------


def test_prepare_cleans_scales_and_splits(ray_local: None, tmp_path: Path) -> None:
    a = arrays(50)
    a["ep_tdata"][7, 3, 11] = np.nan
    a["ep_tdata"][8, 0, 0] = np.inf
    a["adm_features_all"][9, 2] = -np.inf
    pk = write_pickle(tmp_path / "src" / "im.pk", a)
    with pytest.raises(DataError, match="--trust-pickle"):
        prepare(load_config(None, OVERRIDES), pk, tmp_path / "out")
    cfg = load_config(None, [*OVERRIDES, "data.options={trust_pickle: true, zscore: train}"])
    prepared = prepare(cfg, pk, tmp_path / "out")
    assert prepared.sizes == {"train": 40, "val": 5, "test": 5}
    assert dict(prepared.spec.heads) == {"mortality": 6}
    rows = split_rows(50)
    expected = np.bincount(np.arange(50)[rows["train"]] % 6, minlength=6)
    assert prepared.class_counts["mortality"] == expected.tolist()

    # statistics from the training rows, after NaN/inf -> 0
    static = a["adm_features_all"].copy()
    series = a["ep_tdata"].copy()
    static[~np.isfinite(static)] = 0
    series[~np.isfinite(series)] = 0
    tr = rows["train"]
    s_mean, s_std = static[tr].mean(0), static[tr].std(0)
    t_mean, t_std = series[tr].mean((0, 1)), series[tr].std((0, 1))
    for split in ("train", "val", "test"):
        batch = collect(prepared.datasets[split])
        assert set(batch) == {"static", "timeseries", "y_mortality"}
        assert batch["static"].shape[1:] == (5,) and batch["static"].dtype == np.float32
        assert batch["timeseries"].shape[1:] == (24, 12) and batch["timeseries"].dtype == np.float32
        assert batch["y_mortality"].dtype == np.int64
        # recover each sample's id from static feature 0 and check everything against it
        ids = np.rint(batch["static"][:, 0] * s_std[0] + s_mean[0]).astype(int)
        assert sorted(ids) == sorted(rows[split])
        np.testing.assert_array_equal(batch["y_mortality"], ids % 6)
        np.testing.assert_allclose(batch["static"], (static[ids] - s_mean) / s_std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batch["timeseries"], (series[ids] - t_mean) / t_std, rtol=1e-5, atol=1e-5)
        if split == "train":
            np.testing.assert_allclose(batch["static"].mean(0), 0, atol=1e-5)

    # the public code's statistics (the default): every row, before the split
    everyone = prepare(load_config(None, [*OVERRIDES, "data.options={trust_pickle: true}"]), pk, tmp_path / "out")
    assert everyone.info["zscore"] == "all"
    scaled = np.concatenate([collect(everyone.datasets[s])["static"] for s in ("train", "val", "test")])
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(0), 1, atol=1e-4)


def test_task_option_and_npz_source(ray_local: None, tmp_path: Path) -> None:
    np.savez(tmp_path / "im.npz", **arrays(30, label_dtype=np.int64))
    prepared = prepare(load_config(None, [*OVERRIDES, "data.options={task: icd9_7}"]), tmp_path, tmp_path / "out")
    assert dict(prepared.spec.heads) == {"icd9_7": 2}
    batch = collect(prepared.datasets["val"])
    assert set(batch) == {"static", "timeseries", "y_icd9_7"}
    ids = sorted(split_rows(30)["val"])
    assert sorted(batch["y_icd9_7"].tolist()) == sorted(int(i % 3 == 0) for i in ids)


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.options={task: icd9_2}", r"data.options.task: unknown task 'icd9_2'"),
        ("data.options={tsk: mortality}", r"unknown data.options key\(s\) \['tsk'\]"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, override: str, message: str) -> None:
    np.savez(tmp_path / "im.npz", **arrays(30))
    with pytest.raises(DataError, match=message):
        prepare(load_config(None, [*OVERRIDES, override]), tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.inter_fusion=early", r"differ in shape; use late fusion"),
        ("model.encoder=lenet", r"model.encoder='lenet' is not available for mimic"),
        ("model.options={series_readout: mean}", r"model.options.series_readout must be one of last, flatten, linear"),
        ("model.inter_expert={options: {readout_features: 0}}", r"model.options.readout_features must be a positive"),
    ],
)
def test_bad_model_settings_are_named(ray_local: None, tmp_path: Path, override: str, message: str) -> None:
    """The model section (the inter expert's too) is checked against the data's input facts
    (the encoder registry), before any training starts."""
    from i2m2_ray.models.registry import check_model

    np.savez(tmp_path / "im.npz", **arrays(30))
    cfg = load_config(None, ["experiment=mimic", *OVERRIDES, override])
    prepared = prepare(cfg, tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match=message):
        check_model(cfg, prepared.spec, prepared.info)


# ---- command line, encoders, generator ----------------------------------------------


def test_flags_map_to_config_keys() -> None:
    args = build_parser("mimic").parse_args(["--task", "icd9_1", "--trust-pickle", "--data-dir", "im.pk"])
    cfg = resolve_config("mimic", args)
    assert cfg.data.options["task"] == "icd9_1" and cfg.data.options["trust_pickle"] is True
    assert cfg.train.monitor == "auprc"  # the recipe selects ICD-9 models on validation AUPRC
    cfg = resolve_config("mimic", build_parser("mimic").parse_args([]))  # the demo config
    assert cfg.data.options["task"] == "mortality" and cfg.train.monitor == "balanced_accuracy"
    assert not cfg.data.options.get("trust_pickle", False)
    with pytest.raises(SystemExit):
        build_parser("mimic").parse_args(["--task", "icd9_3"])


def test_encoders_take_the_real_input_shapes() -> None:
    import torch

    from i2m2_ray.models.build import build_model
    from i2m2_ray.models.registry import encoder_factory
    from i2m2_ray.spec import TaskSpec

    # the facts MIMIC's data give the encoder registry
    build_encoder = encoder_factory({"inputs": {"static": [5], "timeseries": [24, 12]}})
    cfg = load_config(None, [*OVERRIDES, "model.hidden=[10, 10]", "model.width=30"]).model
    assert build_encoder(["static"], cfg).out_features == 10
    assert build_encoder(["timeseries"], cfg).out_features == 24 * 15  # per-step Linear(30 -> 15), flattened
    flat = load_config(None, [*OVERRIDES, "model.width=30", "model.options={series_readout: flatten}"]).model
    assert build_encoder(["timeseries"], flat).out_features == 24 * 30
    last = load_config(None, [*OVERRIDES, "model.width=30", "model.options={series_readout: last}"]).model
    assert build_encoder(["timeseries"], last).out_features == 30
    with pytest.raises(ValueError, match="one encoder per modality"):
        build_encoder(["static", "timeseries"], cfg)
    model = build_model("i2m2", TaskSpec(("static", "timeseries"), {"mortality": 6}), cfg, build_encoder)
    out = model({"static": torch.zeros(3, 5), "timeseries": torch.zeros(3, 24, 12)})
    assert out["mortality"].shape == (3, 6)


def test_generator_writes_the_format_and_plants_the_cues(tmp_path: Path) -> None:
    pk = write_sample(tmp_path / "im.pk", samples=400, seed=1)
    with pk.open("rb") as fh:
        data = pickle.load(fh)
    assert sorted(data) == sorted(KEYS)
    assert validate(data, str(pk)) == 400
    for k in KEYS:
        assert data[k].dtype == np.float64, k
    adm = data["adm_labels_all"]
    assert set(np.unique(adm)) <= {0.0, 1.0} and set(np.unique(data["y_icd9"])) <= {0.0, 1.0}
    assert np.all(np.diff(adm[:, 1:], axis=1) >= 0)  # cumulative horizons
    assert np.isnan(data["ep_tdata"]).any() and np.isinf(data["ep_tdata"]).any()
    y = mortality_class(adm)
    assert set(y) == set(range(6))
    assert ((adm[:, 0] == 1) & (y == 0)).any()  # in-hospital flag on a survivor: class 0
    # b (odd classes) is the agreement of the signs of static f1 - 1 and series c1
    agree = np.sign(data["adm_features_all"][:, 1] - 1) == np.sign(data["ep_tdata"][:, :, 1].mean(1))
    assert np.mean((y % 2 == 1) == agree) > 0.99
    for cue in (data["adm_features_all"][:, 1] > 1, data["ep_tdata"][:, :, 1].mean(1) > 0):
        assert abs((y % 2)[cue].mean() - (y % 2)[~cue].mean()) < 0.15  # one sign alone: no signal


def test_sample_is_deterministic() -> None:
    a, b = synth(np.random.default_rng(5), 20), synth(np.random.default_rng(5), 20)
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k])


def test_load_writes_the_sample_once_and_converts_it(ray_local: None, tmp_path: Path) -> None:
    cfg = load_config(None, [*OVERRIDES, "data.sample={samples: 60, seed: 0}"])
    dataset = get_dataset("mimic")
    prepared = dataset.load(cfg, tmp_path)
    assert prepared.sizes == {"train": 48, "val": 6, "test": 6}
    assert prepared.info["source"].endswith("im.npz")
    assert prepared.info["inputs"] == {"static": [5], "timeseries": [24, 12]}
    stamp = (tmp_path / "sample_data/im.npz").stat().st_mtime_ns
    dataset.load(cfg, tmp_path)
    assert (tmp_path / "sample_data/im.npz").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="--annotations is not used by mimic"):
        dataset.load(load_config(None, [*OVERRIDES, "data.annotations=x"]), tmp_path)


# ---- issue 16: sample settings, data.max_samples ----------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.sample={sampels: 300}", r"unknown data.sample key\(s\) \['sampels'\] for mimic; known: \['samples', "),
        ("data.sample={samples: 5}", r"data.sample.samples must be >= 10"),
        ("data.sample={samples: 3e2}", r"data.sample.samples must be a whole number >= 1, got '3e2'"),
    ],
)
def test_bad_sample_settings_are_named_before_writing(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_dataset("mimic").load(load_config(None, [*OVERRIDES, override]), tmp_path)
    assert not (tmp_path / "sample_data").exists()


def test_max_samples_caps_every_split(ray_local: None, tmp_path: Path) -> None:
    src = write_pickle(tmp_path / "im.pk", arrays(200))
    cfg = load_config(None, [*OVERRIDES, "data.options={trust_pickle: true}", "data.max_samples=7"])
    prepared = prepare(cfg, src, tmp_path / "out")
    assert prepared.sizes == {"train": 7, "val": 7, "test": 7} and sum(prepared.class_counts["mortality"]) == 7
    assert len(collect(prepared.datasets["val"])["static"]) == 7
