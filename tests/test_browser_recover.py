"""The Recover panel in a real browser (issue 11): on the Snapshots page a snapshot with a last good state
shows its step, the suggested skip range and the code; editing the range updates the code and the
command, a bad range says why and keeps the last good code; a snapshot without a last good state shows
no panel. No console errors.
"""
from __future__ import annotations

import pytest

from collectors import runformat as rf
from tests.conftest import assert_no_console_errors, save_screenshot
from tests.test_recovery_units import make_run

pytestmark = pytest.mark.browser
TIMEOUT_MS = 60_000


def test_recover_panel_on_the_snapshots_page(tmp_path, dashboard, page):
    run, name = make_run(tmp_path)
    other = "manual_20260101_130000"
    (rf.RunPaths.of(run).snapshots_dir / other).mkdir()
    rf.write_json_atomic(rf.RunPaths.of(run).snapshots_dir / other / rf.SNAPSHOT_METADATA,
                         {"reason": "manual", "step": 160, "last_good": None})
    srv = dashboard(run)
    page.goto(srv.url + "/snapshots", wait_until="load")
    page.locator("#snapshots-table tr", has_text="loss_spike").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#snapshots-table tr", has_text="loss_spike").first.locator("input[type=radio]").check()
    panel = page.locator(".recover")
    panel.wait_for(timeout=TIMEOUT_MS)
    assert "step 100" in panel.inner_text(), panel.inner_text()
    skip = panel.locator("input[type=text]")
    assert skip.input_value() == "141-150"
    code = panel.locator("pre.recover__code")
    assert "SkipBatches('141-150')" in code.inner_text() and "resume_from_checkpoint=" in code.inner_text()
    assert "Suggested 141-150" in panel.locator(".recover__message").inner_text()

    skip.fill("141-175")
    page.wait_for_function("() => document.querySelector('pre.recover__code').innerText.includes(\"SkipBatches('141-175')\")",
                           timeout=TIMEOUT_MS)
    assert "--skip-batches 141-175" in panel.locator(".recover__command").inner_text()
    save_screenshot(page, "recover-panel.png")

    skip.fill("175-141")
    panel.locator(".recover__error").wait_for(timeout=TIMEOUT_MS)
    assert "ends before it starts" in panel.locator(".recover__error").inner_text()
    assert "SkipBatches('141-175')" in code.inner_text()  # the last good code stays

    page.locator("#snapshots-table tr", has_text="manual").first.locator("input[type=radio]").check()
    page.wait_for_function("() => !document.querySelector('.recover')", timeout=TIMEOUT_MS)
    assert_no_console_errors(page)
