"""The dataset contract: lookup of the built-ins, registration by decorator, plugins (module,
environment variable), declared flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from i2m2_ray.config import ConfigError
from i2m2_ray.data import BUILTINS, Dataset, Flag, PreparedData, dataset_names, get_dataset, register_dataset
from i2m2_ray.data import registry as reg

from ..conftest import REPO


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_implements_the_protocol(name: str) -> None:
    dataset = get_dataset(name)
    assert isinstance(dataset, Dataset) and dataset.name == name
    assert all(isinstance(f, Flag) for f in dataset.flags)
    module = sys.modules[type(dataset).__module__]
    # what data modules no longer hold: encoders, argparse hooks, smoke settings, table columns
    for old in ("build_encoder", "check_model", "add_arguments", "argument_overrides", "SMOKE_OVERRIDES",
                "SUMMARY_COLUMNS", "load"):  # fmt: skip
        assert not hasattr(module, old), f"{module.__name__}.{old}"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope'; known: \['avmnist', 'fastmri', 'mimic',"):
        get_dataset("nope")
    assert set(BUILTINS) <= set(dataset_names())


def test_decorator_registers_and_refuses_a_second_class_under_a_taken_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "_registered", dict(reg._registered))

    @register_dataset("tiny_test")
    class Tiny(Dataset):
        def load(self, cfg: object, work_dir: Path) -> PreparedData:  # type: ignore[override]
            raise NotImplementedError

    assert isinstance(get_dataset("tiny_test"), Tiny) and Tiny.name == "tiny_test"
    assert "tiny_test" in dataset_names()
    with pytest.raises(ValueError, match="dataset 'tiny_test' is already registered by"):

        @register_dataset("tiny_test")
        class Other(Dataset):
            def load(self, cfg: object, work_dir: Path) -> PreparedData:  # type: ignore[override]
                raise NotImplementedError

    with pytest.raises(TypeError, match="has no load"):
        register_dataset("no_load")(type("NoLoad", (), {}))


def test_plugins_from_the_environment_are_imported_at_lookup() -> None:
    """``I2M2_PLUGINS`` names modules imported before a lookup (a fresh process: the
    discovery runs once per process)."""
    code = (
        "from i2m2_ray.data import get_dataset, dataset_names; "
        "assert 'toy' in dataset_names(); print(type(get_dataset('toy')).__module__)"
    )
    env = {"I2M2_PLUGINS": "tests.toy_dataset", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tests.toy_dataset"
    bad = subprocess.run(
        [sys.executable, "-c", "from i2m2_ray.data import get_dataset; get_dataset('toy')"],
        cwd=REPO,
        env={**env, "I2M2_PLUGINS": "no_such_module_here"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "I2M2_PLUGINS: cannot import plugin module 'no_such_module_here'" in bad.stderr


def test_datasets_of_installed_packages_come_from_entry_points(tmp_path: Path) -> None:
    """A package declares ``[project.entry-points."i2m2_ray.datasets"] toy = "tests.toy_dataset"``;
    here its installed metadata is written by hand."""
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[i2m2_ray.datasets]\ntoy = tests.toy_dataset\n")
    code = "from i2m2_ray.data import get_dataset; print(type(get_dataset('toy')).__qualname__)"
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Toy"


def test_flags_are_declared_data() -> None:
    task = Flag("--task", "data.options.task", choices=("a", "b"), implies={"b": ["train.monitor=auprc"]})
    assert task.overrides(None) == []
    assert task.overrides("a") == ["data.options.task=a"]
    assert task.overrides("b") == ["data.options.task=b", "train.monitor=auprc"]
    switch = Flag("--trust-pickle", "data.options.trust_pickle", switch=True)
    assert switch.overrides(False) == [] and switch.overrides(True) == ["data.options.trust_pickle=true"]
    mimic = {f.name: f for f in get_dataset("mimic").flags}
    assert set(mimic) == {"--task", "--trust-pickle"}
    assert mimic["--task"].overrides("icd9_1") == ["data.options.task=icd9_1", "train.monitor=auprc"]
    assert mimic["--task"].overrides("mortality") == ["data.options.task=mortality", "train.monitor=accuracy"]
