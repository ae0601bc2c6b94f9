"""Pure units of the Overview page, the formatting table and the server-side store/downsampling."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from dash import Patch, no_update

from callbacks import overview as ov
from callbacks.shell import pick_run, run_hint, run_options
from collectors import runformat as rf
from components import format as fmt
from components.cards import build_metric_card, CardData
from components.charts import to_trace_points
from services.downsample import downsample_indices, select_range
from services.catalog import RunCatalog
from services.readers import TrainboardRun as RunData


@pytest.mark.parametrize("fn,value,expected", [
    (fmt.fmt_sig, 1.234567, "1.235"), (fmt.fmt_sig, math.nan, "NaN"), (fmt.fmt_sig, -math.inf, "-Inf"),
    (fmt.fmt_sig, None, fmt.DASH), (fmt.fmt_sci, 3e-4, "3.00e-04"), (fmt.fmt_sci, math.inf, "+Inf"),
    (fmt.fmt_int, 12345, "12,345"), (fmt.fmt_gb, 1.5, "1.50 GB"), (fmt.fmt_epoch, 0.3612, "0.36"),
    (fmt.fmt_ago, 12.4, "12 s ago"), (fmt.fmt_ago, 300, "5 min ago"), (fmt.fmt_ago, None, "never"),
], ids=["sig", "sig-nan", "sig-neginf", "sig-none", "sci", "sci-inf", "int", "gb", "epoch", "ago-s", "ago-min", "ago-none"])
def test_formatting(fn, value, expected):
    assert fn(value) == expected


def test_rate_formatting():
    assert fmt.fmt_rate(12.345, "steps") == "12.3 steps/s"
    assert fmt.fmt_rate(25000, "tokens") == "25.0k tokens/s"


def status_doc(**over):
    doc = {"state": "training", "step": 120, "epoch": 0.5, "train_loss": 2.345678, "eval_loss": 2.5,
           "learning_rate": 3e-4, "grad_norm": 1.25, "throughput": {"steps_per_second": 4.0, "samples_per_second": 64.0},
           "memory": {"rss_gb": 0.5}, "config": {"max_steps": 1000}, "updated_at": 100.0}
    doc.update(over)
    return doc


def test_overview_cards_show_every_metric_with_units():
    cards = {c.metric: c for c in ov.overview_cards(status_doc())}
    assert list(cards) == ["train_loss", "eval_loss", "step", "epoch", "learning_rate", "grad_norm", "memory",
                           "throughput", "state"]
    assert cards["train_loss"].value == "2.346" and cards["learning_rate"].value == "3.00e-04"
    assert cards["step"].value == "120" and cards["step"].note == "of 1,000"
    assert cards["memory"].value == "0.50 GB"
    assert (cards["throughput"].value, cards["throughput"].unit) == ("64", "samples/s")
    assert cards["state"].value == "training" and cards["state"].tone is None


def test_cards_mark_nan_loss_and_crash_and_cuda():
    cards = {c.metric: c for c in ov.overview_cards(status_doc(
        train_loss=math.nan, state="crashed", error="RuntimeError: x",
        memory={"rss_gb": 1.0, "cuda_allocated_gb": 3.0, "cuda_peak_gb": 4.0}))}
    assert cards["train_loss"].value == "NaN" and cards["train_loss"].tone == "bad"
    assert cards["state"].tone == "bad" and cards["state"].note == "RuntimeError: x"
    assert cards["memory"].value == "3.00 GB" and "peak 4.00 GB" in cards["memory"].note


@pytest.mark.parametrize("text,expected", [("433 samples/s", ("433", "samples/s")), ("NaN", ("NaN", None)),
                                           ("25.0k tokens/s", ("25.0k", "tokens/s"))], ids=["unit", "special", "kilo"])
def test_split_unit(text, expected):
    assert ov.split_unit(text) == expected


def test_card_component_carries_pattern_id_and_classes():
    comp = build_metric_card(CardData("step", "Step", "5", stale=True, tone="bad"))
    assert "card--stale" in comp.className and "card--bad" in comp.className
    assert comp.children[1].id == {"type": "overview-card", "metric": "step"}


@pytest.mark.parametrize("relayout,expected", [
    (None, (False, None)), ({"xaxis.range[0]": 10, "xaxis.range[1]": 20}, (True, [10.0, 20.0])),
    ({"xaxis.range": [1, 2]}, (True, [1.0, 2.0])), ({"xaxis.autorange": True}, (True, None)),
    ({"dragmode": "pan"}, (False, None)),
], ids=["none", "zoom", "zoom-list", "reset", "other"])
def test_parse_relayout(relayout, expected):
    assert ov.parse_relayout(relayout) == expected


@pytest.mark.parametrize("prev,lengths,expected", [
    (None, {"a": 3}, "full"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 3}}, {"a": 3}, "none"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 3}}, {"a": 5}, "extend"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 3}}, {"a": 1}, "full"),
    ({"view": {"log_y": True, "range": None}, "sent": {"a": 3}}, {"a": 5}, "full"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 3}, "downsampled": True, "extended": 399}, {"a": 5}, "full"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 3}, "downsampled": True, "extended": 10}, {"a": 5}, "extend"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 0}}, {"a": 0}, "none"),
    ({"view": {"log_y": False, "range": None}, "sent": {"a": 0}}, {"a": 2}, "full"),
], ids=["first", "unchanged", "grown", "truncated", "view-changed", "downsampled-grown-a-lot", "downsampled-grown-little",
        "empty-frame-unchanged", "empty-frame-first-points"])
def test_plan_chart(prev, lengths, expected):
    assert ov.plan_chart(prev, lengths, {"log_y": False, "range": None}) == expected


def make_run(tmp_path, n=50, nan_at=None):
    paths = rf.RunPaths.of(tmp_path)
    with rf.JsonlWriter(paths.metrics) as w:
        for i in range(1, n + 1):
            w.append(rf.make_record("train", step=i, time=float(i), loss=math.nan if i == nan_at else 10.0 / i,
                                    learning_rate=1e-3, grad_norm=1.0))
            if i % 10 == 0:
                w.append(rf.make_record("eval", step=i, time=float(i), eval_loss=5.0 / i))
    run = RunData(".", tmp_path)
    run.refresh()
    return run


def test_update_charts_full_then_none_then_extend(tmp_path):
    run = make_run(tmp_path, 50, nan_at=7)
    outs, state = ov.update_charts(run, None, False, {})
    loss = outs[0]
    assert [t["name"] for t in loss["data"]][:2] == ["train loss", "eval loss"]
    assert len(loss["data"][0]["x"]) == 50 and loss["data"][0]["y"][6] is None  # NaN is a gap
    assert loss["data"][2]["x"] == [7] and loss["data"][2]["customdata"] == ["NaN"]  # and a marker
    assert len(loss["data"][1]["x"]) == 5
    outs2, state2 = ov.update_charts(run, state, False, {})
    assert all(o is no_update for o in outs2)
    with rf.JsonlWriter(run.paths.metrics) as w:
        w.append(rf.make_record("train", step=51, time=51.0, loss=0.1, learning_rate=1e-3, grad_norm=math.inf))
    run.refresh()
    outs3, state3 = ov.update_charts(run, state2, False, {})
    assert isinstance(outs3[0], Patch) and isinstance(outs3[2], Patch)
    assert state3["charts"]["overview-loss-graph"]["sent"]["train/loss"] == 51


def test_first_points_after_an_empty_frame_are_a_full_figure_not_a_patch(tmp_path):
    """A run whose status exists before its first metric (every Trainer run, for a moment) is first drawn
    as an empty frame without traces; a Patch extending trace 0 of that frame fails in the browser and,
    because Dash applies a response all or nothing, froze the whole Overview (issue 2 CI failure)."""
    paths = rf.RunPaths.of(tmp_path)
    rf.write_json_atomic(paths.status, {"v": rf.SCHEMA_VERSION, "state": "training", "step": 0})
    run = RunData(".", tmp_path)
    run.refresh()
    outs, state = ov.update_charts(run, None, False, {})
    assert outs[0]["data"] == []
    with rf.JsonlWriter(paths.metrics) as w:
        w.append(rf.make_record("train", step=5, time=5.0, loss=2.0, learning_rate=1e-3, grad_norm=1.0))
    run.refresh()
    outs, state = ov.update_charts(run, state, False, {})
    assert all(isinstance(o, dict) for o in outs), "every chart must be re-drawn whole"
    assert outs[0]["data"][0]["x"] == [5] and state["charts"]["overview-loss-graph"]["sent"]["train/loss"] == 1
    with rf.JsonlWriter(paths.metrics) as w:
        w.append(rf.make_record("train", step=10, time=10.0, loss=1.0, learning_rate=1e-3, grad_norm=1.0))
    run.refresh()
    outs, _ = ov.update_charts(run, state, False, {})
    assert isinstance(outs[0], Patch)  # now there are traces to extend


def test_log_toggle_and_zoom_rerender(tmp_path):
    run = make_run(tmp_path, 30)
    _, state = ov.update_charts(run, None, False, {})
    outs, _ = ov.update_charts(run, state, True, {})
    assert outs[0]["layout"]["yaxis"]["type"] == "log" and outs[1] is no_update  # only the loss chart toggles
    outs, _ = ov.update_charts(run, state, False, {"overview-loss-graph": [10.0, 20.0]})
    assert min(outs[0]["data"][0]["x"]) >= 9 and max(outs[0]["data"][0]["x"]) <= 21


def test_big_run_is_downsampled_and_zoom_refetches_detail(tmp_path):
    run = make_run(tmp_path, 20_000)
    outs, state = ov.update_charts(run, None, False, {})
    assert len(outs[0]["data"][0]["x"]) <= 2000 and state["charts"]["overview-loss-graph"]["downsampled"]
    outs, state = ov.update_charts(run, state, False, {"overview-loss-graph": [100.0, 600.0]})
    assert len(outs[0]["data"][0]["x"]) >= 500  # full detail within the range


def test_downsampling_keeps_spikes_and_nonfinite():
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000.0)
    y[54_321] = 50.0
    y[77_777] = np.nan
    idx = downsample_indices(x, y, 2000)
    assert len(idx) <= 2001 and 54_321 in idx and 77_777 in idx
    assert select_range(x, 10, 20) == slice(9, 22)


def test_trace_points_split_nonfinite():
    pts = to_trace_points([1, 2, 3], [1.0, math.inf, 2.0])
    assert pts.y == [1.0, None, 2.0] and pts.bad_x == [2] and pts.bad_y == [1.0] and pts.bad_text == ["+Inf"]


def test_effective_status_from_metrics_only(tmp_path):
    run = make_run(tmp_path, 12)
    st = ov.effective_status(run)
    assert st["step"] == 12 and st["train_loss"] == pytest.approx(10 / 12) and st["eval_loss"] == 0.5


def test_skipped_note():
    assert ov.skipped_note(0, 0) == ""
    assert ov.skipped_note(1, 2) == ("1 malformed line skipped in metrics.jsonl; "
                                     "2 lines of unknown kind or newer format skipped")


def test_store_refuses_ids_outside_base(tmp_path):
    (tmp_path / "base" / "a").mkdir(parents=True)
    rf.write_json_atomic(rf.RunPaths.of(tmp_path / "base" / "a").status, {"step": 1})
    rf.write_json_atomic(rf.RunPaths.of(tmp_path / "outside").status, {"step": 1})
    store = RunCatalog(tmp_path / "base", watch=False)
    assert store.run_ids() == ["a"] and store.get("a") is not None
    for bad in ("../outside", "/etc", "a/../../outside", "", None):
        assert store.get(bad) is None


def test_store_sees_new_runs_and_status_problems(tmp_path):
    store = RunCatalog(tmp_path, watch=False, rescan_interval_s=0.0)
    assert store.run_ids() == []
    rf.write_json_atomic(rf.RunPaths.of(tmp_path / "r1").status, {"step": 1, "updated_at": 5.0})
    assert store.run_ids() == ["r1"]
    run = store.get("r1")
    v = run.version
    rf.RunPaths.of(tmp_path / "r1").status.write_bytes(b'{"step": 2, "upd')  # a non-atomic writer, caught mid-write
    run.refresh()
    assert run.status_problem and "not valid JSON" in run.status_problem and run.status["step"] == 1
    assert run.version > v


def test_run_picker_pure_functions():
    label = {".": "base", "b": "b (Hugging Face output dir)"}.get
    assert run_options([".", "b"], label) == [{"label": "base", "value": "."},
                                               {"label": "b (Hugging Face output dir)", "value": "b"}]
    assert pick_run("b", ["a", "b"], "a") == "b" and pick_run("gone", ["a"], "a") == "a"
    assert run_hint(0) == "no runs yet" and run_hint(2) == "2 runs"
    assert run_hint(1, ["x is a symbolic link"]) == "1 run · skipped: x is a symbolic link"


def test_ingest_mixed_shapes_strings_and_resumed_steps(tmp_path):
    paths = rf.RunPaths.of(tmp_path)
    recs = [rf.make_record("train", step=i, time=1.0, loss=float(i)) for i in range(1, 6)]
    recs += [rf.make_record("train", step=6, time=1.0, loss="oops"), rf.make_record("train", step=7, time=1.0, loss=True)]
    recs += [rf.make_record("train", step=i, time=1.0, loss=float(i), extra=1) for i in (3, 4)]  # resumed from step 3
    with rf.JsonlWriter(paths.metrics) as w:
        for r in recs:
            w.append(r)
    run = RunData(".", tmp_path)
    run.refresh()
    s = run.series["train/loss"]
    # the string and the bool are skipped; the resumed run's steps 3 and 4 replace the first writes and
    # everything after them (newest write wins: no line back from 5 to 3, no sawtooth)
    assert list(s.steps) == [1, 2, 3, 4] and list(s.values) == [1.0, 2.0, 3.0, 4.0] and s.rewinds == 1
    x, y = s.arrays()
    assert list(x) == [1, 2, 3, 4] and run.records_read == 9
    assert list(run.series["train/extra"].steps) == [3, 4]


def test_loss_markers_for_alerts_and_snapshots(tmp_path):
    run = make_run(tmp_path, 50)
    alerts = [{"step": 20, "severity": "critical", "message": "non-finite loss"},
              {"step": 33, "severity": "high", "message": "loss spike"}, {"step": "bad", "severity": "low"}]
    snaps = [{"step": 33, "name": "anomaly_20260101_000000_loss_spike_40.0pct", "reason": "loss_spike_40.0pct"}]
    traces = ov.loss_markers(run, alerts, snaps)
    by_name = {t["name"]: t for t in traces}
    assert set(by_name) == {"critical alerts", "high alerts", "snapshots"}
    assert by_name["critical alerts"]["x"] == [20] and by_name["critical alerts"]["y"] == [pytest.approx(0.5)]
    assert by_name["snapshots"]["x"] == [33] and "loss_spike" in by_name["snapshots"]["customdata"][0]
    outs, state = ov.update_charts(run, None, False, {}, traces, "v1")
    assert [t["name"] for t in outs[0]["data"]][-3:] == ["critical alerts", "high alerts", "snapshots"]
    outs, _ = ov.update_charts(run, state, False, {}, traces, "v1")
    assert outs[0] is no_update
    outs, _ = ov.update_charts(run, state, False, {}, traces[:1], "v2")  # a new alert: the loss chart is redrawn
    assert isinstance(outs[0], dict) and outs[1] is no_update


def test_snapshot_rows_relist_only_when_the_directory_changes(tmp_path, monkeypatch):
    from collectors import snapshots as S

    paths = rf.RunPaths.of(tmp_path)
    rows = ov.SnapshotRows()
    assert rows(paths) == []
    calls = []
    real = S.list_snapshots
    monkeypatch.setattr(ov, "list_snapshots", lambda *a, **k: calls.append(1) or real(*a, **k))
    (paths.snapshots_dir / "manual_20260101_000000").mkdir(parents=True)
    rf.write_json_atomic(paths.snapshots_dir / "manual_20260101_000000" / "metadata.json",
                         {"timestamp": "20260101_000000", "reason": "manual", "step": 3})
    first = rows(paths)
    assert [r["step"] for r in first] == [3] and rows(paths) is first and len(calls) == 1
    os.utime(paths.snapshots_dir, ns=(1, 1))  # the directory changed (a snapshot renamed in or removed)
    rows(paths)
    assert len(calls) == 2


def test_a_click_that_arrives_with_a_tick_is_not_taken_for_a_tick() -> None:
    from callbacks.shell import only_tick, triggered_components
    from components import ids

    assert only_tick([f"{ids.SHELL_TICK}.n_intervals"])
    both = [f"{ids.SHELL_TICK}.n_intervals", f"{ids.OVERVIEW_SHOW_EVENTS}.value"]
    assert not only_tick(both)  # Dash sent both in one request: the toggle must not be dropped
    assert triggered_components(both) == {ids.SHELL_TICK, ids.OVERVIEW_SHOW_EVENTS}
    assert not only_tick(["."])  # the initial call: nothing triggered it
    assert not only_tick([])


def test_a_zoom_that_arrives_with_a_tick_is_kept() -> None:
    from callbacks.overview import current_ranges
    from components import ids

    trig = frozenset({ids.SHELL_TICK, ids.OVERVIEW_LOSS_GRAPH})
    got = current_ranges(None, "run", trig, {ids.OVERVIEW_LOSS_GRAPH: {"xaxis.range[0]": 10, "xaxis.range[1]": 20}})
    assert got[ids.OVERVIEW_LOSS_GRAPH] == [10, 20]


def test_a_zoom_whose_answer_was_dropped_is_applied_by_the_next_tick():
    """Dash drops the answer to a zoom's request when a tick's request for the callback follows it: the
    tick's call, which carries the same relayoutData, must apply the zoom the state has not seen."""
    from callbacks.overview import current_ranges, mark_relayouts_seen
    from components import ids

    zoom = {"xaxis.range[0]": 10, "xaxis.range[1]": 20}
    seen = {"run": "run", "charts": {g: {"view": {"range": None}} for g in
                                     (ids.OVERVIEW_LOSS_GRAPH, ids.OVERVIEW_LR_GRAPH, ids.OVERVIEW_GRAD_GRAPH)}}
    mark_relayouts_seen(seen, {ids.OVERVIEW_LOSS_GRAPH: {"autosize": True}})
    tick = frozenset({ids.SHELL_TICK})
    got = current_ranges(seen, "run", tick, {ids.OVERVIEW_LOSS_GRAPH: zoom})
    assert got[ids.OVERVIEW_LOSS_GRAPH] == [10.0, 20.0] and got[ids.OVERVIEW_LR_GRAPH] is None
    # once the state has seen it, a tick keeps the state's range (a person may have reset the zoom since)
    mark_relayouts_seen(seen, {ids.OVERVIEW_LOSS_GRAPH: zoom})
    seen["charts"][ids.OVERVIEW_LOSS_GRAPH]["view"]["range"] = None
    assert current_ranges(seen, "run", tick, {ids.OVERVIEW_LOSS_GRAPH: zoom})[ids.OVERVIEW_LOSS_GRAPH] is None
    # another run's leftover zoom is not applied to a newly picked run
    assert current_ranges(seen, "other", tick, {ids.OVERVIEW_LOSS_GRAPH: zoom})[ids.OVERVIEW_LOSS_GRAPH] is None
