"""Server push (services/push.py, assets/push.js): a file change reaches the open page at once.

Units on the event stream's text; a real server's stream answering a real file change; and a real browser
whose loss card is refreshed by a push (counted by assets/push.js), with no console errors.
"""
from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

from collectors import Monitor
from services.push import MIN_PUSH_GAP_MS, PUSH_PATH, ChangeFeed, event_stream
from tests.conftest import assert_no_console_errors

TIMEOUT_MS = 60_000


def test_stream_says_hello_then_one_line_per_change_and_keeps_alive() -> None:
    feed = ChangeFeed()
    feed.notify()
    now = [0.0]
    stream = event_stream(feed, heartbeat_s=0.01, max_s=1.0, clock=lambda: now[0])
    hello = next(stream)
    assert hello.startswith("retry: 2000\nevent: hello\n") and f'"min_gap_ms": {MIN_PUSH_GAP_MS}' in hello
    assert '"count": 1' in hello
    assert next(stream) == ": keep-alive\n\n"  # nothing changed within the heartbeat
    feed.notify()
    feed.notify()  # two changes before the next read: one line
    assert next(stream) == "data: 3\n\n"
    now[0] = 2.0  # past the stream's life: it ends (the browser reconnects)
    assert list(stream) == []


def test_wait_returns_at_the_change_from_another_thread() -> None:
    feed = ChangeFeed()
    threading.Timer(0.05, feed.notify).start()
    assert feed.wait(0, timeout=30) == 1
    assert feed.wait(1, timeout=0.01) == 1  # nothing new: after the timeout, unchanged


def _read_events(port: int, want: int, timeout: float = 60) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", PUSH_PATH)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    lines: list[str] = []
    while len([ln for ln in lines if ln.startswith("data: ")]) < want:
        line = resp.fp.readline().decode()
        assert line, "the stream ended early"
        lines.append(line.rstrip("\n"))
    conn.close()
    return lines


def test_server_streams_a_change_when_a_run_is_logged_to(tmp_path: Path, dashboard) -> None:
    run = tmp_path / "run"
    mon = Monitor(base_dir=run)
    mon.log(1, loss=2.0)
    mon.flush()
    srv = dashboard(run)
    got: list[list[str]] = []
    reader = threading.Thread(target=lambda: got.append(_read_events(srv.port, want=2)), daemon=True)
    reader.start()
    time.sleep(1.0)  # the stream is open (its hello is the first data line)
    mon.log(2, loss=1.5)
    mon.close()
    reader.join(timeout=60)
    assert got, "no change was pushed within 60 s of a log"
    data = [ln for ln in got[0] if ln.startswith("data: ")]
    assert '"count"' in data[0] and data[1].split(": ")[1].isdigit()


def test_browser_card_is_refreshed_by_a_push(tmp_path: Path, dashboard, page) -> None:
    run = tmp_path / "run"
    mon = Monitor(base_dir=run)
    for step in range(1, 21):
        mon.log(step, loss=1.0 + 1 / step)
    mon.flush()
    srv = dashboard(run)
    page.goto(srv.url + "/", wait_until="load")
    card = page.locator('[id=\'{"metric":"train_loss","type":"overview-card"}\']')
    card.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("() => window.trainboardPush && window.trainboardPush.connected", timeout=TIMEOUT_MS)
    before = page.evaluate("() => window.trainboardPush.refreshes")
    mon.log(21, loss=7.125)
    mon.close()
    page.wait_for_function("() => window.trainboardPush.refreshes > %d" % before, timeout=TIMEOUT_MS)
    page.locator("text=7.125").first.wait_for(timeout=TIMEOUT_MS)
    assert_no_console_errors(page)


@pytest.mark.parametrize("path", [PUSH_PATH + "/../../etc/passwd", PUSH_PATH + "?run=../../x"])
def test_push_route_takes_no_input(tmp_path: Path, dashboard, path: str) -> None:
    srv = dashboard(tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    status = resp.status
    head = resp.fp.readline().decode() if status == 200 else resp.read().decode()
    conn.close()
    assert status in (200, 404) and "root:" not in head
