"""The comparison in a real browser: docs/screenshots.py against a real MLflow store.

A small sqlite store is written with the project's own tracking functions (a parent run and
one child per paradigm, as the fastMRI pipeline names them); the script then starts a real
``mlflow server`` on 127.0.0.1 over it, opens the experiment's runs table, the parent run and
the comparison of the children in headless Chromium, and the test checks the screenshots
and the text each page showed. Skipped, with the reason, where Chromium is absent.
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from i2m2_ray import tracking

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "screenshots.py"
EXPERIMENT = "fastmri"
PARENT = "fastmri-seed0"
PARADIGMS = ("unimodal_magnitude", "unimodal_phase", "inter", "intra", "i2m2")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 8 * 1024  # a blank 1600x1000 page compresses to about 2 KB

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is absent: apt-get install chromium"),
]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def build_store(root: Path) -> str:
    """A parent run and five finished children with per-epoch and test metrics; the store's URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    exp = tracking.get_experiment_id(uri, EXPERIMENT, root / "mlartifacts")
    parent = tracking.start_run(uri, exp, PARENT, {"dataset": EXPERIMENT, "stage": "pipeline"}, {"run": {"seed": 0}})
    for i, name in enumerate(PARADIGMS):
        child = tracking.start_run(
            uri, exp, name, {"dataset": EXPERIMENT, "paradigm": name}, {"train": {"lr": 1e-4}}, parent_run_id=parent
        )
        for epoch in range(3):
            tracking.log_metrics(uri, child, {"val_auroc_mean": 0.5 + 0.04 * i + 0.02 * epoch}, step=epoch)
        tracking.log_metrics(
            uri, child, {"test_auroc_mean": 0.6 + 0.05 * i, "test_balanced_accuracy_mean": 0.55 + 0.04 * i}
        )
        tracking.end_run(uri, child)
    tracking.end_run(uri, parent)
    # what a pipeline writes when it starts: the experiment's saved view of this run's models
    tracking.save_comparison_view(uri, exp, parent, ["auroc_mean", "balanced_accuracy_mean"])
    return uri


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (its first chunk is IHDR)."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR", f"{path}: no IHDR chunk"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


@pytest.mark.timeout(900)
def test_screenshots_show_the_runs_and_the_five_paradigms(tmp_path: Path) -> None:
    shots = load_script()
    uri = build_store(tmp_path / "store")
    dest = tmp_path / "shots"

    result = shots.capture(
        uri,
        EXPERIMENT,
        dest,
        artifact_root=str(tmp_path / "store" / "mlartifacts"),
        server_timeout=600,
        page_timeout=120,
    )
    print(shots.report(result))

    assert result.target.parent.name == PARENT
    assert [r.name for r in result.target.children] == list(PARADIGMS)
    assert set(result.pages) == {"experiment-runs", "parent-run", "compare-runs", "comparison-view"}
    for page in result.pages.values():
        assert page.png == dest / f"{page.name}.png"
        assert png_size(page.png) == shots.WINDOW, page.name
        assert page.png.stat().st_size > MIN_PNG_BYTES, f"{page.name}: {page.png.stat().st_size} bytes"
        assert (dest / f"{page.name}.txt").read_text().strip() == page.text.strip()
        assert not page.missing, f"{page.name} lacks {page.missing}:\n{page.text[:2000]}"

    # the experiment's runs table: its header, the parent and (expanded) its five children
    runs = result.pages["experiment-runs"].text
    for text in ("Run Name", PARENT, *PARADIGMS):
        assert text in runs, f"the runs page lacks {text!r}:\n{runs[:2000]}"
    # the parent run's page names the parent and links its children
    parent = result.pages["parent-run"].text
    for text in (PARENT, *PARADIGMS):
        assert text in parent, f"the parent run's page lacks {text!r}"
    # the comparison shows the five runs and the test metric's row
    compare = result.pages["compare-runs"].text
    for text in ("Comparing 5 Runs", *PARADIGMS, "test_auroc_mean"):
        assert text in compare, f"the comparison lacks {text!r}:\n{compare[:2000]}"
    # the address the scripts print: the saved view, a group and a bar per paradigm on the
    # main test metrics, in their own chart section
    view = result.pages["comparison-view"].text
    for text in ("Paradigm comparison (latest run)", "Paradigm comparison: test metrics", "Group by: paradigm"):
        assert text in view, f"the saved view lacks {text!r}:\n{view[:2000]}"
    for text in (*PARADIGMS, "test_auroc_mean", "test_balanced_accuracy_mean"):
        assert text in view, f"the saved view lacks {text!r}:\n{view[:2000]}"
    section = view.index("Paradigm comparison: test metrics")
    assert view.index("test_auroc_mean", section) < view.index("Model metrics"), "the main metrics' charts come first"
    assert result.ok

    # the server the script started is gone
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{result.server}/health", timeout=5)
