"""Shared test fixtures: offline Hugging Face, a real dashboard server subprocess, a real headless Chromium.

Browser tests follow Dash's own: an app per test (here a real ``python app.py`` process on a free port),
wait for text rather than sleeping, and finish by asserting the browser console has no errors.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One torch thread per process: tests run a server, a browser and trainings side by side on 2 cores, where
# torch's spinning worker threads made tiny models up to 100x slower than single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The dashboard's series cache (services.seriescache) outlives processes in a per-user folder; tests (and the
# servers they start, which inherit this) use a fresh one of their own, never the person's ~/.cache.
if "TRAINBOARD_CACHE_DIR" not in os.environ:
    import tempfile as _tempfile

    os.environ["TRAINBOARD_CACHE_DIR"] = _tempfile.mkdtemp(prefix="trainboard-series-test-")

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("TRAINBOARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SERVER_START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = SERVER_START_TIMEOUT_S, proc: subprocess.Popen | None = None,
              headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


class Server:
    """A real ``python app.py`` process serving a base dir on a free loopback port."""

    def __init__(self, base_dir: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 wait_headers: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base_dir.parent / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--base-dir", str(base_dir),
                                      "--port", str(self.port), *(extra_args or [])], cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        wait_http(self.url + "/", proc=self.proc, headers=wait_headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: ``dashboard(base_dir, *args)`` starts a real server; all are stopped after the test."""
    servers: list[Server] = []

    def start(base_dir: Path, *args: str, env: dict[str, str] | None = None,
              wait_headers: dict[str, str] | None = None) -> Server:
        srv = Server(Path(base_dir), list(args), env, wait_headers)
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for the session, driven by Playwright (never `playwright install`)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class ConsoleLog:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, msg) -> None:  # playwright ConsoleMessage
        if msg.type == "error":
            self.errors.append(msg.text)


@pytest.fixture
def page(browser):
    """A fresh page (1400×1000) whose console errors and page errors are collected in ``page.console``."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    log = ConsoleLog()
    pg.on("console", log)
    pg.on("pageerror", lambda exc: log.errors.append(f"pageerror: {exc}"))
    pg.console = log  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def assert_no_console_errors(pg) -> None:
    errors = [e for e in pg.console.errors if "favicon" not in e]
    assert not errors, f"browser console errors: {errors}"


def save_screenshot(pg, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    pg.screenshot(path=str(path), full_page=True)
    return path


def default_sigint() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: its default disposition back, so Python
    installs its KeyboardInterrupt handler as in a terminal. A suite started in the background by a shell
    without job control (``cmd &`` in a script, as some CI launchers do) inherits SIGINT *ignored*, and
    a child would then never see the signal the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
