"""The ``python app.py`` command line: help, clear errors for bad input, and the real --demo."""
from __future__ import annotations

import subprocess
import sys

import pytest

from collectors import runformat as rf
from tests.conftest import REPO, assert_no_console_errors, free_port, save_screenshot, wait_http


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "app.py"), *args], capture_output=True, text=True, timeout=120)


def test_help_explains_every_option():
    out = run_app("--help")
    assert out.returncode == 0
    for opt in ("--base-dir", "--host", "--port", "--poll", "--demo", "--demo-steps"):
        assert opt in out.stdout
    assert "127.0.0.1" in out.stdout and "8081" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--port", "70000"], "--port must be between 1 and 65535"),
    (["--port", "abc"], "invalid int value"),
    (["--base-dir", "/definitely/not/here"], "does not exist"),
    (["--demo-steps", "0"], "--demo-steps must be a positive integer"),
], ids=["port-range", "port-type", "missing-dir", "demo-steps"])
def test_bad_arguments_give_a_clear_error_not_a_traceback(args, message):
    out = run_app(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_base_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    out = run_app("--base-dir", str(f))
    assert out.returncode == 2 and "is a file, not a directory" in out.stderr


def test_demo_module_rejects_bad_input():
    out = subprocess.run([sys.executable, "-m", "collectors.demo", "--base-dir", "x", "--max-steps", "-3"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--max-steps must be a positive integer" in out.stderr


def test_demo_turns_spectral_metrics_on_by_default():
    from collectors.demo import DEMO_SVD_INTERVAL, parse_args

    assert parse_args(["--base-dir", "x"]).spectral is True
    assert parse_args(["--base-dir", "x", "--spectral"]).spectral is True  # the old flag still parses
    assert parse_args(["--base-dir", "x", "--no-spectral"]).spectral is False
    assert parse_args(["--base-dir", "x"]).svd_interval == DEMO_SVD_INTERVAL == 20


@pytest.mark.integration
def test_demo_without_flags_writes_spectral_records(tmp_path):
    """`python -m collectors.demo` as `app.py --demo` starts it (no spectral flag): the SVD page's file fills."""
    run = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "collectors.demo", "--base-dir", str(run), "--max-steps", "20",
                          "--eval-steps", "20", "--samples-every", "0"], cwd=REPO, capture_output=True, text=True,
                         timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = list(rf.iter_records(rf.RunPaths.of(run).spectral))
    assert recs and {r["step"] for r in recs} == {20} and all(r["kind"] == "spectral" for r in recs)


@pytest.mark.browser
@pytest.mark.integration
def test_demo_trains_for_real_and_the_dashboard_shows_it(tmp_path, page):
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--demo", "--demo-steps", "150",
                             "--base-dir", str(tmp_path / "runs"), "--port", str(port)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc=proc)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        try:
            page.locator(".card").filter(has_text="finished").wait_for(timeout=240_000)
        except Exception:  # say what the page, the training and the server showed, not just "timeout"
            logs = [p.read_text(errors="replace")[-3000:] for p in sorted(tmp_path.rglob("*.log"))]
            statuses = [p.read_text()[:600] for p in (tmp_path / "runs").glob("*/status/training_status.json")]
            pytest.fail("the Overview never showed 'finished'.\nPage: " + page.inner_text("body")[:800]
                        + f"\nConsole: {page.console.errors[:5]}\nStatus: {statuses}\nLogs: " + "\n---\n".join(logs))
        runs = rf.discover_runs(tmp_path / "runs")
        assert len(runs) == 1 and runs[0].name.startswith("demo-")
        evals = [r["eval_loss"] for r in rf.iter_records(rf.RunPaths.of(runs[0]).metrics) if r["kind"] == "eval"]
        assert len(evals) >= 5 and evals[-1] < evals[0]
        page.wait_for_function("() => document.querySelector('#overview-loss-graph .js-plotly-plot')"
                               ".data[1].x.length >= 5", timeout=30_000)
        save_screenshot(page, "demo-overview.png")
        assert list(rf.iter_records(rf.RunPaths.of(runs[0]).spectral)), "the demo wrote no spectral metrics"
        page.goto(f"http://127.0.0.1:{port}/svd", wait_until="load")  # every page has data, SVD included
        page.locator(".svd-filter__summary").filter(has_text="4 layers").wait_for(timeout=60_000)
        save_screenshot(page, "demo-svd.png")
        assert_no_console_errors(page)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
