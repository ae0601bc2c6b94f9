"""Scale: a run of 1,000,000 metric values (200,000 steps × 5 metrics).

Measures, side by side in one run:
- Trainboard: a real ``python app.py`` server; time from the first page request until the browser's
  loss card shows the last step (headless Chromium), and the server's RSS after that;
- the same open done in-process (RunCatalog read + first chart render), for a breakdown;
- TensorBoard's own loader (EventAccumulator, all scalars kept) on the same scalars written as an event
  file by SummaryWriter: load time and RSS growth;
and prints the ratio. Run: ``python bench/bench_scale.py [--steps 200000]``.
"""
from __future__ import annotations

import argparse
import gc
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
METRICS = ("loss", "learning_rate", "grad_norm", "epoch", "tokens_seen")


def write_run(run: Path, steps: int) -> None:
    from collectors import runformat as rf

    paths = rf.RunPaths.of(run)
    paths.logs_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - steps
    with open(paths.metrics, "wb") as fh:
        buf = []
        for i in range(1, steps + 1):
            rec = rf.make_record("train", step=i, time=t0 + i, loss=2.0 + math.sin(i / 500) + (5.0 if i % 50_000 == 0 else 0),
                                 learning_rate=1e-3 * (1 - i / steps), grad_norm=1.0 + (i % 97) / 100, epoch=i / 10_000,
                                 tokens_seen=i * 512)
            buf.append(rf.dumps(rec))
            if len(buf) == 10_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    rf.write_json_atomic(paths.status, {"v": 1, "state": "finished", "step": steps, "train_loss": 2.0,
                                        "updated_at": time.time(), "memory": {}, "throughput": {}})


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


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def time_tensorboard(log_dir: Path) -> tuple[float, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    n = sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
    dt = time.perf_counter() - t0
    grown = rss_mb() - before
    print(f"  TensorBoard EventAccumulator: {n:,} scalars loaded in {dt:.2f} s, RSS +{grown:.0f} MB")
    return dt, grown


def time_in_process(base: Path) -> float:
    from callbacks.overview import overview_cards, effective_status, update_charts
    from services.catalog import RunCatalog

    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    store = RunCatalog(base, watch=False)
    run = store.get(store.run_ids()[0])
    update_charts(run, None, False, {})
    overview_cards(effective_status(run))
    dt = time.perf_counter() - t0
    n = sum(len(s) for s in run.series.values())
    print(f"  in-process RunCatalog + first render: {n:,} values in {dt:.2f} s, RSS +{rss_mb() - before:.0f} MB")
    return dt


def time_browser(base: Path, steps: int) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, wait_http

    port = free_port()
    srv = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--base-dir", str(base), "--port", str(port)],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc=srv)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.wait_for_function(
                "() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                " return g && g.data && g.data.length > 0 && g.data[0].x.length > 100; }", timeout=120_000)
            page.locator(f"text={steps:,}").first.wait_for(timeout=120_000)
            dt = time.perf_counter() - t0
            b.close()
        rss = rss_mb(srv.pid)
    finally:
        srv.terminate()
        srv.wait(timeout=10)
    print(f"  Trainboard in the browser: page request -> loss chart and step card shown in {dt:.2f} s; "
          f"server RSS {rss:.0f} MB")
    return dt, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200_000, help="steps (5 metrics each; default %(default)s)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, events = Path(tmp) / "run", Path(tmp) / "events"
        t0 = time.perf_counter()
        write_run(base, a.steps)
        size = (base / "logs" / "metrics.jsonl").stat().st_size / 2**20
        print(f"wrote {a.steps:,} steps x {len(METRICS)} metrics ({size:.0f} MB JSONL) in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        write_events(events, a.steps)
        print(f"wrote the same scalars as a TensorBoard event file in {time.perf_counter() - t0:.1f} s")
        print("measuring:")
        browser_s, rss = time_browser(base, a.steps)
        inproc_s = time_in_process(base)
        tb_s, tb_mb = time_tensorboard(events)
    print(f"\nTrainboard open: {browser_s:.2f} s (goal <= 2 s), server RSS {rss:.0f} MB (goal <= 400 MB)")
    print(f"TensorBoard EventAccumulator: {tb_s:.2f} s, +{tb_mb:.0f} MB")
    print(f"ratio TensorBoard/Trainboard load time = {tb_s / browser_s:.1f}x (browser end to end), "
          f"{tb_s / inproc_s:.1f}x (in-process)  (goal >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
