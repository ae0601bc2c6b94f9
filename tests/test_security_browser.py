"""The hardened dashboard still works in a real Chromium on http://localhost:PORT and http://127.0.0.1:PORT,
with and without a token: pages load, a slider's write (a POST that passes the Host and Origin checks) is
saved, the ``?token=`` visit ends on a URL without the token, and the console stays clean."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collectors import Monitor, runformat as rf
from tests.conftest import assert_no_console_errors

pytestmark = pytest.mark.browser
TIMEOUT_MS = 60_000
TOKEN = "browser-T0ken-2026"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_dashboard_works_on_localhost_and_loopback(tmp_path: Path, dashboard: Any, page: Any, host: str,
                                                   token: str | None) -> None:
    run = tmp_path / "base" / "run-a"
    with Monitor(run, anomaly=False) as mon:
        for i in range(1, 6):
            mon.log(i, loss=2.0 / i)
    args = ["--token", token] if token else []
    srv = dashboard(tmp_path / "base", *args, wait_headers={"X-Trainboard-Token": token} if token else None)
    root = f"http://{host}:{srv.port}"

    page.goto(root + "/alerts" + (f"?token={token}" if token else ""), wait_until="load")
    assert page.url == root + "/alerts"  # the token left the address bar (and the history)
    thumb = page.locator('[id=\'{"key":"gradient.explosion_threshold","type":"alerts-threshold"}\'] [role=slider]')
    thumb.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('[id*=\"gradient.explosion_threshold\"] [role=slider]')"
                           ".getAttribute('aria-valuenow') === '10'", timeout=TIMEOUT_MS)
    thumb.focus()
    thumb.press("ArrowRight")
    page.get_by_text("Saved gradient.explosion_threshold = 11").wait_for(timeout=TIMEOUT_MS)
    assert json.loads(rf.RunPaths.of(run).thresholds.read_text())["gradient"]["explosion_threshold"] == 11

    page.goto(root + "/snapshots", wait_until="load")  # the cookie (or nothing) carries on
    page.get_by_text("No snapshots yet").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Snapshot now").click()
    page.locator("#snapshots-now-result", has_text="Snapshot not saved: no checkpoint").wait_for(timeout=TIMEOUT_MS)
    if token:
        cookies = page.context.cookies()
        assert [c["name"] for c in cookies] == ["trainboard_token"] and cookies[0]["httpOnly"]
        assert cookies[0]["sameSite"] == "Strict"
    assert_no_console_errors(page)
