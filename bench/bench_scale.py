"""Scale: large runs and large folders of runs, measured side by side in one run.

Sections (``--only`` picks some; all by default):

* ``1m``: a run of 1,000,000 values (200,000 steps x 5 metrics). A real ``python app.py`` server and headless
  Chromium: page request until the loss chart and the step card show, on the first open (no series cache,
  a browser with an empty profile) and on the reopen after a dashboard restart (the cache written by the
  first server; the same port and the same browser profile, whose HTTP and script caches a person's browser
  keeps too). Goals: <= 1.0 s and <= 0.5 s. The reopen by a browser with an empty profile (how the reopen was
  measured before) is printed beside it. Each open is timed two ways in one page load (:func:`open_run_page`):
  the first animation frame that shows both, read in the page, and in brackets the harness's two waits (chart,
  then card text), as this bench measured before. Also the same open in-process (RunCatalog read + first chart
  render), for a breakdown.
* ``tb``: TensorBoard's own loader (EventAccumulator, all scalars kept) on the same 1M scalars written by
  SummaryWriter; the ratio TensorBoard / Trainboard browser end to end (goal >= 25x).
* ``10m``: 10,000,000 values (1,000,000 steps x 10 metrics, ~340 MB JSONL): first open in the browser
  (goal <= 5 s) with the server's peak RSS (goal <= 600 MB), then a zoom into 1,000 steps (``relayout`` of
  the chart: the server re-downsamples the visible range) until every one of those points is drawn
  (goal <= 0.5 s).
* ``runs``: 2,000 tiny runs in one base dir: run picker and Runs page shown (goal <= 1.5 s), the server CPU
  time one unchanged refresh costs (goal <= 50 ms: CPU of the server over several 1 s ticks with the Runs
  tab open, per tick), and the server's idle CPU over ``--idle-s`` without a browser and with a tab open
  (goal ~0).

``--anchor DIR`` runs the browser measurements against another checkout's ``app.py`` too (e.g. the main
branch before a change), on the same data in the same run, and prints the ratios. Generated data is kept in
``--data-dir`` (default: a folder in the system temp dir) for reruns; the 10M log takes minutes to write.
``--quick`` uses small sizes and a short idle window: the test suite runs it for correctness only.

Run: ``python bench/bench_scale.py [--quick] [--only 1m,tb,10m,runs] [--anchor ../main]``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
METRICS = ("loss", "learning_rate", "grad_norm", "epoch", "tokens_seen")
METRICS_10 = METRICS + ("throughput", "memory_gb", "loss_scale", "aux_loss", "perplexity")
SECTIONS = ("1m", "tb", "10m", "runs")
READY_MARK = ".bench-complete"
"""Written last into a generated data folder: a folder without it (an interrupted generation) is rebuilt."""
CHART_JS = ("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
            " return g && g.data && g.data.length > 0 && g.data[0].x && g.data[0].x.length > 100; }")


# --------------------------------------------------------------------------- data

def write_run(run: Path, steps: int, metrics: tuple[str, ...] = METRICS) -> None:
    """A finished Trainboard run of ``steps`` train records with ``metrics`` (spikes every 50,000 steps)."""
    from collectors import runformat as rf

    paths = rf.RunPaths.of(run)
    paths.logs_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - steps
    extra = metrics[len(METRICS):]
    with open(paths.metrics, "wb") as fh:
        buf = []
        for i in range(1, steps + 1):
            fields: dict[str, Any] = {
                "loss": 2.0 + math.sin(i / 500) + (5.0 if i % 50_000 == 0 else 0), "learning_rate": 1e-3 * (1 - i / steps),
                "grad_norm": 1.0 + (i % 97) / 100, "epoch": i / 10_000, "tokens_seen": i * 512}
            for k, name in enumerate(extra):
                fields[name] = (k + 1) * 1.5 + (i % (11 + k)) / 7
            buf.append(rf.dumps(rf.make_record("train", step=i, time=t0 + i, **fields)))
            if len(buf) == 10_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    rf.write_json_atomic(paths.status, {"v": 1, "state": "finished", "step": steps, "train_loss": 2.0,
                                        "updated_at": time.time(), "memory": {}, "throughput": {}})


def write_many_runs(base: Path, n: int, steps: int = 5) -> None:
    """``n`` tiny collector-shaped runs (status, logs, control, snapshots dirs) under ``base``."""
    from collectors import runformat as rf

    for k in range(n):
        p = rf.RunPaths(base / f"run-{k:05d}")
        for d in (p.status_dir, p.logs_dir, p.control_dir, p.snapshots_dir):
            d.mkdir(parents=True, exist_ok=True)
        with open(p.metrics, "wb") as fh:
            fh.write(b"".join(rf.dumps(rf.make_record("train", step=i, time=1e9 + i, loss=2.0 / i)) + b"\n"
                             for i in range(1, steps + 1)))
        rf.write_json_atomic(p.status, {"v": 1, "state": "finished", "step": steps, "train_loss": 2.0 / steps,
                                        "updated_at": 1e9 + steps})


def write_events(log_dir: Path, steps: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(log_dir), max_queue=10_000, flush_secs=3600)
    for i in range(1, steps + 1):
        w.add_scalar("loss", 2.0 + math.sin(i / 500), i)
        w.add_scalar("learning_rate", 1e-3 * (1 - i / steps), i)
        w.add_scalar("grad_norm", 1.0 + (i % 97) / 100, i)
        w.add_scalar("epoch", i / 10_000, i)
        w.add_scalar("tokens_seen", i * 512, i)
    w.close()


def prepared(folder: Path, build: Any, label: str) -> Path:
    """``folder`` holding generated data, built by ``build(folder)`` unless a complete one is there."""
    if (folder / READY_MARK).exists():
        print(f"  reusing {label} in {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    build(folder)
    (folder / READY_MARK).write_text("ok")
    print(f"  generated {label} in {time.perf_counter() - t0:.1f} s")
    return folder


# --------------------------------------------------------------------------- a server and a browser

def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except Exception:  # noqa: BLE001 - the process ended
                return
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._t.join(timeout=2)
        return self.peak


@dataclass
class Server:
    """A real dashboard (``app.py`` of ``repo``) on ``base``, its series cache in ``cache_dir``."""

    repo: Path
    base: Path
    cache_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> "Server":
        from tests.conftest import free_port, wait_http

        self.port = self.port or free_port()  # a restart on the same port keeps the browser's cache valid
        env = {**os.environ, "TRAINBOARD_CACHE_DIR": str(self.cache_dir), "PYTHONPATH": str(self.repo),
               **self.extra_env}
        self.proc = subprocess.Popen([sys.executable, str(self.repo / "app.py"), "--base-dir", str(self.base),
                                      "--port", str(self.port)], cwd=self.repo, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/", proc=self.proc, timeout=300)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def profile_browser(profile: Path) -> Iterator[Any]:
    """Chromium with the persistent profile ``profile`` (HTTP cache and compiled-script cache kept on disk
    between launches, as a person's browser keeps them): yields its one browser context."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                   viewport={"width": 1400, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


SHOWN_JS = """(() => {
  const want = %s;
  function tick() {
    if (window.__trainboardShown) return;
    const g = document.querySelector('#overview-loss-graph .js-plotly-plot');
    const cards = document.getElementById('overview-cards');
    if (g && g.data && g.data.length > 0 && g.data[0].x && g.data[0].x.length > 100 && cards
        && cards.textContent.includes(want)) { window.__trainboardShown = performance.now(); return; }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
})()"""
"""Run in the page before its own scripts: at each animation frame, whether the loss chart holds its points and
the step card (``#overview-cards``) shows the step; the first frame with both is stored as milliseconds since the
navigation started (``performance.now()``), i.e. from the page request to the frame that shows them."""


def open_run_page(b: Any, srv: Server, steps: int, timeout_s: float) -> tuple[float, float | None]:
    """Seconds from the page request until the loss chart is drawn and the step card shows ``steps``
    (``b``: a browser, or a browser context with its viewport set), two ways, in one page load:

    * the harness's: Playwright waits for the chart, then for the card's text (each wait a round trip to the
      page; the text search walks the whole DOM, the charts' SVG too), as this bench measured before;
    * the page's own (:data:`SHOWN_JS`): the first animation frame holding both. The harness's figure is this
      plus its own polling: 40-80 ms on the floor page in this bench's runs here, 60-110 ms on the Overview,
      whose three charts make the DOM larger."""
    page = b.new_page(**({"viewport": {"width": 1400, "height": 1000}} if hasattr(b, "new_context") else {}))
    try:
        page.add_init_script(SHOWN_JS % json.dumps(f"{steps:,}"))
        t0 = time.perf_counter()
        page.goto(srv.url + "/", wait_until="load")
        page.wait_for_function(CHART_JS, timeout=timeout_s * 1000)
        page.locator(f"text={steps:,}").first.wait_for(timeout=timeout_s * 1000)
        harness = time.perf_counter() - t0
        try:
            shown = page.wait_for_function("() => window.__trainboardShown", timeout=10_000).json_value()
        except Exception:  # noqa: BLE001 - a page without the card element (an older checkout): harness only
            shown = None
        return harness, (float(shown) / 1000.0 if isinstance(shown, (int, float)) else None)
    finally:
        page.close()


def zoom_to(b: Any, srv: Server, lo: int, hi: int, timeout_s: float) -> tuple[float, int, int]:
    """Open the run, zoom the loss chart to steps [lo, hi]; (seconds until every step of the range is in
    the drawn trace, points in range, steps in range)."""
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(srv.url + "/", wait_until="load")
        page.wait_for_function(CHART_JS, timeout=timeout_s * 1000)
        page.wait_for_timeout(1500)  # let the first render settle: the zoom is measured alone
        js = ("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
              " if (!g || !g.data || !g.data[0]) return false; const xs = g.data[0].x;"
              f" let n = 0; for (const x of xs) if (x >= {lo} && x <= {hi}) n++; return n >= {hi - lo + 1}; }}")
        relayout = (f"() => Plotly.relayout(document.querySelector('#overview-loss-graph .js-plotly-plot'),"
                    f" {{'xaxis.range': [{lo}, {hi}]}})")
        attempts = 3
        for attempt in range(1, attempts + 1):
            # on a loaded machine a late first-render update can redraw the full view over the zoom: zoom again
            t0 = time.perf_counter()
            page.evaluate(relayout)
            try:
                page.wait_for_function(js, timeout=(timeout_s if attempt == attempts else min(timeout_s, 30)) * 1000)
                break
            except Exception:  # noqa: BLE001 - retried, the last attempt raises
                if attempt == attempts:
                    raise
        dt = time.perf_counter() - t0
        n = page.evaluate("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                          f" return g.data[0].x.filter(x => x >= {lo} && x <= {hi}).length; }}")
        return dt, int(n), hi - lo + 1
    finally:
        page.close()


def wait_cache_written(cache_dir: Path, timeout_s: float = 300) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = os.listdir(cache_dir) if cache_dir.is_dir() else []
        if any(n.endswith(".tbc") for n in names) and not any(".tmp-" in n for n in names):
            return True
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------- sections

def fmt(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.2f} {unit}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.1f}x"


def measure_open(repo: Path, base: Path, steps: int, work: Path, name: str, timeout_s: float) -> dict[str, Any]:
    """First open (fresh series cache, a browser with an empty profile) and reopens after a restart of
    ``repo``'s dashboard on the same port: ``reopen`` by the same browser profile as the first open (its
    HTTP and script caches kept, as a person's browser keeps them), ``reopen_fresh`` by a browser with an
    empty profile (what this bench measured as the reopen before; the server side is the same)."""
    cache = work / f"cache-{name}"
    profile = work / f"profile-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(profile, ignore_errors=True)
    out: dict[str, Any] = {}
    port = 0
    for phase in ("first", "reopen", "reopen_fresh"):
        srv = Server(repo, base, cache, port=port).start()
        port = srv.port
        peak = PeakRss(srv.proc.pid)
        try:
            with (profile_browser(profile) if phase != "reopen_fresh" else contextmanager(browser)()) as b:
                try:
                    c0 = cpu_s(srv.proc.pid)
                    out[phase], out[f"{phase}_page"] = open_run_page(b, srv, steps, timeout_s)
                    out[f"{phase}_cpu"] = cpu_s(srv.proc.pid) - c0
                except Exception as exc:  # noqa: BLE001 - a checkout that cannot do it is reported, not fatal
                    out[phase] = None
                    out[f"{phase}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            out[f"{phase}_rss"] = peak.stop()
            if phase == "first":
                out["cache_written"] = wait_cache_written(cache, timeout_s=60 if repo == REPO else 1)
        finally:
            peak.stop()
            srv.stop()
    return out


FLOOR_APP = """
import argparse, sys
sys.path.insert(0, {repo!r})
import numpy as np
from dash import Dash, dcc, html
from components.layout import PLOTLY_ASSETS_IGNORE, PLOTLY_BUNDLE, build_index_string
ap = argparse.ArgumentParser(); ap.add_argument("--base-dir"); ap.add_argument("--port", type=int); a = ap.parse_args()
app = Dash(__name__, assets_folder={assets!r}, assets_ignore=PLOTLY_ASSETS_IGNORE, title="floor")
app.index_string = build_index_string(app.get_asset_url(PLOTLY_BUNDLE))
x = np.arange(2000) * 100.0
fig = {{"data": [{{"x": x.tolist(), "y": (1 / (1 + x)).tolist(), "type": "scatter", "mode": "lines"}}],
        "layout": {{"title": {{"text": "Loss"}}}}}}
app.layout = html.Div([html.Div("{steps:,}", id="overview-cards"), dcc.Graph(id="overview-loss-graph", figure=fig)])
app.run(host="127.0.0.1", port=a.port)
"""
"""The least a page of Trainboard's stack costs here: Dash with the same scripts and plotly bundle, one card and
one 2,000-point chart in the layout, no data read and no callback. Measured like a real open, it is the floor
under the 1M-value open's figures on this machine."""


def measure_floor(work: Path, base: Path, steps: int) -> dict[str, Any]:
    """:data:`FLOOR_APP` opened as :func:`measure_open` opens a dashboard (first, same-profile reopen, fresh)."""
    floor = work / "floor"
    floor.mkdir(exist_ok=True)
    (floor / "app.py").write_text(FLOOR_APP.format(repo=str(REPO), assets=str(REPO / "assets"), steps=steps))
    return measure_open(floor, base, steps, work, "floor", 60)


def time_in_process(base: Path, cache_dir: Path | None) -> tuple[float, int]:
    from callbacks.overview import effective_status, overview_cards, update_charts
    from services import seriescache
    from services.catalog import RunCatalog

    cache = seriescache.SeriesCache(cache_dir) if cache_dir else None
    seriescache.set_default_cache(cache)
    try:
        gc.collect()
        t0 = time.perf_counter()
        store = RunCatalog(base, watch=False)
        run = store.get(store.run_ids()[0])
        update_charts(run, None, False, {})
        overview_cards(effective_status(run))
        dt = time.perf_counter() - t0
        n = sum(len(s) for s in run.series.values())
        if cache is not None:
            cache.wait_idle(120)
    finally:
        seriescache.reset_default_cache()
    return dt, n


def section_1m(a: argparse.Namespace, work: Path, data: Path) -> dict[str, Any]:
    steps = a.steps
    base = prepared(data / f"run-{steps}", lambda d: write_run(d, steps), f"{steps:,} steps x 5 metrics")
    print(f"  measuring the browser open of {steps * 5:,} values ...")
    res: dict[str, Any] = {"steps": steps, "values": steps * 5, "new": measure_open(REPO, base, steps, work, "new", 180)}
    if a.anchor:
        res["anchor"] = measure_open(a.anchor, base, steps, work, "anchor", 180)
    res["floor"] = measure_floor(work, base, steps)
    shutil.rmtree(work / "inproc", ignore_errors=True)
    res["inproc_first"], n = time_in_process(base, work / "inproc")
    res["inproc_reopen"], _ = time_in_process(base, work / "inproc")
    res["inproc_values"] = n
    new, anc = res["new"], res.get("anchor", {})
    print(f"  {steps * 5:,} values, browser page request -> chart and step card, as the page shows them (the harness's "
          f"two waits, as measured before): first open {fmt(new.get('first_page'))} ({fmt(new.get('first'))}) "
          f"(goal <= 1.0 s), reopen after restart {fmt(new.get('reopen_page'))} ({fmt(new.get('reopen'))}) "
          f"(goal <= 0.5 s; same browser profile), {fmt(new.get('reopen_fresh_page'))} ({fmt(new.get('reopen_fresh'))}) "
          f"by a fresh browser (how the reopen was measured before); "
          f"server peak RSS {fmt(new.get('first_rss'), 'MB')}; server CPU during the open: first "
          f"{fmt(new.get('first_cpu'))}, reopen {fmt(new.get('reopen_cpu'))} (the rest is the browser)")
    if a.anchor:
        print(f"    anchor: first {fmt(anc.get('first_page'))} ({fmt(anc.get('first'))}), reopen "
              f"{fmt(anc.get('reopen_page'))} ({fmt(anc.get('reopen'))}), fresh browser "
              f"{fmt(anc.get('reopen_fresh_page'))} ({fmt(anc.get('reopen_fresh'))}), peak RSS "
              f"{fmt(anc.get('first_rss'), 'MB')}  -> anchor/new first {ratio(anc.get('first_page'), new.get('first_page'))} "
              f"({ratio(anc.get('first'), new.get('first'))}), reopen {ratio(anc.get('reopen_page'), new.get('reopen_page'))} "
              f"({ratio(anc.get('reopen'), new.get('reopen'))}), fresh-browser reopen "
              f"{ratio(anc.get('reopen_fresh_page'), new.get('reopen_fresh_page'))} "
              f"({ratio(anc.get('reopen_fresh'), new.get('reopen_fresh'))}); anchor server CPU first "
              f"{fmt(anc.get('first_cpu'))}, reopen {fmt(anc.get('reopen_cpu'))} {anc.get('first_error', '')}")
    fl = res["floor"]
    print(f"    floor (a page of the same scripts, one chart and card in its layout, no data): first "
          f"{fmt(fl.get('first_page'))} ({fmt(fl.get('first'))}), same-profile reopen {fmt(fl.get('reopen_page'))} "
          f"({fmt(fl.get('reopen'))}), fresh browser {fmt(fl.get('reopen_fresh_page'))} ({fmt(fl.get('reopen_fresh'))}) "
          f"-> new/floor first {ratio(new.get('first_page'), fl.get('first_page'))} "
          f"({ratio(new.get('first'), fl.get('first'))}), reopen {ratio(new.get('reopen_page'), fl.get('reopen_page'))} "
          f"({ratio(new.get('reopen'), fl.get('reopen'))}) {fl.get('first_error', '')}")
    print(f"    in-process (catalog read + first render): first {fmt(res['inproc_first'])}, "
          f"reopen {fmt(res['inproc_reopen'])} ({n:,} values)")
    return res


def section_tb(a: argparse.Namespace, work: Path, data: Path, opened: dict[str, Any],
               opened_anchor: dict[str, Any] | None) -> dict[str, Any]:
    """TensorBoard's loader on the same scalars, against Trainboard's first open in the browser (``opened``:
    the 1m section's figures, the page's own and the harness's)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = a.steps
    events = prepared(data / f"events-{steps}", lambda d: write_events(d, steps), f"{steps:,} steps of TB events")
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    n = sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
    dt = time.perf_counter() - t0
    anc = opened_anchor or {}
    print(f"  TensorBoard EventAccumulator: {n:,} scalars in {dt:.2f} s, RSS +{rss_mb() - before:.0f} MB; "
          f"TensorBoard / Trainboard browser first open = {ratio(dt, opened.get('first_page'))} as the page shows it "
          f"({ratio(dt, opened.get('first'))} to the harness's waits) (goal >= 25x)"
          + (f", anchor {ratio(dt, anc.get('first_page'))} ({ratio(dt, anc.get('first'))})" if anc else ""))
    tb_new, tb_anchor = opened.get("first"), anc.get("first")
    page_new, page_anchor = opened.get("first_page"), anc.get("first_page")
    return {"tb_s": dt, "scalars": n, "ratio_new": dt / tb_new if tb_new else None,
            "ratio_anchor": dt / tb_anchor if tb_anchor else None,
            "ratio_new_page": dt / page_new if page_new else None,
            "ratio_anchor_page": dt / page_anchor if page_anchor else None}


def measure_big(repo: Path, base: Path, steps: int, work: Path, name: str, zoom: int, timeout_s: float) -> dict[str, Any]:
    cache = work / f"cache-big-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    out: dict[str, Any] = {}
    srv = Server(repo, base, cache).start()
    peak = PeakRss(srv.proc.pid)
    try:
        for b in browser():
            try:
                c0 = cpu_s(srv.proc.pid)
                out["first"], out["first_page"] = open_run_page(b, srv, steps, timeout_s)
                out["first_cpu"] = cpu_s(srv.proc.pid) - c0
                out["first_rss"] = peak.peak
                lo = steps // 2
                c0 = cpu_s(srv.proc.pid)
                out["zoom"], out["zoom_points"], out["zoom_steps"] = zoom_to(b, srv, lo, lo + zoom - 1, timeout_s)
                out["zoom_cpu"] = cpu_s(srv.proc.pid) - c0  # includes the page open before the zoom
            except Exception as exc:  # noqa: BLE001
                out.setdefault("first", None)
                out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    finally:
        out["peak_rss"] = peak.stop()
        srv.stop()
    return out


def section_10m(a: argparse.Namespace, work: Path, data: Path) -> dict[str, Any]:
    steps, zoom = a.big_steps, min(1000, a.big_steps // 4)
    base = prepared(data / f"big-{steps}", lambda d: write_run(d, steps, METRICS_10),
                    f"{steps:,} steps x 10 metrics")
    size = (base / "logs" / "metrics.jsonl").stat().st_size / 2**20
    print(f"  measuring the browser open of {steps * 10:,} values ({size:.0f} MB JSONL) and a zoom to {zoom:,} steps ...")
    res: dict[str, Any] = {"steps": steps, "values": steps * 10, "mb": size,
                           "new": measure_big(REPO, base, steps, work, "new", zoom, a.big_timeout)}
    if a.anchor:
        res["anchor"] = measure_big(a.anchor, base, steps, work, "anchor", zoom, a.big_timeout)
    for who in ("new", "anchor") if a.anchor else ("new",):
        r = res[who]
        print(f"  {who:>6}: first open {fmt(r.get('first_page'))} as the page shows it ({fmt(r.get('first'))} to the "
              f"harness's waits) (goal <= 5 s; server CPU {fmt(r.get('first_cpu'))}), server peak RSS {fmt(r.get('peak_rss'), 'MB')} "
              f"(goal <= 600 MB); zoom to {zoom:,} steps: {fmt(r.get('zoom'))} with {r.get('zoom_points', '—')}"
              f"/{r.get('zoom_steps', '—')} points drawn (goal <= 0.5 s, all) {r.get('error', '')}")
    if a.anchor:
        print(f"    anchor/new: first open {ratio(res['anchor'].get('first'), res['new'].get('first'))}, "
              f"zoom {ratio(res['anchor'].get('zoom'), res['new'].get('zoom'))}")
    return res


def measure_runs(repo: Path, base: Path, n: int, work: Path, name: str, idle_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    srv = Server(repo, base, work / f"cache-runs-{name}").start()
    pid = srv.proc.pid
    try:
        time.sleep(min(idle_s, 5))  # startup work (discovery, warm-up) done before the idle window
        c0 = cpu_s(pid)
        time.sleep(idle_s)
        out["idle_cpu_pct"] = 100 * (cpu_s(pid) - c0) / idle_s
        last = f"run-{n - 1:05d}"
        for b in browser():
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            try:
                t0 = time.perf_counter()
                page.goto(srv.url + "/", wait_until="load")
                page.locator(f"#shell-run-hint:has-text('{n:,} runs'), #shell-run-hint:has-text('{n} runs')"
                             ).first.wait_for(timeout=240_000)
                out["picker"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                page.goto(srv.url + "/runs", wait_until="load")
                page.locator("#runs-table td").first.wait_for(timeout=240_000)
                page.locator(f"#runs-table :text('run-00000')").first.wait_for(timeout=240_000)
                out["runs_page"] = time.perf_counter() - t0
                page.wait_for_timeout(3000)  # the first ticks after the page rendered
                c0, t0 = cpu_s(pid), time.perf_counter()
                page.wait_for_timeout(idle_s * 1000)
                elapsed = time.perf_counter() - t0
                used = cpu_s(pid) - c0
                out["tab_cpu_pct"] = 100 * used / elapsed
                out["tick_ms"] = 1000 * used / max(elapsed / 1.0, 1)  # the page ticks once a second
                out["last_listed"] = page.locator(f"text={last}").count() > 0 or None
            except Exception as exc:  # noqa: BLE001
                out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            finally:
                page.close()
    finally:
        srv.stop()
    return out


def unchanged_refresh_inprocess(base: Path) -> tuple[float, float, int]:
    """In-process: (seconds of one unchanged Runs-table refresh, of one picker refresh, runs): the work
    of the two callbacks a Runs tab ticks (the listing's fingerprint; the picker's run-list digest)."""
    from callbacks.shell import picker_state, picker_update
    from services.catalog import RunCatalog

    cat = RunCatalog(base)
    try:
        rows, _ = cat.listing()
        _, value, hint, key = picker_state(cat)
        best_runs, best_picker = math.inf, math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            rows, _ = cat.listing()
            best_runs = min(best_runs, time.perf_counter() - t0)
            t0 = time.perf_counter()
            picker_update(cat, value, key, hint)
            best_picker = min(best_picker, time.perf_counter() - t0)
            time.sleep(0.3)
        return best_runs, best_picker, len(rows)
    finally:
        cat.stop()


def section_runs(a: argparse.Namespace, work: Path, data: Path) -> dict[str, Any]:
    n = a.runs
    base = prepared(data / f"many-{n}", lambda d: write_many_runs(d, n), f"{n:,} tiny runs")
    print(f"  measuring {n:,} runs: picker, Runs page, idle CPU over {a.idle_s:.0f} s without and with a tab ...")
    res: dict[str, Any] = {"runs": n, "new": measure_runs(REPO, base, n, work, "new", a.idle_s)}
    if a.anchor:
        res["anchor"] = measure_runs(a.anchor, base, n, work, "anchor", a.idle_s)
    res["inproc_runs_s"], res["inproc_picker_s"], res["inproc_n"] = unchanged_refresh_inprocess(base)
    for who in ("new", "anchor") if a.anchor else ("new",):
        r = res[who]
        print(f"  {who:>6}: picker {fmt(r.get('picker'))}, Runs page {fmt(r.get('runs_page'))} (goal <= 1.5 s); "
              f"server CPU per 1 s tick with the Runs tab open {fmt(r.get('tick_ms'), 'ms')} (goal <= 50 ms); "
              f"idle CPU {fmt(r.get('idle_cpu_pct'), '%')} without a browser, {fmt(r.get('tab_cpu_pct'), '%')} "
              f"with a tab (goal ~0) {r.get('error', '')}")
    print(f"    in-process unchanged refresh: Runs table {1000 * res['inproc_runs_s']:.1f} ms, picker "
          f"{1000 * res['inproc_picker_s']:.1f} ms ({res['inproc_n']:,} runs)")
    return res


def run(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, short idle window (correctness only)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections of %(default)s")
    ap.add_argument("--steps", type=int, default=None, help="steps of the 1M run (5 metrics each; default 200,000)")
    ap.add_argument("--big-steps", type=int, default=None, help="steps of the 10M run (10 metrics; default 1,000,000)")
    ap.add_argument("--runs", type=int, default=None, help="tiny runs in the many-runs base dir (default 2,000)")
    ap.add_argument("--idle-s", type=float, default=None, help="idle CPU window in seconds (default 20)")
    ap.add_argument("--big-timeout", type=float, default=180.0, help="seconds to wait for the 10M open")
    ap.add_argument("--anchor", type=Path, default=None, help="another checkout whose app.py is measured alongside")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "trainboard-bench-data")
    a = ap.parse_args(argv)
    q = a.quick
    a.steps = a.steps or (8_000 if q else 200_000)  # quick: just above the series cache's 1 MiB floor
    a.big_steps = a.big_steps or (12_000 if q else 1_000_000)
    a.runs = a.runs or (40 if q else 2_000)
    a.idle_s = a.idle_s if a.idle_s is not None else (2.0 if q else 20.0)
    if a.anchor is not None:
        a.anchor = a.anchor.resolve()
        if not (a.anchor / "app.py").is_file():
            ap.error(f"--anchor {a.anchor}: no app.py there")
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    data = a.data_dir / ("quick" if q else "full")
    data.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "1m" in sections or "tb" in sections:
            print(f"[1m] {a.steps:,} steps x 5 metrics")
            out["1m"] = section_1m(a, work, data)
        if "tb" in sections:
            print("[tb] TensorBoard on the same scalars")
            out["tb"] = section_tb(a, work, data, out["1m"]["new"], out["1m"].get("anchor"))
        if "10m" in sections:
            print(f"[10m] {a.big_steps:,} steps x 10 metrics")
            out["10m"] = section_10m(a, work, data)
        if "runs" in sections:
            print(f"[runs] {a.runs:,} runs in one base dir")
            out["runs"] = section_runs(a, work, data)
    return out


def main() -> int:
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
