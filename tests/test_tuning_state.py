"""A sweep's saved state: sealed by the user who started it (a resume of anyone else's
needs --trust-storage), written atomically, its tracking URI saved without the password."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from i2m2_ray.config import ConfigError, load_config
from i2m2_ray.tuning import SweepOptions, load_search_file, load_sweep_options, save_sweep_state
from i2m2_ray.tuning.state import saved_tracking_uri, sweep_exists, sweep_exists_message
from i2m2_ray.tuning.trust import KEY_ENV, UntrustedSweepError, distrust, seal

from .conftest import REPO


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "sweep.key"
    monkeypatch.setenv(KEY_ENV, str(path))
    return path


def options(out: Path) -> SweepOptions:
    search = load_search_file(REPO / "configs" / "search" / "fastmri_demo.yaml")
    base = load_config(REPO / "configs" / "fastmri_demo.yaml", list(search.overrides))
    return SweepOptions("fastmri", search, base, out, trials=4, max_concurrent=2, name="s")


def test_a_seal_is_checked_with_this_user_s_key(key: Path, tmp_path: Path) -> None:
    state = seal("s")
    assert oct(key.stat().st_mode & 0o777) == "0o600" and state["owner_uid"] == os.getuid()
    assert distrust(state, "s", str(tmp_path / "none")) == []
    assert any("seal does not match" in r for r in distrust({**state, "token": "forged"}, "s", str(tmp_path)))
    assert any("not you" in r for r in distrust({**state, "owner_uid": os.getuid() + 1}, "s", str(tmp_path)))
    assert any("records no owner" in r for r in distrust({}, "s", str(tmp_path)))
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"pickle")
    os.chmod(exp / "tuner.pkl", 0o666)
    assert any("tuner.pkl can be written by others" in r for r in distrust(state, "s", str(exp)))


def test_resuming_a_sweep_someone_else_wrote_needs_trust_storage(key: Path, tmp_path: Path) -> None:
    opts = options(tmp_path / "out")
    save_sweep_state(opts, "1", "parent", "http://bob:hunter2@mlflow:5000")
    saved = json.loads(opts.state_path.read_text())
    assert saved["tracking_uri"] == "http://bob:***@mlflow:5000" and "hunter2" not in opts.state_path.read_text()
    assert saved["storage_path"] is None  # the default storage moves with the output folder
    os.environ["MLFLOW_TRACKING_URI"] = "http://bob:hunter2@mlflow:5000"
    try:
        assert load_sweep_options(opts.output_dir, "s").tracking_uri == "http://bob:hunter2@mlflow:5000"
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    with pytest.raises(ConfigError, match=r"password is not saved: set MLFLOW_TRACKING_URI"):
        saved_tracking_uri("http://bob:***@mlflow:5000")
    # another user's key (or a hand-made sweep.json): refused, naming the flag
    key.write_bytes(b"another key")
    with pytest.raises(UntrustedSweepError, match=r"seal does not match.*unpickles.*--trust-storage"):
        load_sweep_options(opts.output_dir, "s", tracking_uri="sqlite:///x.db")
    assert load_sweep_options(opts.output_dir, "s", trust=True, tracking_uri="sqlite:///x.db").resume
    opts.state_path.write_text(opts.state_path.read_text()[:50])  # truncated
    with pytest.raises(ConfigError, match=r"sweep.json: the sweep's state is damaged or truncated"):
        load_sweep_options(opts.output_dir, "s")


def test_an_existing_sweep_is_refused_naming_resume_and_overwrite(key: Path, tmp_path: Path) -> None:
    opts = options(tmp_path / "out")
    assert not sweep_exists(opts)
    save_sweep_state(opts, "1", "parent", "sqlite:///x.db")
    assert sweep_exists(opts)
    message = sweep_exists_message(opts)
    assert "--resume" in message and "--overwrite" in message and "--name" in message
