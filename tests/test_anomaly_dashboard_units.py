"""Pure parts of the Alerts and Snapshots pages, the snapshot-now orchestration, and the token guard."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from callbacks.alerts import save_threshold, slider_values
from callbacks.snapshots import apply_action, listing_signature, selected_name, snapshot_detail
from collectors import runformat as rf
from collectors import snapshots as S
from collectors.anomaly.rules import AnomalyConfig
from collectors.anomaly.incidents import fold_records
from components.alerts import SLIDERS, build_alert_marker_traces, build_incident_list
from components.severity import SEVERITY_STYLES, Severity
from components.snapshots import fmt_size, table_rows
from services import alerts as svc
from services.security import is_loopback, token_ok

ALERTS = [
    {"rule": "loss_spike", "category": "loss", "severity": "high", "step": 10, "message": "spike"},
    {"rule": "gradient_explosion", "category": "gradient", "severity": "critical", "step": 12, "message": "boom"},
    {"rule": "best_model", "category": "loss", "severity": "low", "step": 3, "message": "best"},
]


@pytest.mark.parametrize("cats,sevs,expected", [(None, None, 2), (["loss"], None, 1), (None, ["critical"], 1),
                                                (["loss"], ["critical"], 0), ([], [], 2)])
def test_filter_incidents(cats, sevs, expected) -> None:
    incidents = fold_records([rf.make_record("alert", **a) for a in ALERTS])
    assert len(svc.filter_incidents(incidents, cats, sevs)) == expected


def test_summarize_counts_every_severity() -> None:
    s = svc.summarize(ALERTS)
    assert s["total_alerts"] == 3
    assert s["by_severity"] == {"critical": 1, "high": 1, "medium": 0, "low": 1}
    assert s["by_category"] == {"loss": 2, "gradient": 1}


def test_marker_points_sit_on_the_loss_curve_and_use_severity_colours() -> None:
    nan_alert = {"rule": "non_finite_loss", "category": "loss", "severity": "medium", "step": 16, "message": "nan"}
    pts = svc.marker_points([*ALERTS, nan_alert], [1, 5, 10, 15], [4.0, 3.0, 2.0, float("nan")])
    assert pts["high"][:2] == ([10], [2.0])
    assert pts["low"][:2] == ([3], [4.0])
    assert pts["critical"][:2] == ([12], [2.0])  # the last loss logged at or before step 12
    assert pts["medium"][:2] == ([16], [2.0])  # the loss is NaN there: the marker sits at the last finite level
    assert "medium" not in svc.marker_points([nan_alert], [15], [float("nan")])  # no finite loss at all
    traces = build_alert_marker_traces(pts)
    assert [t["marker"]["color"] for t in traces] == [SEVERITY_STYLES[s].colour for s in
                                                      (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW)]
    assert svc.marker_points(ALERTS, [], []) == {}


def test_incident_list_empty_states_and_rows() -> None:
    assert "No incidents yet" in build_incident_list([], 0, {}, True).children
    assert "match these filters" in build_incident_list([], 5, {}, True).children
    incidents = fold_records([rf.make_record("alert", **a) for a in ALERTS])
    rows = build_incident_list(incidents, len(incidents), {"loss_spike": 2e9}, True)
    assert len(rows) == 2  # the new best model is an event, not an incident
    by_rule = {r.id["incident"].rsplit("-", 1)[0]: r for r in rows}
    assert by_rule["loss_spike"].style["borderLeftColor"] == SEVERITY_STYLES[Severity.HIGH].colour
    text = str(by_rule["loss_spike"])
    assert "muted" in text and "Mute rule" in text and "Acknowledge" in text


def test_alert_feed_tails_and_resets(tmp_path: Path) -> None:
    feed = svc.AlertFeed()
    assert feed.poll(tmp_path).alerts == []
    w = rf.JsonlWriter(rf.RunPaths.of(tmp_path).alerts)
    w.append(rf.make_record("alert", **ALERTS[0]))
    v1 = feed.poll(tmp_path)
    assert len(v1.alerts) == 1
    assert feed.poll(tmp_path).version == v1.version  # nothing new: same version
    w.append(rf.make_record("alert", **ALERTS[1]))
    with open(rf.RunPaths.of(tmp_path).alerts, "ab") as fh:
        fh.write(b"{broken\n")
    v2 = feed.poll(tmp_path)
    assert len(v2.alerts) == 2 and v2.bad_lines == 1 and v2.version > v1.version
    w.close()


@pytest.mark.parametrize("key,value,ok", [("smart.loss_spike_threshold", 0.5, True),
                                          ("smart.loss_spike_threshold", -1, False),
                                          ("gradient.vanishing_threshold", 50.0, False),
                                          ("snapshots.min_steps_between_saves", 250, True)])
def test_save_threshold_validates_and_writes_atomically(tmp_path: Path, key: str, value, ok: bool) -> None:
    msg, saved = save_threshold(tmp_path, key, value)
    assert saved is ok, msg
    path = rf.RunPaths.of(tmp_path).thresholds
    if ok:
        doc = json.loads(path.read_text())
        section, name = key.split(".")
        assert doc[section][name] == value
        assert getattr(getattr(AnomalyConfig.from_dict(doc), section), name) == value
    else:
        assert msg.startswith("Not saved:") and not path.exists()


def test_save_threshold_keeps_other_keys_and_skips_unchanged(tmp_path: Path) -> None:
    save_threshold(tmp_path, "smart.loss_spike_threshold", 0.5)
    save_threshold(tmp_path, "gradient.explosion_threshold", 20.0)
    doc = json.loads(rf.RunPaths.of(tmp_path).thresholds.read_text())
    assert doc["smart"]["loss_spike_threshold"] == 0.5 and doc["gradient"]["explosion_threshold"] == 20.0
    assert save_threshold(tmp_path, "gradient.explosion_threshold", 20.0) == ("", True)


def test_slider_values_cover_every_slider() -> None:
    vals = slider_values(AnomalyConfig())
    assert set(vals) == {s.key for s in SLIDERS} and vals["smart.loss_spike_threshold"] == 0.3
    for s in SLIDERS:
        assert s.min <= vals[s.key] <= s.max


def test_current_thresholds_reports_invalid_file(tmp_path: Path) -> None:
    rf.RunPaths.of(tmp_path).thresholds.parent.mkdir(parents=True)
    rf.RunPaths.of(tmp_path).thresholds.write_text('{"smart": {"loss_window": "x"}}')
    cfg, problem = svc.current_thresholds(tmp_path)
    assert cfg == AnomalyConfig() and "invalid" in problem


def _snapshot(run: Path, pinned: bool = False) -> str:
    return S.create_snapshot(run, kind="manual", reason=None, metadata={"reason": "manual", "step": 5},
                             status={"step": 5}, write_model=lambda d: (d / "w").write_text("w"), pinned=pinned).name


def test_actions_pin_unpin_delete_and_traversal(tmp_path: Path) -> None:
    name = _snapshot(tmp_path, pinned=True)
    msg, ok = apply_action(tmp_path, name, "delete")
    assert not ok and "pinned" in msg
    assert apply_action(tmp_path, name, "unpin")[1]
    assert apply_action(tmp_path, name, "delete")[1]
    assert S.list_snapshots(tmp_path) == []
    for evil in ("../../etc", "manual_20250101_000000/../../x", ".tmp-snap-1"):
        msg, ok = apply_action(tmp_path, evil, "delete")
        assert not ok and "invalid snapshot name" in msg
    assert apply_action(tmp_path, None, "pin") == ("Select a snapshot first.", False)


def test_detail_and_table_rows(tmp_path: Path) -> None:
    name = _snapshot(tmp_path)
    rows = [i.to_row() for i in S.list_snapshots(tmp_path)]
    disp = table_rows(rows)
    assert disp[0]["name"] == name and disp[0]["step"] == 5 and disp[0]["pinned"] == ""
    assert listing_signature(rows)[0][0] == name
    assert selected_name(disp, [0]) == name and selected_name(disp, []) is None and selected_name(disp, [9]) is None
    detail = str(snapshot_detail(tmp_path, name))
    assert "metadata.json" in detail and "training_status.json" in detail
    assert "invalid snapshot name" in str(snapshot_detail(tmp_path, "../x"))


@pytest.mark.parametrize("n,text", [(None, "–"), (512, "512 B"), (2048, "2.0 kB"), (5 * 1024**2, "5.0 MB"),
                                    (3 * 1024**3, "3.0 GB")])
def test_fmt_size(n, text) -> None:
    assert fmt_size(n) == text


def test_snapshot_now_copies_checkpoint_when_nothing_runs(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    (hf / "checkpoint-30").mkdir(parents=True)
    (hf / "checkpoint-30" / "model.safetensors").write_text("w30")
    run = tmp_path / "run"
    rf.write_json_atomic(rf.RunPaths.of(run).status, {"state": "finished", "step": 30, "config": {"output_dir": str(hf)}})
    seen = []
    res = S.snapshot_now(run, progress=seen.append)
    assert res["ok"] and res["handled_by"] == "dashboard" and res["name"].startswith("manual_")
    assert "copying the latest checkpoint" in seen[0]
    assert (run / "snapshots" / res["name"] / "model" / "model.safetensors").read_text() == "w30"


def test_snapshot_now_failure_is_reported(tmp_path: Path) -> None:
    res = S.snapshot_now(tmp_path)
    assert not res["ok"] and "no checkpoint" in res["error"]


def test_snapshot_now_falls_back_when_the_live_training_does_not_answer(tmp_path: Path) -> None:
    import os
    import socket

    hf = tmp_path / "hf"
    (hf / "checkpoint-2").mkdir(parents=True)
    rf.write_json_atomic(rf.RunPaths.of(tmp_path).status, {
        "state": "training", "updated_at": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
        "anomaly": {"enabled": True}, "config": {"output_dir": str(hf)}})
    seen = []
    res = S.snapshot_now(tmp_path, wait_s=0.5, progress=seen.append)
    assert "waiting for the training" in seen[0] and "did not answer" in seen[1]
    assert res["ok"] and res["handled_by"] == "dashboard"
    assert not rf.RunPaths.of(tmp_path).snapshot_request.exists()


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
                                       ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_token_ok() -> None:
    assert token_ok("secret-token", None, "secret-token")
    assert not token_ok("secret-token", None, "secret-tokeN", "")


def test_an_incident_with_a_last_good_snapshot_offers_recover() -> None:
    from types import SimpleNamespace

    from callbacks.alerts import incident_snapshots
    from collectors.anomaly.incidents import Incident

    spike = Incident(id="loss_spike-40", rule="loss_spike", first_step=40, last_step=42, count=2)
    nan = Incident(id="non_finite_loss-90", rule="non_finite_loss", first_step=90, last_step=90, count=1)
    snaps = [SimpleNamespace(name="anomaly_a_loss_spike", step=41, metadata={"last_good": {"step": 30}}),
             SimpleNamespace(name="anomaly_b_best", step=90, metadata={}),  # no last good state: no panel
             SimpleNamespace(name="anomaly_c_nan", step=90, metadata={"last_good": {"step": 80}})]
    assert incident_snapshots([nan, spike], snaps) == {"loss_spike-40": "anomaly_a_loss_spike",
                                                      "non_finite_loss-90": "anomaly_c_nan"}
    rows = build_incident_list([spike], 1, {}, True, recover={"loss_spike-40": "PANEL"})
    assert "Recover" in str(rows[0]) and "PANEL" in str(rows[0])


def test_recent_actions_say_the_last_message_again_only_briefly_and_per_run() -> None:
    """The redrawn buttons' answer replaces a click's in the browser: it repeats the click's message."""
    from callbacks.alerts import ACTION_ECHO_S, RecentActions

    recent = RecentActions()
    assert recent.recent("run-a", 100.0) is None
    assert recent.record("run-a", "Unmuted non_finite_loss.", 100.0) == "Unmuted non_finite_loss."
    assert recent.recent("run-a", 100.0 + ACTION_ECHO_S) == "Unmuted non_finite_loss."
    assert recent.recent("run-a", 100.0 + ACTION_ECHO_S + 0.1) is None  # old news is not shown again
    assert recent.recent("run-b", 101.0) is None  # another run's page never shows it
    assert recent.recent("run-a", 99.0) is None  # a clock that went back: nothing
    recent.record("run-a", "Acknowledged x-1: no further notifications for it.", 105.0)
    assert recent.recent("run-a", 106.0).startswith("Acknowledged")
