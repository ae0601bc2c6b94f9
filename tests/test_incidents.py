"""Incidents, not floods (issue 10): the tracker's grouping, resolution, events, worst values, bounded
updates and resume state; folding real and legacy alerts.jsonl files; ack/mute through the real control file."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from collectors import runformat as rf
from collectors.anomaly import incidents as I
from collectors.anomaly.rules import Alert

NOW = 1_764_590_000.0


def fire(rule: str, step: int, value: float | None = 1.0, severity: str = "high", **meta: Any) -> dict[str, Any]:
    """An alert record as the rules write it."""
    return {"rule": rule, "category": "loss", "severity": severity, "step": step, "value": value,
            "threshold": 0.5, "message": f"{rule} {value} at {step}", "metadata": dict(meta), "reason": rule}


def run(tracker: I.IncidentTracker, plan: dict[int, list[dict[str, Any]]], last: int) -> list[I.IncidentChange]:
    """Feed steps 1..last (every step logged); ``plan`` gives the firings of some steps."""
    out: list[I.IncidentChange] = []
    for s in range(1, last + 1):
        out.extend(tracker.observe(s, plan.get(s, []), now=NOW + s))
    return out


def states(changes: list[I.IncidentChange]) -> list[tuple[str | None, str | None, int]]:
    return [(c.state, c.incident_id, c.step) for c in changes if c.kind == I.INCIDENT_KIND]


# --------------------------------------------------------------------------- grouping and resolution

@pytest.mark.parametrize("fire_steps, resolve_after, expected", [
    pytest.param([5, 6, 7, 8], 3, [("open", "loss_spike-5", 5), ("resolved", "loss_spike-5", 11)],
                 id="consecutive-firings-one-incident"),
    pytest.param([5, 7, 9], 3, [("open", "loss_spike-5", 5), ("resolved", "loss_spike-5", 12)],
                 id="pause-shorter-than-resolve-after-same-incident"),
    pytest.param([5, 8], 2, [("open", "loss_spike-5", 5), ("resolved", "loss_spike-5", 7),
                             ("open", "loss_spike-8", 8), ("resolved", "loss_spike-8", 10)],
                 id="pause-of-resolve-after-two-incidents"),
    pytest.param([5], 1, [("open", "loss_spike-5", 5), ("resolved", "loss_spike-5", 6)], id="resolve-after-one"),
    pytest.param([20], 20, [("open", "loss_spike-20", 20)], id="still-open-at-end"),
])
def test_grouping_and_resolution(fire_steps: list[int], resolve_after: int, expected: list) -> None:
    t = I.IncidentTracker(resolve_after=resolve_after)
    changes = run(t, {s: [fire("loss_spike", s)] for s in fire_steps}, 25 if fire_steps != [20] else 20)
    assert states(changes) == expected
    resolved = [c for c in changes if c.state == "resolved"]
    for c in resolved:
        assert c.record["kind"] == "incident" and c.record["resolved_step"] == c.step and c.record["alert"] is None
    if fire_steps == [5, 7, 9]:
        assert resolved[0].record["count"] == 3 and resolved[0].record["last_step"] == 9


def test_two_rules_interleaved_are_two_incidents() -> None:
    t = I.IncidentTracker(resolve_after=3)
    plan = {s: [fire("loss_spike" if s % 2 else "gradient_explosion", s, severity="critical")] for s in range(4, 12)}
    changes = run(t, plan, 20)
    assert states(changes) == [("open", "gradient_explosion-4", 4), ("open", "loss_spike-5", 5),
                               ("resolved", "gradient_explosion-4", 13), ("resolved", "loss_spike-5", 14)]
    counts = {c.incident_id: c.record["count"] for c in changes if c.state == "resolved"}
    assert counts == {"gradient_explosion-4": 4, "loss_spike-5": 4}


def test_layers_of_one_spectral_rule_are_separate_incidents() -> None:
    t = I.IncidentTracker(resolve_after=2)
    changes = t.observe(10, [fire("clobbering", 10, layer="h.0.attn"), fire("clobbering", 10, layer="h.1.attn")])
    assert sorted(c.incident_id for c in changes) == ["clobbering@h.0.attn-10", "clobbering@h.1.attn-10"]
    assert {c.record["subject"] for c in changes} == {"h.0.attn", "h.1.attn"}


def test_same_step_again_is_not_a_clean_step() -> None:
    """An eval record at a train step (or a replay) must not advance resolution."""
    t = I.IncidentTracker(resolve_after=2)
    t.observe(1, [fire("loss_spike", 1)])
    assert t.observe(2, []) == [] and t.observe(2, []) == [] and t.observe(2, []) == []
    assert states(t.observe(3, [])) == [("resolved", "loss_spike-1", 3)]


def test_per_rule_resolve_after() -> None:
    t = I.IncidentTracker(resolve_after=2, resolve_after_for={"clobbering": 5})
    run(t, {1: [fire("clobbering", 1), fire("loss_spike", 1)]}, 3)
    assert list(t.open) == ["clobbering"]
    assert t.observe(4, []) == [] and t.observe(5, []) == []  # one clean logged step per observe call
    assert states(t.observe(6, [])) == [("resolved", "clobbering-1", 6)]


# --------------------------------------------------------------------------- events

@pytest.mark.parametrize("rule", ["best_model", "convergence_plateau", "gradient_variance", "mode_switch"])
def test_event_rules_are_events_not_incidents(rule: str) -> None:
    t = I.IncidentTracker()
    changes = t.observe(7, [fire(rule, 7, severity="low"), fire("loss_spike", 7)], now=NOW)
    kinds = [(c.kind, c.rule) for c in changes]
    assert kinds == [("event", rule), ("incident", "loss_spike")]
    ev = changes[0]
    assert ev.state is None and ev.incident_id is None and not ev.notify
    assert ev.record["kind"] == "event" and ev.record["step"] == 7 and ev.record["time"] == NOW
    assert list(t.open) == ["loss_spike"]


def test_caller_events_and_alert_objects() -> None:
    t = I.IncidentTracker(source="collector")
    alert = Alert("gradient_explosion", "gradient", "critical", 3, 55.0, 10.0, "Gradient explosion: 55")
    changes = t.observe(3, [alert], events=[{"name": "warmup_done", "message": "noise gate active"}], now=NOW)
    assert [(c.kind, c.rule) for c in changes] == [("event", "warmup_done"), ("incident", "gradient_explosion")]
    assert changes[0].record["source"] == "collector" and changes[0].record["step"] == 3
    rec = changes[1].record
    assert rec["alert"]["message"] == "Gradient explosion: 55" and rec["severity"] == "critical"
    assert json.loads(rf.dumps(rec))["worst_value"] == 55.0


# --------------------------------------------------------------------------- worst values and bounded updates

@pytest.mark.parametrize("rule, values, worst", [
    pytest.param("loss_spike", [2.0, 5.0, 3.0], 5.0, id="spike-highest"),
    pytest.param("gradient_explosion", [20.0, 80.0, 40.0], 80.0, id="explosion-highest"),
    pytest.param("non_finite_loss", [math.inf, math.nan, 1.0], math.nan, id="nan-worst-of-all"),
    pytest.param("gradient_vanishing", [1e-7, 1e-9, 1e-8], 1e-9, id="vanishing-lowest"),
    pytest.param("accuracy_drop", [60.0, 40.0, 55.0], 40.0, id="accuracy-lowest"),
    pytest.param("convergence_divergence", [-0.2, -0.5, -0.3], -0.5, id="rate-lowest"),
    pytest.param("some_future_rule", [1.0, 3.0, 2.0], 3.0, id="unknown-rule-highest"),
])
def test_worst_value_per_rule_direction(rule: str, values: list[float], worst: float) -> None:
    t = I.IncidentTracker()
    for s, v in enumerate(values, 1):
        t.observe(s, [fire(rule, s, v)])
    inc = t.open[rule]
    assert (math.isnan(inc.worst_value) if math.isnan(worst) else inc.worst_value == worst)
    assert inc.worst_step == (2 if rule != "some_future_rule" else 2)
    assert inc.count == 3 and inc.last_step == 3


@pytest.mark.parametrize("old, new, direction, expected", [
    pytest.param(2.0, 3.9, I.HIGHER, False, id="higher-not-doubled"),
    pytest.param(2.0, 4.0, I.HIGHER, True, id="higher-doubled"),
    pytest.param(-0.4, -0.2, I.HIGHER, True, id="higher-negative-halved"),
    pytest.param(1e-7, 6e-8, I.LOWER, False, id="lower-not-halved"),
    pytest.param(1e-7, 5e-8, I.LOWER, True, id="lower-halved"),
    pytest.param(-0.2, -0.4, I.LOWER, True, id="lower-negative-doubled"),
    pytest.param(0.0, 0.1, I.HIGHER, True, id="from-zero"),
    pytest.param(5.0, math.nan, I.HIGHER, True, id="first-nan"),
    pytest.param(math.nan, math.nan, I.HIGHER, False, id="nan-after-nan"),
    pytest.param(4.0, 2.0, I.HIGHER, False, id="better-never"),
])
def test_worsened_enough(old: float, new: float, direction: str, expected: bool) -> None:
    assert I.worsened_enough(new, old, direction, 2.0) is expected


@pytest.mark.parametrize("values, severities, expected_update_steps", [
    pytest.param([20.0] * 120, ["critical"] * 120, [51, 101], id="steady-every-50-firings"),
    pytest.param([20.0, 30.0, 40.0, 45.0, 90.0, 100.0, 200.0], ["high"] * 7, [3, 5, 7], id="worsens-by-factor-2"),
    pytest.param([20.0, 20.0, 20.0], ["medium", "medium", "high"], [3], id="severity-rises"),
])
def test_updates_are_bounded(values: list[float], severities: list[str], expected_update_steps: list[int]) -> None:
    t = I.IncidentTracker(resolve_after=5)
    changes = []
    for s, (v, sev) in enumerate(zip(values, severities), 1):
        changes += t.observe(s, [fire("gradient_explosion", s, v, sev)])
    assert [c.step for c in changes if c.state == "updated"] == expected_update_steps
    assert changes[0].state == "open"
    last = [c for c in changes if c.state == "updated"][-1].record
    assert last["count"] == expected_update_steps[-1] and last["alert"]["step"] == expected_update_steps[-1]


def test_flood_is_bounded_over_a_long_incident() -> None:
    t = I.IncidentTracker()
    changes = run(t, {s: [fire("non_finite_loss", s, math.nan, "critical")] for s in range(1, 10_001)}, 10_020)
    assert len(changes) == 1 + 10_000 // 50 - 1 + 1  # open, one update per 50 firings, resolved
    assert changes[-1].state == "resolved" and changes[-1].record["count"] == 10_000


# --------------------------------------------------------------------------- mute / ack inside the tracker

def test_muted_rule_still_recorded_but_marked() -> None:
    doc = I.apply_mute(None, "loss_spike", NOW + 100, NOW)
    t = I.IncidentTracker(resolve_after=2, control=doc)
    opened = t.observe(1, [fire("loss_spike", 1), fire("gradient_explosion", 1)], now=NOW + 1)
    by_rule = {c.rule: c for c in opened}
    assert by_rule["loss_spike"].muted and by_rule["loss_spike"].record["muted"] is True
    assert not by_rule["loss_spike"].notify and by_rule["gradient_explosion"].notify
    assert t.is_muted("loss_spike", NOW + 1) and not t.is_muted("loss_spike", NOW + 100)
    t.set_control(I.apply_ack(doc, "gradient_explosion-1", "ana", NOW + 2))
    resolved = {c.rule: c for c in run_steps(t, [2, 3], NOW + 200)}
    assert resolved["gradient_explosion"].acked and not resolved["gradient_explosion"].notify
    assert not resolved["loss_spike"].muted  # the mute ended before it resolved


def run_steps(t: I.IncidentTracker, steps: list[int], now: float) -> list[I.IncidentChange]:
    out: list[I.IncidentChange] = []
    for s in steps:
        out += t.observe(s, [], now=now)
    return out


# --------------------------------------------------------------------------- resume

def test_state_dict_round_trip_mid_incident() -> None:
    plan = {s: [fire("gradient_explosion", s, 10.0 * s, "critical")] for s in range(3, 9)}
    plan[12] = [fire("gradient_explosion", 12, 500.0, "critical")]
    straight = I.IncidentTracker(resolve_after=5)
    expected = run(straight, plan, 30)
    first = I.IncidentTracker(resolve_after=5)
    before = run(first, {s: v for s, v in plan.items() if s <= 6}, 6)
    state = json.loads(rf.dumps(first.state_dict()))  # what a checkpoint stores, through JSON
    second = I.IncidentTracker(resolve_after=5)
    second.load_state_dict(state)
    after = []
    for s in range(7, 31):
        after += second.observe(s, plan.get(s, []), now=NOW + s)
    assert states(before + after) == states(expected)
    assert [c.record["count"] for c in before + after] == [c.record["count"] for c in expected]
    assert [c.record["worst_value"] for c in before + after] == [c.record["worst_value"] for c in expected]


@pytest.mark.parametrize("state", [None, {}, {"open": "x"}, {"open": {"k": {"rule": 3}}, "reported": {"k": [1]}},
                                   {"last_step": "seven", "ids": {"a": ["x", 1]}}],
                         ids=["none", "empty", "open-not-object", "bad-incident", "bad-fields"])
def test_load_state_dict_never_raises(state: Any) -> None:
    t = I.IncidentTracker()
    t.load_state_dict(state)
    assert t.open == {} and t.observe(1, [fire("loss_spike", 1)])[0].state == "open"


@pytest.mark.parametrize("kwargs, match", [
    ({"resolve_after": 0}, "resolve_after must be a whole number"),
    ({"resolve_after": 2.5}, "resolve_after must be a whole number"),
    ({"update_every": -1}, "update_every"),
    ({"worsen_factor": 1.0}, "worsen_factor must be a number > 1"),
    ({"resolve_after_for": {"x": 0}}, r"resolve_after_for\['x'\]"),
    ({"directions": {"x": "up"}}, r"directions\['x'\] must be 'higher' or 'lower'"),
], ids=["zero", "float", "update-every", "factor", "per-rule", "direction"])
def test_settings_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        I.IncidentTracker(**kwargs)


# --------------------------------------------------------------------------- folding files

def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_fold_matches_tracker_on_tracker_records(tmp_path: Path) -> None:
    plan = {s: [fire("loss_spike", s, float(s))] for s in (5, 6, 9, 40, 41)}
    plan.update({s: plan.get(s, []) + [fire("gradient_explosion", s, 12.0, "critical")] for s in range(7, 70)})
    plan[8] = plan[8] + [fire("best_model", 8, 0.5, "low")]
    t = I.IncidentTracker()
    changes = run(t, plan, 100)
    log = tmp_path / rf.ALERTS_LOG
    with rf.JsonlWriter(log) as w:
        for c in changes:
            w.append(c.record)
    records = list(rf.iter_records(log, known_kinds=I.ALERTS_LOG_KINDS))
    folded = I.fold(records)
    assert [(i.id, i.state, i.count, i.first_step, i.last_step) for i in folded.incidents] == [
        ("loss_spike-40", "resolved", 2, 40, 41), ("gradient_explosion-7", "resolved", 63, 7, 69),
        ("loss_spike-5", "resolved", 3, 5, 9)]
    assert [e["rule"] for e in folded.events] == ["best_model"] and folded.skipped == 0
    # the same firings as plain alert records (a run before incidents) fold into the same incidents
    legacy = [{**a, "v": 1, "kind": "alert"} for s in sorted(plan) for a in plan[s]]
    again = I.fold(legacy, logged_steps=range(1, 101))
    assert [(i.id, i.state, i.count, i.worst_value, i.resolved_step) for i in again.incidents] == \
           [(i.id, i.state, i.count, i.worst_value, i.resolved_step) for i in folded.incidents]
    assert len(again.incidents[1].firings) == 63  # every firing of the legacy file, oldest first
    assert again.incidents[1].firings[0]["step"] == 7


def test_fold_legacy_file_with_malformed_lines(tmp_path: Path) -> None:
    log = tmp_path / rf.ALERTS_LOG
    good = [dict(fire("loss_spike", s, 1.0 + s), v=1, kind="alert", time=NOW + s) for s in (10, 11, 12, 60)]
    lines = [json.dumps(good[0]), "{not json", json.dumps(good[1]), "", "[1, 2]",
             json.dumps({"v": 1, "kind": "alert", "rule": "loss_spike"}),  # no step
             json.dumps({"v": 1, "kind": "alert", "step": 3}),  # no rule
             json.dumps(good[2]), json.dumps(good[2]),  # the same firing twice (a replay)
             json.dumps(dict(fire("best_model", 11, 0.4, "low"), v=1, kind="alert")),
             json.dumps(dict(fire("gradient_explosion", 20, 11.0, "critical"), v=1, kind="alert")),
             json.dumps(dict(fire("gradient_explosion", 70, 15.0, "critical", repeated_for=50), v=1, kind="alert")),
             json.dumps(good[3]), '{"v": 1, "kind": "alert", "rule": "loss_spike", "step": 61, "val']  # cut mid-line
    _write_lines(log, lines)
    log.write_text(log.read_text().rstrip("\n"))  # the last line is still being written
    records = list(rf.iter_records(log, known_kinds=I.ALERTS_LOG_KINDS))
    folded = I.fold(records, last_step=100)
    got = [(i.id, i.state, i.count, i.first_step, i.last_step, i.worst_value) for i in folded.incidents]
    assert got == [("loss_spike-60", "resolved", 1, 60, 60, 61.0),
                   ("gradient_explosion-20", "resolved", 51, 20, 70, 15.0),  # repeated_for: one lasting incident
                   ("loss_spike-10", "resolved", 3, 10, 12, 13.0)]
    assert folded.incidents[2].opened_at == NOW + 10 and folded.incidents[2].resolved_step == 32
    assert [e["rule"] for e in folded.events] == ["best_model"] and folded.skipped == 2
    open_now = I.fold(records, last_step=70).incidents
    assert [i.state for i in open_now] == ["open", "open", "resolved"]


def test_fold_resume_replay_and_tagged_alerts() -> None:
    t = I.IncidentTracker(resolve_after=3)
    first = run(t, {5: [fire("loss_spike", 5)], 6: [fire("loss_spike", 6)]}, 6)
    t2 = I.IncidentTracker(resolve_after=3)  # resumed from a checkpoint taken before step 5: replays 5..
    second = run(t2, {5: [fire("loss_spike", 5, 9.0)]}, 10)
    alert = {**fire("loss_spike", 5, 9.0), "v": 1, "kind": "alert", "incident": "loss_spike-5"}
    records = [c.record for c in first + second] + [alert]
    (inc,) = I.fold_records(records)
    assert (inc.id, inc.state, inc.count, inc.resolved_step, inc.worst_value) == ("loss_spike-5", "resolved", 1, 8, 9.0)
    assert [f["step"] for f in inc.firings] == [5]


def test_fold_on_a_real_monitor_run(tmp_path: Path) -> None:
    """A real plain loop with the collector on: a NaN loss and a gradient explosion (real grads)."""
    torch = pytest.importorskip("torch")
    from collectors import Monitor

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    with Monitor(tmp_path, anomaly={"snapshots": {"enabled": False}}) as mon:
        mon.watch(model=model, optimizer=opt)
        for step in range(1, 81):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            scale = 1e4 if 30 <= step < 36 else 1.0  # a bad batch scale: real exploding gradients
            (loss * scale).backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
            logged = float("nan") if step == 50 else loss.item()
            mon.log(step, loss=logged, grad_norm=norm, lr=1e-2)
            if 30 <= step < 36:
                opt.zero_grad()  # keep the weights sane: only the logged norm explodes
            opt.step()
    records = list(rf.iter_records(rf.RunPaths.of(tmp_path).alerts, known_kinds=I.ALERTS_LOG_KINDS))
    steps = [r["step"] for r in rf.iter_records(rf.RunPaths.of(tmp_path).metrics)]
    assert records and steps[-1] == 80
    folded = I.fold(records, logged_steps=steps)
    by_rule = {i.rule: i for i in folded.incidents}
    assert by_rule["gradient_explosion"].first_step == 30 and by_rule["gradient_explosion"].severity == "critical"
    assert by_rule["gradient_explosion"].worst_value > 10.0
    assert by_rule["non_finite_loss"].first_step == 50 and math.isnan(by_rule["non_finite_loss"].worst_value)
    assert by_rule["non_finite_loss"].state == "resolved" and by_rule["non_finite_loss"].resolved_step == 70
    assert all(i.rule not in I.EVENT_RULES for i in folded.incidents)
    assert all(e["rule"] in I.EVENT_RULES for e in folded.events)
    alerts = [r for r in records if r["kind"] == "alert" and r["rule"] not in I.EVENT_RULES]
    assert sum(len(i.firings) for i in folded.incidents) == len(alerts)
    # the tracker fed the same alerts step by step agrees with the fold of the plain file
    t = I.IncidentTracker()
    for s in steps:
        t.observe(s, [r for r in alerts if r["step"] == s])
    live = {i.id for i in folded.incidents if i.state == "open"}
    assert {i.id for i in t.open_incidents()} == live


# --------------------------------------------------------------------------- ack / mute control file

def test_ack_and_mute_round_trip_through_the_file(tmp_path: Path) -> None:
    doc, problem = I.acknowledge(tmp_path, "loss_spike-120", "ana", now=NOW)
    assert problem is None and I.is_acked(doc, "loss_spike-120")
    doc, problem = I.mute(tmp_path, "gradient_explosion", 3600, "ana", now=NOW)
    assert problem is None
    on_disk = json.loads(I.control_path(tmp_path).read_text())
    assert on_disk == {"v": 1, "acks": {"loss_spike-120": {"by": "ana", "at": NOW}},
                       "mutes": {"gradient_explosion": {"until": NOW + 3600, "by": "ana", "at": NOW}}}
    read, problem = I.read_control(tmp_path)
    assert problem is None and read == on_disk
    assert I.is_muted(read, "gradient_explosion", NOW + 3599) and not I.is_muted(read, "gradient_explosion", NOW + 3600)
    assert I.mute_until(read, "gradient_explosion", NOW) == NOW + 3600 and not I.is_muted(read, "loss_spike", NOW)
    doc, _ = I.unmute_rule(tmp_path, "gradient_explosion", now=NOW + 10)
    assert not I.is_muted(I.read_control(tmp_path)[0], "gradient_explosion", NOW + 10)
    assert I.is_acked(I.read_control(tmp_path)[0], "loss_spike-120")
    assert not [p for p in I.control_path(tmp_path).parent.iterdir() if p.name.startswith(rf.TMP_PREFIX)]


def test_expired_mutes_are_pruned_and_acks_bounded() -> None:
    doc = I.apply_mute(None, "a", NOW + 10, NOW)
    doc = I.apply_mute(doc, "b", NOW + 100, NOW)
    later = I.apply_ack(doc, "x-1", None, NOW + 50)
    assert list(later["mutes"]) == ["b"] and later["acks"]["x-1"]["by"] == ""
    assert list(doc["mutes"]) == ["a", "b"]  # pure: the input is unchanged
    many = None
    for i in range(I.MAX_ACKS + 5):
        many = I.apply_ack(many, f"r-{i}", "ana", NOW + i)
    assert len(many["acks"]) == I.MAX_ACKS and "r-0" not in many["acks"] and f"r-{I.MAX_ACKS + 4}" in many["acks"]


@pytest.mark.parametrize("call, match", [
    (lambda: I.apply_mute(None, "loss_spike", NOW - 1, NOW), "a mute must end after now"),
    (lambda: I.apply_mute(None, "loss_spike", NOW + 40 * 86400, NOW), "at most 30 days"),
    (lambda: I.apply_mute(None, "", NOW + 5, NOW), "the rule must be a non-empty text"),
    (lambda: I.apply_ack(None, "  ", "ana", NOW), "the incident id must be a non-empty text"),
    (lambda: I.apply_ack(None, "x-1", 42, NOW), "who must be a text"),
], ids=["past", "too-long", "empty-rule", "empty-id", "bad-who"])
def test_bad_ack_mute_input_is_refused(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("content, problem", [
    ("", "is empty"),
    ('{"v": 1, "acks": {', "is not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"v": 1, "mute": {}}', "unknown field 'mute'"),
    ('{"v": 2}', "written by a newer Trainboard"),
    ('{"v": 1, "mutes": []}', "mutes must be an object"),
    ('{"mutes": {"loss_spike": {"by": "ana"}}}', "mutes['loss_spike'].until is missing"),
    ('{"mutes": {"loss_spike": {"until": "soon"}}}', "mutes['loss_spike'].until must be a time"),
    ('{"acks": {"x-1": {"at": 1, "note": "hi"}}}', "acks['x-1']: unknown field 'note'"),
    ('{"acks": {"x-1": true}}', "acks['x-1'] must be an object"),
], ids=["empty", "half-written", "list", "typo", "newer", "mutes-list", "no-until", "until-text", "extra", "ack-bool"])
def test_malformed_control_file(tmp_path: Path, content: str, problem: str) -> None:
    path = I.control_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    doc, got = I.read_control(tmp_path)
    assert doc == I.empty_control() and got is not None and problem in got and str(path) in got
    # a write through the helpers refuses to overwrite a file a person may be editing
    new, why = I.acknowledge(tmp_path, "x-2", "ana", now=NOW)
    assert new is None and why.startswith("not saved") and "fix or delete incidents.json" in why
    assert path.read_text() == content
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = {"v": "x"}
    with pytest.raises(ValueError, match="not saved"):
        I.write_control(tmp_path, parsed)
    assert path.read_text() == content


def test_control_follower_keeps_last_good_doc(tmp_path: Path) -> None:
    f = I.ControlFollower(tmp_path)
    assert f.poll() == (False, None) and f.doc == I.empty_control()
    I.mute(tmp_path, "loss_spike", 600, now=NOW)
    changed, problem = f.poll()
    assert changed and problem is None and I.is_muted(f.doc, "loss_spike", NOW + 1)
    assert f.poll() == (False, None)
    path = I.control_path(tmp_path)
    path.write_text('{"mutes": {"loss_spike": {"until": ')  # a hand edit in progress
    os.utime(path, ns=(1, 1))
    changed, problem = f.poll()
    assert not changed and "not valid JSON" in problem and I.is_muted(f.doc, "loss_spike", NOW + 1)
    path.unlink()
    changed, problem = f.poll()
    assert changed and problem is None and f.doc == I.empty_control()


def test_mute_through_the_file_reaches_a_tracker(tmp_path: Path) -> None:
    """The dashboard's write, the follower's read, the tracker's marking: the whole path on real files."""
    f = I.ControlFollower(tmp_path)
    t = I.IncidentTracker(resolve_after=3)
    assert t.observe(1, [fire("loss_spike", 1)], now=NOW)[0].notify
    I.mute(tmp_path, "gradient_explosion", 60, now=NOW)
    I.acknowledge(tmp_path, "loss_spike-1", "ana", now=NOW)
    if f.poll()[0]:
        t.set_control(f.doc)
    c = t.observe(2, [fire("gradient_explosion", 2, 20.0, "critical")], now=NOW + 1)[0]
    assert c.muted and not c.notify and c.record["muted"] is True
    resolved = run_steps(t, [3, 4, 5], NOW + 2)
    assert [(c.incident_id, c.acked, c.muted) for c in resolved] == [("loss_spike-1", True, False),
                                                                      ("gradient_explosion-2", False, True)]
    folded = I.fold_records([r.record for r in [c] + resolved], control=I.read_control(tmp_path)[0])
    assert [(i.id, i.muted, i.acked) for i in folded] == [("gradient_explosion-2", True, False),
                                                          ("loss_spike-1", False, True)]
    c2 = t.observe(70, [fire("gradient_explosion", 70, 50.0, "critical")], now=NOW + 61)
    assert c2 and not c2[0].muted  # the mute expired: the change is marked to notify again


def test_clicks_on_several_request_threads_lose_no_change(tmp_path: Path) -> None:
    """The dashboard answers requests on several threads: acknowledgements and mutes made at the same
    moment all reach the file (each is a read-change-write of the whole file)."""
    import threading

    threads, each = 6, 15
    start = threading.Barrier(threads)
    problems: list[str] = []

    def clicks(t: int) -> None:
        start.wait()
        for i in range(each):
            _, problem = I.acknowledge(tmp_path, f"rule{t}-{i}", "ana", now=NOW)
            if problem:
                problems.append(problem)
        _, problem = I.mute(tmp_path, f"rule{t}", 60, "ana", now=NOW)
        if problem:
            problems.append(problem)

    workers = [threading.Thread(target=clicks, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    doc, problem = I.read_control(tmp_path)
    assert problem is None and not problems, problems
    assert sorted(doc["acks"]) == sorted(f"rule{t}-{i}" for t in range(threads) for i in range(each))
    assert sorted(doc["mutes"]) == sorted(f"rule{t}" for t in range(threads))
