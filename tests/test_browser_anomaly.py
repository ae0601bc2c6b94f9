"""Alerts and Snapshots pages in a real headless Chromium against a real ``python app.py`` server:
snapshot now → a manual snapshot appears; a slider → control/thresholds.json changes and the detector
uses it; the token guard refuses requests without the token."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from collectors import Monitor, runformat as rf
from collectors import snapshots as S
from collectors.anomaly.plugin import AnomalyPlugin
from tests.conftest import REPO, assert_no_console_errors, free_port, save_screenshot, wait_http

pytestmark = pytest.mark.browser
TIMEOUT_MS = 60_000
LOSSES = [2.0, 1.8, 1.6, 1.5, 1.45, 1.44, 1.43, 1.42, 1.41, 1.40, 2.6, 1.5]


def make_run(run: Path) -> Path:
    """A finished run written by a real Monitor (anomaly rules on: alerts + snapshots), plus a checkpoint."""
    torch = pytest.importorskip("torch")
    hf = run.parent / "hf_output"
    (hf / "checkpoint-12").mkdir(parents=True)
    (hf / "checkpoint-12" / "model.safetensors").write_text("weights-12")
    model = torch.nn.Linear(4, 2)
    with Monitor(run, run_config={"output_dir": str(hf)}) as mon:
        mon.watch(model=model)
        for i, loss in enumerate(LOSSES, 1):
            mon.log(i, loss=loss, grad_norm=500.0 if i == 12 else 1.0, learning_rate=1e-3)
    return hf


def test_alerts_and_snapshots_pages(tmp_path, dashboard, page):
    base = tmp_path / "base"
    run = base / "run-a"
    hf = make_run(run)
    srv = dashboard(base)

    # ---- Alerts page: live incidents, severity colours, filters, summary
    page.goto(srv.url + "/alerts", wait_until="load")
    page.locator("#alerts-feed .alert__rule", has_text="loss_spike").wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#alerts-feed .alert__sev.severity--critical").count() >= 1  # gradient explosion
    assert page.locator("#alerts-summary .badge").first.inner_text().replace("\n", " ").startswith("INCIDENTS")
    with rf.JsonlWriter(rf.RunPaths.of(run).alerts) as w:  # a new alert arrives: the feed follows
        w.append(rf.make_record("alert", rule="lr_too_high", category="learning_rate", severity="high", step=13,
                                value=2.0, threshold=1.0, message="LR injected by the test", metadata={}, time=time.time()))
    page.locator("#alerts-feed .alert__msg", has_text="LR injected by the test").wait_for(timeout=TIMEOUT_MS)
    page.locator("#alerts-severity-filter").click()
    # the menu mounts its search box a moment after the click: keys typed before it has focus are lost
    page.locator("input.dash-dropdown-search:focus").wait_for(timeout=TIMEOUT_MS)
    page.locator("[role=option]", has_text="critical").wait_for(timeout=TIMEOUT_MS)
    page.keyboard.type("critical")
    page.wait_for_function("() => { const o = [...document.querySelectorAll('[role=option]')];"
                           " return o.length === 1 && o[0].innerText.trim() === 'critical'; }", timeout=TIMEOUT_MS)
    page.keyboard.press("Enter")  # the search has narrowed the menu to that one option
    page.wait_for_function("() => document.querySelectorAll('#alerts-feed .incident').length === "
                           "document.querySelectorAll('#alerts-feed .alert__sev.severity--critical').length", timeout=TIMEOUT_MS)

    # ---- threshold slider → control/thresholds.json → the detector uses it
    slider_input = page.locator('[id=\'{"key":"smart.loss_spike_threshold","type":"alerts-threshold"}\'] input').first
    slider_input.wait_for(timeout=TIMEOUT_MS)
    slider_input.fill("0.55")
    slider_input.press("Tab")  # the typed value is committed when the box loses focus
    page.get_by_text("Saved smart.loss_spike_threshold = 0.55").wait_for(timeout=TIMEOUT_MS)
    typed = page.locator('[id=\'{"key":"smart.accuracy_drop_threshold","type":"alerts-threshold"}\'] input').first
    typed.fill("12")
    typed.press("Enter")  # Enter saves too (assets/thresholds.js), not only leaving the box
    page.get_by_text("Saved smart.accuracy_drop_threshold = 12").wait_for(timeout=TIMEOUT_MS)
    thumb = page.locator('[id=\'{"key":"gradient.explosion_threshold","type":"alerts-threshold"}\'] [role=slider]')
    thumb.focus()
    thumb.press("ArrowRight")  # moving the slider itself (keyboard): 10 → 11
    page.get_by_text("Saved gradient.explosion_threshold = 11").wait_for(timeout=TIMEOUT_MS)
    doc = json.loads(rf.RunPaths.of(run).thresholds.read_text())
    assert doc["smart"]["loss_spike_threshold"] == 0.55 and doc["gradient"]["explosion_threshold"] == 11
    assert doc["smart"]["accuracy_drop_threshold"] == 12
    plugin = AnomalyPlugin(control_poll_s=0)
    mon = Monitor(run, plugins=[plugin], run_config={"output_dir": str(hf)})  # the training goes on
    mon.start()
    assert plugin.config.smart.loss_spike_threshold == 0.55 and plugin.config.gradient.explosion_threshold == 11
    mon.log(1, loss=1.0, grad_norm=10.5)  # above the old 10, below the new 11: no alert
    assert plugin.alerts_written == 0
    mon.close()
    save_screenshot(page, "alerts.png")
    assert_no_console_errors(page)

    # ---- Snapshots page: history, viewer, snapshot now
    page.goto(srv.url + "/snapshots", wait_until="load")
    page.locator("#snapshots-table td", has_text="loss_spike").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#snapshots-table input[type=radio]").first.check()
    page.locator("#snapshots-detail", has_text="metadata.json").wait_for(timeout=TIMEOUT_MS)
    n_before = len(S.list_snapshots(run))
    page.get_by_role("button", name="Snapshot now").click()
    page.locator("#snapshots-now-result", has_text="Saved manual_").wait_for(timeout=TIMEOUT_MS)
    page.locator("#snapshots-table td", has_text="manual").first.wait_for(timeout=TIMEOUT_MS)
    manual = [s for s in S.list_snapshots(run) if s.kind == "manual"]
    assert len(S.list_snapshots(run)) == n_before + 1 and len(manual) == 1
    assert (manual[0].path / "model" / "model.safetensors").read_text() == "weights-12"
    # the selection follows the snapshot (not the row number) while rows are added
    page.locator("#snapshots-detail .snapshots__name", has_text="loss_spike").wait_for(timeout=TIMEOUT_MS)
    save_screenshot(page, "snapshots.png")
    # at this 1,400 px window every column of the history shows whole, none cut at its panel's edge
    cut = page.evaluate("""() => { const box = document.querySelector('.snapshots__table').getBoundingClientRect();
        return [...document.querySelectorAll('#snapshots-table th')].filter(th => {
            const r = th.getBoundingClientRect(); return r.width > 0 && r.right > box.right + 1; })
            .map(th => th.innerText.trim()); }""")
    assert cut == [], f"history columns cut at the panel's edge: {cut}"
    # the disk panel: space used, the budget the collector wrote, what retention keeps (issue 11)
    page.locator("#snapshots-retention", has_text="used of the").wait_for(timeout=TIMEOUT_MS)
    page.locator("#snapshots-retention", has_text="Keeps the 3 best models by loss").wait_for(timeout=TIMEOUT_MS)
    # delete, with confirmation: refused for a snapshot a person pinned, done for the manual one
    page.on("dialog", lambda d: d.accept())
    page.locator("#snapshots-table tr", has_text="best_model").first.locator("input[type=radio]").check()
    page.get_by_role("button", name="Pin", exact=True).click()
    page.locator("#snapshots-action-message", has_text="Pinned").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Delete…").click()
    page.locator("#snapshots-action-message", has_text="is pinned: unpin it before deleting").wait_for(timeout=TIMEOUT_MS)
    page.locator("#snapshots-table tr", has_text="manual").first.locator("input[type=radio]").check()
    page.get_by_role("button", name="Delete…").click()
    page.locator("#snapshots-action-message", has_text="Deleted manual_").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#snapshots-table').innerText.includes('manual_')",
                           timeout=TIMEOUT_MS)
    assert [s for s in S.list_snapshots(run) if s.kind == "manual"] == []
    assert any(s.pinned for s in S.list_snapshots(run) if s.reason.startswith("best_model"))
    assert_no_console_errors(page)


def make_incident_run(run: Path) -> None:
    """A run with a lasting gradient explosion, a short NaN and improving losses (best-model events)."""
    torch = pytest.importorskip("torch")
    import math
    model = torch.nn.Linear(4, 2)
    with Monitor(run) as mon:
        mon.watch(model=model)
        for step in range(1, 121):
            with torch.no_grad():
                model.weight.add_(1e-3)  # the weights move, as a training's do (a still model is optimizer_stalled)
            loss = 2.0 * 0.99 ** step * (1 + 0.03 * math.sin(step * 1.3))
            grad = 80.0 if 40 <= step < 50 else 1.0 + 0.05 * math.sin(step)
            mon.log(step, loss=math.nan if step == 90 else loss, grad_norm=grad, learning_rate=1e-3)


def test_incidents_ack_mute_and_events(tmp_path, dashboard, page):
    from collectors.anomaly import incidents as inc
    base = tmp_path / "base"
    run = base / "run-i"
    make_incident_run(run)
    srv = dashboard(base)
    page.goto(srv.url + "/alerts", wait_until="load")
    explosion = page.locator("#alerts-feed .incident", has_text="gradient_explosion")
    explosion.wait_for(timeout=TIMEOUT_MS)
    assert "10×" in explosion.locator(".incident__count").inner_text()  # ten firings, one incident
    badges = {b.locator(".badge__label").inner_text().lower(): b.locator(".badge__value").inner_text()
              for b in page.locator("#alerts-summary .badge").all()}
    assert badges["incidents"] == "2", badges  # gradient explosion + NaN, not the events
    assert int(badges["events"]) > 0
    # expandable to its firings
    explosion.locator("summary .alert__rule").click()
    explosion.locator(".incident__firings td", has_text="40").first.wait_for(timeout=TIMEOUT_MS)
    # acknowledge an incident (before the mute: the mutes strip appearing moves the list under the pointer)
    acked = page.locator("#alerts-action-message", has_text="Acknowledged gradient_explosion-40")
    for _ in range(3):  # a click that lands while the list is being redrawn is lost: click again
        try:
            explosion.get_by_role("button", name="Acknowledge", exact=True).click(timeout=15_000)
            acked.wait_for(timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            continue
    acked.wait_for(timeout=TIMEOUT_MS)
    explosion.get_by_role("button", name="Acknowledged").wait_for(timeout=TIMEOUT_MS)
    assert inc.is_acked(inc.read_control(run)[0], "gradient_explosion-40")
    # mute a rule: written to control/incidents.json, shown with an Unmute button
    nan = page.locator("#alerts-feed .incident", has_text="non_finite_loss")
    muted = page.locator("#alerts-action-message", has_text="Muted non_finite_loss for 1 hour")
    for _ in range(3):  # a click that lands while the list is being redrawn is lost: click again
        try:
            nan.get_by_role("button", name="Mute rule").click(timeout=15_000)
            muted.wait_for(timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            continue
    muted.wait_for(timeout=TIMEOUT_MS)
    doc, problem = inc.read_control(run)
    assert problem is None and inc.is_muted(doc, "non_finite_loss", time.time())
    assert inc.is_acked(doc, "gradient_explosion-40")  # the mute kept the acknowledgement
    page.locator("#alerts-mutes .alerts__muted-rule", has_text="non_finite_loss").wait_for(timeout=TIMEOUT_MS)
    nan.locator(".incident__tag--muted").wait_for(timeout=TIMEOUT_MS)
    # unmute
    unmuted = page.locator("#alerts-action-message", has_text="Unmuted non_finite_loss")
    for _ in range(3):  # a click that lands while the strip is being redrawn is lost: click again
        if not inc.is_muted(inc.read_control(run)[0], "non_finite_loss", time.time()):
            break  # saved: its message must show (below), even if the strip was redrawn under it
        try:
            page.locator("#alerts-mutes").get_by_role("button", name="Unmute").click(timeout=15_000)
            unmuted.wait_for(timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            continue
    unmuted.wait_for(timeout=TIMEOUT_MS)
    assert not inc.is_muted(inc.read_control(run)[0], "non_finite_loss", time.time())
    # events on the timeline
    page.wait_for_function("() => { const g = document.querySelector('#alerts-events-graph .js-plotly-plot');"
                           " return g && g.data && g.data.some(t => t.name === 'best model' && t.x.length > 0); }",
                           timeout=TIMEOUT_MS)
    save_screenshot(page, "incidents.png")
    assert_no_console_errors(page)
    # Overview: event markers on the loss chart, toggled off and on
    page.goto(srv.url + "/", wait_until="load")
    names = "() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');" \
            " return g && g.data ? g.data.map(t => t.name) : []; }"
    page.wait_for_function(f"() => ({names})().includes('events')", timeout=TIMEOUT_MS)
    gone = f"() => !({names})().includes('events') && ({names})().length > 0"
    for _ in range(3):  # a click that lands while the page is still being drawn is lost: click again
        page.locator("#overview-show-events input").uncheck()
        try:
            page.wait_for_function(gone, timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            continue
    page.wait_for_function(gone, timeout=TIMEOUT_MS)
    back = f"() => ({names})().includes('events')"
    for _ in range(3):  # the same for the click that brings them back
        page.locator("#overview-show-events input").check()
        try:
            page.wait_for_function(back, timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            page.locator("#overview-show-events input").uncheck()
            continue
    page.wait_for_function(back, timeout=TIMEOUT_MS)
    assert_no_console_errors(page)


def test_snapshot_now_failure_is_shown(tmp_path, dashboard, page):
    run = tmp_path / "base" / "run-b"
    with Monitor(run, anomaly=False) as mon:  # no checkpoint anywhere: the copy must fail, visibly
        mon.log(1, loss=1.0)
    srv = dashboard(tmp_path / "base")
    page.goto(srv.url + "/snapshots", wait_until="load")
    page.get_by_text("No snapshots yet").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Snapshot now").click()
    page.locator("#snapshots-now-result", has_text="Snapshot not saved: no checkpoint").wait_for(timeout=TIMEOUT_MS)
    assert_no_console_errors(page)


def _get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002 - urllib's signature
        return None


def test_token_guard(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    # not loopback and no token: refused at start, with the reason
    proc = subprocess.run([sys.executable, str(REPO / "app.py"), "--base-dir", str(base), "--host", "0.0.0.0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "set a token with --token" in proc.stderr
    port = free_port()
    token = "s3cret-token-42"
    srv = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--base-dir", str(base), "--port", str(port),
                            "--token", token], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/", proc=srv, headers={"X-Trainboard-Token": token})
        assert _get(url + "/")[0] == 401
        assert _get(url + "/_dash-layout")[0] == 401
        assert _get(url + "/?token=wrong-token-xx")[0] == 401
        # the first visit sets the cookie and is redirected to the same URL without the token
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            opener.open(f"{url}/?token={token}", timeout=10)
            raise AssertionError("no redirect")
        except urllib.error.HTTPError as exc:
            status, headers = exc.code, dict(exc.headers)
        assert status == 302 and headers["Location"] == "/" and "trainboard_token=" in headers.get("Set-Cookie", "")
        assert _get(url + "/_dash-layout", {"Cookie": f"trainboard_token={token}"})[0] == 200
        assert _get(url + "/_dash-layout", {"X-Trainboard-Token": token})[0] == 200
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def test_disk_panel_says_when_pinned_snapshots_crowd_out_the_budget(tmp_path, dashboard, page):
    base = tmp_path / "base"
    run = base / "run-c"
    make_run(run)
    infos = S.list_snapshots(run)
    total = sum(i.size_bytes for i in infos)
    for i in infos:
        S.set_pinned(run, i.name, True)
    # the collector's policy with a budget the pinned snapshots fill
    S.write_retention(run, S.RetentionPolicy(keep_best=3, keep_last=20, budget_bytes=total + 100))
    srv = dashboard(base)
    page.goto(srv.url + "/snapshots", wait_until="load")
    page.locator("#snapshots-retention [role=alert]", has_text="crowd out").wait_for(timeout=TIMEOUT_MS)
    page.locator("#snapshots-retention", has_text="Free disk").wait_for(timeout=TIMEOUT_MS)
    save_screenshot(page, "snapshots_disk_panel.png")
    assert_no_console_errors(page)
