#!/usr/bin/env python
"""Screenshots of the MLflow UI over a demo's store, taken in headless Chromium.

    python docs/screenshots.py --output-dir outputs/fastmri --experiment fastmri

starts ``mlflow server`` on 127.0.0.1 (a free port, its own process group) over the store
(``<output-dir>/mlflow.db``, artifacts in ``<output-dir>/mlartifacts``; or
``--backend-store-uri`` and ``--artifact-root``), finds the experiment, its latest parent run
and that run's children through the server's REST API, and opens three pages in headless
Chromium (window 1600x1000), driven over the DevTools protocol on a pipe:

- ``experiment-runs.png``: the experiment's runs table (``#/experiments/<id>/runs``), the
  parent run expanded so that its children show;
- ``parent-run.png``: the parent run's page (``#/experiments/<id>/runs/<run_id>``), which
  lists its child runs;
- ``compare-runs.png``: the comparison of the children
  (``#/compare-runs?runs=[...]&experiments=[...]``, what the runs table's *Compare* opens),
  its plots and parameters folded and its metrics table scrolled to ``--focus-metric``;
- ``comparison-view.png``, where the experiment holds the saved view the pipelines write
  (tag ``mlflow.sharedViewState.i2m2-paradigms``): the address the scripts print, that view
  in chart mode (``viewStateShareKey=i2m2-paradigms&compareRunsMode=CHART``): the latest
  run's children grouped by paradigm, a bar chart per main test metric.

Every address carries ``workflowType=machine_learning``, the UI's switch to its "Model
training" side. The assistant panel, open on a fresh profile, is closed before each
screenshot. Each page's rendered text (``document.body.innerText`` once the page shows what
is looked for) goes beside its PNG as ``<name>.txt``, and the script prints which of the
looked-for texts (the runs table's header, the parent's and the children's names) each page
shows. It also opens the experiment's plain address (``#/experiments/<id>``) and prints what
the UI shows there. MLflow 3.17 picks an experiment's first tab from its GenAI / Model
training switch (the address's ``workflowType``, else the choice the browser remembers, else
GenAI), so a fresh browser lands on the GenAI overview; the experiment tag
``mlflow.experimentKind`` = ``custom_model_development``, which the UI reads where that switch
is off, does not change it in 3.17 (checked); the printed address names the side.

Exit status 0 when every page shows every text, 1 otherwise, 2 when a step fails. The
server and Chromium are stopped at the end, also on an error, Ctrl-C or SIGTERM; every wait
is bounded and says what it waited for when it gives up. Needs Chromium (``apt-get install
chromium``) and, for smaller PNGs, Pillow (a 256-colour palette; without it they are kept
as Chromium writes them).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WINDOW = (1600, 1000)
DEFAULT_DEST = Path(__file__).resolve().parent / "screenshots"
PARENT_TAG = "mlflow.parentRunId"
RUNS_TABLE_TEXT = "Run Name"  # the runs table's first column header
# the saved view the pipelines write (i2m2_ray.tracking.COMPARISON_VIEW; this script runs
# without the package): the latest run's models compared on the main test metrics
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPARISON_VIEW = "i2m2-paradigms"
# what Chromium needs headless on a machine without a screen or network (see the machine notes)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


class ScreenshotError(RuntimeError):
    """A step failed; the message says which and why."""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[Any], term_wait: float = 15.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group
    (SIGTERM, then SIGKILL), waiting until the group is empty; only this group, nothing else."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                try:
                    os.killpg(pgid, 0)  # members left (a server's worker processes)?
                except ProcessLookupError:
                    return
            time.sleep(0.2)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        print(f"warning: process group {pgid} did not stop", file=sys.stderr)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@contextmanager
def mlflow_server(backend_store_uri: str, artifact_root: str | None, timeout: float, log_dir: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1:<free port> in its own process group; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend_store_uri, "--workers", "1"]
    if artifact_root:
        cmd += ["--default-artifact-root", artifact_root]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log_path = log_dir / "mlflow-server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ScreenshotError(f"mlflow server exited ({proc.returncode}) before answering:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ScreenshotError(
                    f"mlflow server on {url} did not answer /health within {timeout:.0f} s "
                    f"(--server-timeout); its log ends:\n{_tail(log_path)}"
                )
            time.sleep(1)
        took = timeout - (deadline - time.monotonic())
        print(f"mlflow server: {url} (pid {proc.pid}, up after {took:.0f} s; store {backend_store_uri})", flush=True)
        yield url
    finally:
        stop_group(proc)


# --------------------------------------------------------------------------- MLflow REST


def _api(base: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
    url = f"{base}/api/2.0/mlflow/{path}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            result: dict[str, Any] = json.load(r)
            return result
    except urllib.error.HTTPError as exc:
        raise ScreenshotError(f"{url}: HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}") from exc
    except OSError as exc:
        raise ScreenshotError(f"{url}: {exc}") from exc


@dataclass
class Run:
    run_id: str
    name: str
    start_time: int
    parent_id: str | None
    metrics: set[str] = field(default_factory=set)


@dataclass
class Target:
    experiment_id: str
    parent: Run
    children: list[Run]
    views: dict[str, dict[str, Any]] = field(default_factory=dict)  # saved views: key -> state

    @property
    def metrics(self) -> set[str]:
        """Metric keys logged by any child."""
        return set().union(*(r.metrics for r in self.children))


def _runs(base: str, experiment_id: str) -> list[Run]:
    out: list[Run] = []
    token: str | None = None
    while True:
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "max_results": 1000,
            "order_by": ["attributes.start_time DESC"],
        }
        if token:
            body["page_token"] = token
        page = _api(base, "runs/search", body)
        for r in page.get("runs", []):
            tags = {t["key"]: t.get("value", "") for t in r.get("data", {}).get("tags", [])}
            info = r["info"]
            name = info.get("run_name") or tags.get("mlflow.runName", info["run_id"])
            metrics = {m["key"] for m in r.get("data", {}).get("metrics", [])}
            out.append(Run(info["run_id"], name, int(info.get("start_time", 0)), tags.get(PARENT_TAG), metrics))
        token = page.get("next_page_token")
        if not token:
            return out


def find_target(base: str, experiment: str, parent: str | None = None) -> Target:
    """The experiment's id, its latest parent run (a run without a parent that has children;
    or the run named or numbered ``parent``) and that run's children, oldest first."""
    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        exp = _api(base, f"experiments/get-by-name?{query}")["experiment"]
    except ScreenshotError as exc:
        raise ScreenshotError(f"experiment {experiment!r} not found in the store ({exc})") from exc
    exp_id = str(exp["experiment_id"])
    runs = _runs(base, exp_id)
    children: dict[str, list[Run]] = {}
    for r in runs:
        if r.parent_id:
            children.setdefault(r.parent_id, []).append(r)
    candidates = [r for r in runs if not r.parent_id and r.run_id in children]
    if parent is not None:
        candidates = [r for r in runs if parent in (r.run_id, r.name)]
    if not candidates:
        what = f"a run {parent!r}" if parent else "a parent run with child runs"
        raise ScreenshotError(f"experiment {experiment!r} (id {exp_id}, {len(runs)} runs) has no {what}")
    top = candidates[0]  # runs are sorted newest first
    kids = sorted(children.get(top.run_id, []), key=lambda r: r.start_time)
    return Target(exp_id, top, kids, saved_views(exp.get("tags", [])))


def saved_views(tags: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """The experiment's saved views of the UI (tags ``mlflow.sharedViewState.<key>``, each an
    envelope whose ``state`` is the view's JSON); an unreadable one is left out."""
    views: dict[str, dict[str, Any]] = {}
    for tag in tags:
        key = tag.get("key", "")
        if key.startswith(VIEW_TAG_PREFIX):
            try:
                views[key.removeprefix(VIEW_TAG_PREFIX)] = json.loads(json.loads(tag["value"])["state"])
            except (KeyError, TypeError, ValueError):
                continue
    return views


# --------------------------------------------------------------------------- Chromium


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands in on fd 3, answers out on fd 4, each a JSON text ended by a NUL byte)."""

    def __init__(self, executable: str, profile: Path, timeout: float) -> None:
        self.timeout = timeout
        self.profile = profile
        self.log_path = profile.parent / "chromium.log"
        # pipe ends numbered 10 and up, so that bash can move them to 3 and 4 safely
        to_r, to_w = (self._high(fd) for fd in os.pipe())
        from_r, from_w = (self._high(fd) for fd in os.pipe())
        cmd = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        bash = shutil.which("bash") or "/bin/bash"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [bash, "-c", f'exec "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-', "bash", *cmd],
                pass_fds=(to_r, from_w),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        os.close(to_r)
        os.close(from_w)
        self._out = os.fdopen(to_w, "wb", buffering=0)
        self._in = os.fdopen(from_r, "rb", buffering=0)
        self._next_id = 0
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            version = self.call("Browser.getVersion")
        except BaseException:
            self.close()
            raise
        print(f"chromium: {version.get('product')} (pid {self.proc.pid})", flush=True)

    @staticmethod
    def _high(fd: int) -> int:
        import fcntl

        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return high

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._in.read(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._answers.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                data = json.loads(msg)
                if "id" in data:  # events carry no id; nothing here waits for them
                    self._answers.put(data)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait (bounded) for its answer."""
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            self._out.write(json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise ScreenshotError(f"chromium is gone ({exc}); its log ends:\n{_tail(self.log_path)}") from exc
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScreenshotError(f"chromium did not answer {method} within {self.timeout:.0f} s")
            try:
                answer = self._answers.get(timeout=left)
            except queue.Empty:
                continue
            if answer is None:
                self._answers.put(None)
                log = _tail(self.log_path)
                raise ScreenshotError(f"chromium closed its pipe during {method}; its log ends:\n{log}")
            if answer.get("id") != mid:
                continue  # a late answer to a command that timed out
            if "error" in answer:
                raise ScreenshotError(f"chromium: {method} failed: {answer['error']}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self._out.write(json.dumps({"id": 0, "method": "Browser.close", "params": {}}).encode() + b"\0")
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop_group(self.proc, term_wait=5)
        for f in (self._out, self._in):
            try:
                f.close()
            except OSError:
                pass


class Tab:
    """One page (a target of its own, 1600x1000) of a ``Chromium``."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.target = target
        width, height = WINDOW
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", metrics)
        self.call("Page.enable")

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise ScreenshotError(f"page script failed: {res['exceptionDetails'].get('text')}: {expression[:200]}")
        return res.get("result", {}).get("value")

    def text(self) -> str:
        return str(self.js("document.body ? document.body.innerText : ''") or "")

    def goto(self, url: str) -> None:
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise ScreenshotError(f"chromium could not open {url}: {res['errorText']}")

    def wait_for(self, texts: Sequence[str], timeout: float, what: str) -> tuple[list[str], str]:
        """Wait (at most ``timeout`` s) until the page's text shows every one of ``texts``;
        return the ones still missing (empty when all showed) and the text."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [t for t in texts if t not in text]
            if not missing or time.monotonic() > deadline:
                if missing:
                    print(f"  {what}: after {timeout:.0f} s the page still lacks {missing}", flush=True)
                return missing, text
            time.sleep(0.5)

    def wait_until(self, expression: str, timeout: float, what: str) -> bool:
        """Wait (at most ``timeout`` s) until the page expression is true."""
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                print(f"  {what}: not ready after {timeout:.0f} s ({expression})", flush=True)
                return False
            time.sleep(0.5)
        return True

    def click(self, selector_js: str) -> bool:
        """Click the element the expression returns (``null``: nothing to click)."""
        return bool(self.js(f"(() => {{ const el = {selector_js}; if (el) el.click(); return Boolean(el); }})()"))

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png", "fromSurface": True})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.browser.call("Target.closeTarget", {"targetId": self.target})
        except ScreenshotError:
            pass


# --------------------------------------------------------------------------- pages


@dataclass
class Page:
    name: str
    url: str
    expected: list[str]
    png: Path | None = None
    text: str = ""
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class Result:
    server: str
    target: Target
    pages: dict[str, Page]
    default_view: str  # what the experiment's plain address shows: the page title and address

    @property
    def ok(self) -> bool:
        return all(not p.missing for p in self.pages.values())


# the UI's own parameter: show the "Model training" side of the UI, not the GenAI one
ML_VIEW = "workflowType=machine_learning"


def _by_text(selector: str, text: str) -> str:
    """A page expression: the first element matching ``selector`` whose text is ``text``."""
    found = f"e => e.textContent.trim() === {json.dumps(text)}"
    return f"[...document.querySelectorAll({json.dumps(selector)})].find({found})"


def _expander(run_name: str) -> str:
    """A page expression: the expand button in the runs-table row of the run ``run_name``."""
    link = _by_text("[role=gridcell] a", run_name)
    cell = f"const a = {link}; const c = a && a.closest('[role=gridcell]');"
    return f"(() => {{ {cell} return c && c.querySelector('button'); }})()"


CLOSE_ASSISTANT = "document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')"


def _scroll_to_row(label: str) -> str:
    """A page expression (a promise of true/false): scroll the comparison's virtualized
    table (a grid of row names beside a grid of values, kept in step by the page) until the
    row headed ``label`` is its first row; only the table moves, so the run names above it
    stay in view."""
    xpath = json.dumps(f"//*[text()[normalize-space()={json.dumps(label)}]]")
    return f"""(async () => {{
  const find = () => document.evaluate({xpath}, document, null,
    XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
  const pause = ms => new Promise(r => setTimeout(r, ms));
  const grids = [...document.querySelectorAll('.ReactVirtualized__Grid')]
    .filter(g => g.clientHeight > 0 && g.scrollHeight > g.clientHeight + 1);
  if (!grids.length) return Boolean(find());  // a short table: nothing to scroll
  const scroll = top => grids.forEach(g => {{ g.scrollTop = top; }});
  const step = Math.max(40, Math.min(...grids.map(g => g.clientHeight)) - 40);
  const end = Math.max(...grids.map(g => g.scrollHeight));
  let el = find();
  for (let top = 0; !el && top <= end; top += step) {{
    scroll(top);
    await pause(200);
    el = find();
  }}
  const cell = el && el.closest('.ReactVirtualized__Grid__innerScrollContainer > *');
  if (!cell) return false;
  const top = parseFloat(cell.style.top) || 0;  // the row's place in its grid
  for (let i = 0; i < 20; i++) {{  // both grids on the row, and staying there
    scroll(top);
    await pause(250);
    if (grids.every(g => Math.abs(g.scrollTop - Math.min(top, g.scrollHeight - g.clientHeight)) < 2)) return true;
  }}
  return false;
}})()"""


def _prepare(tab: Tab, page: Page, target: Target, timeout: float, focus_metric: str | None) -> None:
    """Make the page show what is looked for: close the assistant panel (it covers a third
    of the page), expand the parent run in the runs table, fold the comparison's plots and
    parameters so that the run names and the metrics fit in the window, and scroll its
    metrics table to ``focus_metric``."""
    if tab.click(CLOSE_ASSISTANT):
        time.sleep(0.5)
    kids = [r.name for r in target.children]
    if page.name == "experiment-runs" and kids and not all(k in tab.text() for k in kids):
        if not tab.click(_expander(target.parent.name)):
            print(f"  {page.name}: no expand button in the row of {target.parent.name!r}", flush=True)
    if page.name == "compare-runs":
        tab.wait_for(["Metrics"], timeout, page.name)
        for section in ("Visualizations", "Parameters"):
            if not tab.click(_by_text("[role=button]", section)):
                print(f"  {page.name}: no {section!r} section to fold", flush=True)
        if focus_metric and focus_metric in target.metrics:
            time.sleep(0.5)
            if tab.js(_scroll_to_row(focus_metric)) is not True:
                print(f"  {page.name}: could not scroll the metrics to {focus_metric!r}", flush=True)


def shrink_png(path: Path) -> None:
    """Rewrite a screenshot with a 256-colour palette when Pillow is at hand and that is
    smaller (UI screenshots lose nothing visible; they are committed)."""
    try:
        from PIL import Image
    except ImportError:
        return
    tmp = path.with_suffix(".tmp.png")
    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=256).save(tmp, optimize=True)
    if tmp.stat().st_size < path.stat().st_size:
        tmp.replace(path)
    else:
        tmp.unlink()


def shoot(
    base: str,
    target: Target,
    dest: Path,
    chromium: str,
    timeout: float,
    settle: float,
    workdir: Path,
    focus_metric: str | None = None,
) -> tuple[dict[str, Page], str]:
    """Open the pages in one Chromium, each in a fresh tab; screenshot and text of each."""
    exp = target.experiment_id
    kids = [r.name for r in target.children]
    ids = [r.run_id for r in target.children]
    compare = urllib.parse.urlencode({"runs": json.dumps(ids, separators=(",", ":")), "experiments": json.dumps([exp])})
    pages = {
        "experiment-runs": Page(
            "experiment-runs",
            f"{base}/#/experiments/{exp}/runs?{ML_VIEW}",
            [RUNS_TABLE_TEXT, target.parent.name, *kids],
        ),
        "parent-run": Page(
            "parent-run",
            f"{base}/#/experiments/{exp}/runs/{target.parent.run_id}?{ML_VIEW}",
            [target.parent.name, *kids],
        ),
        "compare-runs": Page("compare-runs", f"{base}/#/compare-runs?{compare}&{ML_VIEW}", kids),
    }
    view = target.views.get(COMPARISON_VIEW)
    if view is not None:  # the address the scripts print: the saved view, in chart mode
        section = view["compareRunSections"][0]["name"]
        charts = [c["metricKey"] for c in view["compareRunCharts"]]
        pages["comparison-view"] = Page(
            "comparison-view",
            f"{base}/#/experiments/{exp}/runs?{ML_VIEW}&viewStateShareKey={COMPARISON_VIEW}&compareRunsMode=CHART",
            [section, *kids, *charts[:1]],
        )
    browser = Chromium(chromium, workdir / "profile", timeout)
    try:
        # what the experiment's plain address shows (MLflow 3.17 in a fresh browser: the GenAI
        # overview, whatever the experiment's tags)
        tab = Tab(browser)
        tab.goto(f"{base}/#/experiments/{exp}")
        has_table = f"(document.body?.innerText ?? '').includes({json.dumps(RUNS_TABLE_TEXT)})"
        shown = f"/. - Experiment /.test(document.title) || {has_table}"
        tab.wait_until(shown, min(timeout, 60), "the experiment's plain address")
        time.sleep(settle)
        table = "the runs table" if RUNS_TABLE_TEXT in tab.text() else "no runs table"
        default_view = f"{tab.js('document.title')!r}, {table} ({tab.js('location.hash')})"
        tab.close()
        for page in pages.values():
            print(f"  {page.name}: {page.url}", flush=True)
            started = time.monotonic()
            tab = Tab(browser)
            tab.goto(page.url)
            tab.wait_for(page.expected[:2], timeout, page.name)
            _prepare(tab, page, target, timeout, focus_metric)
            tab.wait_for(page.expected, timeout, page.name)
            time.sleep(settle)  # let charts and late requests draw
            page.text = tab.text()
            page.found = [t for t in page.expected if t in page.text]
            page.missing = [t for t in page.expected if t not in page.text]
            page.png = dest / f"{page.name}.png"
            tab.screenshot(page.png)
            shrink_png(page.png)
            (dest / f"{page.name}.txt").write_text(page.text.rstrip() + "\n")
            tab.close()
            print(f"  {page.name}: done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        browser.close()
    return pages, default_view


def capture(
    backend_store_uri: str,
    experiment: str,
    dest: Path = DEFAULT_DEST,
    artifact_root: str | None = None,
    chromium: str | None = None,
    parent: str | None = None,
    server_timeout: float = 300.0,
    page_timeout: float = 90.0,
    settle: float = 2.0,
    focus_metric: str | None = "test_auroc_mean",
) -> Result:
    """Start the server, take the screenshots into ``dest``, stop everything; see the module doc."""
    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise ScreenshotError("Chromium is absent: apt-get install chromium (or pass --chromium PATH)")
    if not os.access(exe, os.X_OK):
        raise ScreenshotError(f"--chromium {exe}: not an executable file")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="i2m2-screenshots-") as tmp:
        work = Path(tmp)
        with mlflow_server(backend_store_uri, artifact_root, server_timeout, work) as base:
            target = find_target(base, experiment, parent)
            names = ", ".join(r.name for r in target.children)
            print(
                f"experiment {experiment!r} (id {target.experiment_id}); parent {target.parent.name} "
                f"({target.parent.run_id}); children: {names}",
                flush=True,
            )
            pages, default_view = shoot(base, target, dest, exe, page_timeout, settle, work, focus_metric)
    return Result(base, target, pages, default_view)


def report(result: Result) -> str:
    lines = [f"the experiment's plain address shows: {result.default_view}"]
    for page in result.pages.values():
        size = page.png.stat().st_size if page.png and page.png.exists() else 0
        lines.append(f"{page.name}: {page.png} ({size // 1024} KB)")
        lines.append(f"  found:   {', '.join(page.found) or '-'}")
        if page.missing:
            lines.append(f"  MISSING: {', '.join(page.missing)}")
    lines.append("all texts found" if result.ok else "some texts are missing (see above)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--output-dir", type=Path, help="a demo's output folder (its mlflow.db and mlartifacts)")
    ap.add_argument("--backend-store-uri", help="e.g. sqlite:////abs/path/mlflow.db (default: <output-dir>/mlflow.db)")
    ap.add_argument("--artifact-root", help="artifact folder (default: <output-dir>/mlartifacts)")
    ap.add_argument("--experiment", required=True, help="experiment name, e.g. fastmri")
    ap.add_argument("--parent-run", help="parent run name or id (default: the latest run with children)")
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"where the PNGs go (default {DEFAULT_DEST})")
    ap.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    ap.add_argument("--server-timeout", type=float, default=300.0, help="seconds to wait for the server")
    ap.add_argument("--page-timeout", type=float, default=90.0, help="seconds to wait for a page's texts")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to let a page draw before its screenshot")
    ap.add_argument(
        "--focus-metric",
        default="test_auroc_mean",
        help="metric the comparison's metrics table is scrolled to (default test_auroc_mean; '' for none)",
    )
    args = ap.parse_args(argv)
    if not args.backend_store_uri and not args.output_dir:
        ap.error("give --output-dir or --backend-store-uri")
    uri = args.backend_store_uri or f"sqlite:///{(args.output_dir / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        ap.error(f"no store at {uri.removeprefix('sqlite:///')} (run the demo first, or pass --backend-store-uri)")
    root = args.artifact_root or (str((args.output_dir / "mlartifacts").resolve()) if args.output_dir else None)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = capture(
            uri,
            args.experiment,
            args.dest,
            artifact_root=root,
            chromium=args.chromium,
            parent=args.parent_run,
            server_timeout=args.server_timeout,
            page_timeout=args.page_timeout,
            settle=args.settle,
            focus_metric=args.focus_metric or None,
        )
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the server and Chromium are stopped", file=sys.stderr)
        return 130
    print(report(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
