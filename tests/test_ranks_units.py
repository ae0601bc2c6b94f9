"""Pure units of issue 13: the rank rules, the meter, the stall rule on both sides, the ranks reader over
broken files, the Ranks panel's factories, and the stalled state of runs built from real files."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from collectors import Monitor
from collectors import runformat as rf
from collectors.ranks import (RankMeter, RankRules, RanksConfig, RanksPlugin, WorldInfo, coerce_ranks, judge_stall,
                              rank_record, rank_time, stall_threshold, typical_interval, world_info)
from callbacks import overview as ov
from callbacks.ranks import update_ranks_panel
from components.ranks import build_ranks_heatmap, build_ranks_panel, summary_lines
from services.catalog import RunCatalog
from services.detection import run_stall
from services.model import STALE_AFTER_S, STALLED
from services.ranks import RanksReader, ranks_view


# --------------------------------------------------------------------------- settings and world

@pytest.mark.parametrize("option, expected", [(True, RanksConfig()), (None, RanksConfig()), (False, None),
                                              ({"straggler_factor": 2.0}, RanksConfig(straggler_factor=2.0))],
                         ids=["true", "none", "false", "dict"])
def test_coerce_ranks(option, expected):
    assert coerce_ranks(option) == expected


@pytest.mark.parametrize("option, words", [({"bogus": 1}, "unknown setting(s) bogus"), ("yes", "must be True, False"),
                                           ({"straggler_factor": 0.9}, "above 1"),
                                           ({"silent_after_s": -1}, "silent_after_s"),
                                           ({"stall_min_s": float("nan")}, "stall_min_s")],
                         ids=["unknown-key", "string", "factor-below-1", "negative", "nan"])
def test_bad_ranks_option_names_the_problem(option, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        coerce_ranks(option)


def test_monitor_and_callback_take_ranks_option(tmp_path):
    with pytest.raises(ValueError, match="ranks="):
        Monitor(tmp_path / "r", ranks="sometimes")
    assert Monitor(tmp_path / "a", ranks=False).ranks is None
    mon = Monitor(tmp_path / "b", ranks={"stall_min_s": 30})
    assert isinstance(mon.ranks, RanksPlugin) and mon.ranks.config.stall_min_s == 30
    from collectors import MonitorCallback

    with pytest.raises(ValueError, match="ranks="):
        MonitorCallback(ranks=3)


def test_world_info_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NNODES", "SLURM_NODEID", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    assert world_info() == WorldInfo()


def test_world_info_uses_the_global_rank_not_the_local_one(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for var in ("GROUP_RANK", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    w = world_info()
    assert (w.rank, w.local_rank, w.node_rank, w.nodes) == (2, 0, 1, 2)
    # node 1's local rank 0 is not the main process: only world rank 0 writes the run dir
    mon = Monitor(Path(os.devnull).parent / "never-created-by-rank-2", ranks=False)
    assert mon.is_main is False


# --------------------------------------------------------------------------- the meter and the record

def test_meter_splits_data_wait_work_and_phases():
    m = RankMeter(start=0.0)
    m.step_begin(0.2)  # batch fetched: 0.2 s of data wait
    m.forward_end(0.5, loss=2.0)
    m.step_end(1.0, wall=100.0)  # backward + all-reduce + optimizer: not work
    m.phase(1.0, "evaluating")
    m.forward_end(5.0, loss=99.0)  # an eval forward: counts nowhere
    m.phase(6.0, None)
    m.step_begin(6.1)
    m.forward_end(6.4, loss=4.0)
    m.step_end(7.0, wall=106.0)
    out = m.take(8.0, step_delta=2)
    assert out["steps"] == 2 and out["step_time_s"] == pytest.approx(4.0)
    assert out["work_s"] == pytest.approx((0.5 + 0.4) / 2) and out["data_wait_s"] == pytest.approx(0.15)
    assert out["own_loss"] == pytest.approx(3.0) and m.last_step_at == 106.0
    assert m.take(9.0, 0)["step_time_s"] is None  # no step since: no invented time


def test_a_single_process_forward_hook_keeps_no_loss(tmp_path: Path) -> None:
    """Only the rank health file (several processes) reads each rank's own loss: a single process's
    forward hook notes the time and runs no tensor op on the loss (two ops per forward, for nothing)."""
    torch = pytest.importorskip("torch")

    class Out(dict):
        pass

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return Out(loss=self.lin(x).pow(2).mean())

    model = Model()
    with Monitor(tmp_path, anomaly=False).watch(model) as mon:
        mon.log(1, loss=1.0)
        model(torch.ones(3, 2))
        assert mon.ranks.meter.fwd_end is not None and mon.ranks.meter.loss_sum is None


@pytest.mark.parametrize("timing, metrics, non_finite, loss", [
    ({"own_loss": 1.5}, {"loss": 9.0}, False, 1.5),
    ({"own_loss": math.nan}, {"loss": 1.0}, True, math.nan),
    ({"own_loss": None}, {"loss": 2.0}, False, 2.0),
    ({"own_loss": None}, {"loss": 2.0, "grad_norm": math.inf}, True, 2.0),
    ({"own_loss": None}, {"loss": 0.0, rf.LOSS_REPLACED: True}, True, None),
], ids=["own-loss-wins", "own-nan", "logged-loss", "grad-inf", "replaced"])
def test_rank_record_flags_non_finite(timing, metrics, non_finite, loss):
    rec = rank_record(WorldInfo(rank=1, world_size=2), 7, 123.0, timing, {"rss_gb": 0.5}, metrics)
    assert rec["kind"] == "rank" and rec["rank"] == 1 and rec["step"] == 7 and rec["non_finite"] is non_finite
    assert (rec["loss"] is None and loss is None) or (math.isnan(loss) and math.isnan(rec["loss"])) or rec["loss"] == loss
    assert "own_loss" not in rec and rec["rss_gb"] == 0.5


# --------------------------------------------------------------------------- the rules

def _step(step, times, **extra):
    return [{"rank": r, "step": step, "work_s": t, **extra} for r, t in enumerate(times)]


def test_straggler_needs_n_consecutive_slow_log_steps_and_names_the_rank():
    rules = RankRules(RanksConfig(straggler_steps=3), world_size=4, started=0.0)
    assert rules.feed(_step(2, [0.1, 0.1, 0.1, 0.4])) == []
    assert rules.feed(_step(4, [0.1, 0.1, 0.1, 0.4])) == []
    out = rules.feed(_step(6, [0.1, 0.11, 0.1, 0.4]))
    assert [a.rule for a in out] == ["straggler"] and out[0].metadata["rank"] == 3
    assert "Rank 3" in out[0].message and "4.0×" in out[0].message and out[0].severity == "high"
    assert rules.feed(_step(8, [0.1, 0.1, 0.1, 0.4])) == []  # once per episode
    rules.feed(_step(10, [0.1, 0.1, 0.1, 0.1]))  # recovered
    for s in (12, 14):
        assert rules.feed(_step(s, [0.1, 0.1, 0.1, 0.4])) == []
    assert len(rules.feed(_step(16, [0.1, 0.1, 0.1, 0.4]))) == 1  # a new episode fires again


@pytest.mark.parametrize("times, fires", [([0.1, 0.14], False), ([0.1, 0.16], True), ([0.001, 0.005], False)],
                         ids=["below-factor", "above-factor", "below-min-excess"])
def test_straggler_factor_and_min_excess(times, fires):
    rules = RankRules(RanksConfig(straggler_steps=1), world_size=2, started=0.0)
    assert bool(rules.feed(_step(1, times))) is fires


def test_incomplete_steps_wait_for_every_rank_records_in_any_order():
    rules = RankRules(RanksConfig(straggler_steps=1), world_size=3, started=0.0)
    assert rules.feed([{"rank": 2, "step": 5, "work_s": 1.0}, {"rank": 0, "step": 5, "work_s": 0.1}]) == []
    out = rules.feed([{"rank": 1, "step": 5, "work_s": 0.1}])
    assert out and out[0].metadata["rank"] == 2 and rules.slowest["rank"] == 2


def test_rank_non_finite_is_critical_for_a_nonzero_rank_once_per_episode():
    rules = RankRules(RanksConfig(), world_size=2, started=0.0)
    out = rules.feed([{"rank": 0, "step": 3, "loss": 1.0, "non_finite": False},
                      {"rank": 1, "step": 3, "loss": math.nan, "non_finite": True}])
    assert [(a.rule, a.severity, a.metadata["rank"]) for a in out] == [("rank_non_finite", "critical", 1)]
    assert rules.feed([{"rank": 1, "step": 4, "loss": math.nan, "non_finite": True}]) == []
    assert rules.summary()["non_finite"] == [1]


def test_only_rank_0_reporting_is_not_a_silent_world():
    """A plain loop that builds its Monitor on rank 0 only: the other ranks run no collector."""
    rules = RankRules(RanksConfig(silent_after_s=10), world_size=4, started=0.0)
    rules.feed([{"rank": 0, "step": 1}])
    assert rules.check_silent(100.0, {0: 99.0}, 1) == []


def test_rank_silent_after_the_limit_and_never_reported():
    rules = RankRules(RanksConfig(silent_after_s=10), world_size=3, started=0.0)
    rules.feed([{"rank": 0, "step": 1, "host": "h", "pid": 11}, {"rank": 1, "step": 1, "host": "h", "pid": 12}])
    assert rules.check_silent(5.0, {0: 4.0, 1: 4.0}, 1) == []
    out = rules.check_silent(20.0, {0: 19.0, 1: 4.0}, 1)
    assert sorted(a.metadata["rank"] for a in out) == [1, 2]
    msgs = {a.metadata["rank"]: a.message for a in out}
    assert "pid 12" in msgs[1] and "never reported" in msgs[2] and "filesystem" in msgs[2]
    assert rules.check_silent(30.0, {0: 29.0, 1: 4.0}, 1) == []  # once
    rules.feed([{"rank": 1, "step": 1, "final": True}])
    assert [a.metadata["rank"] for a in rules.check_silent(100.0, {0: 50.0}, 1)] == [0]  # finished rank 1: never


# --------------------------------------------------------------------------- the stall rule

@pytest.mark.parametrize("times, expected", [([], 60.0), ([0, 1, 2, 3], 60.0), ([0, 20, 40, 60], 100.0),
                                             ([0, 30, 31, 32, 33], 60.0)],
                         ids=["no-history", "fast-logs", "slow-logs", "median-not-mean"])
def test_stall_threshold(times, expected):
    assert stall_threshold(times, 5.0, 60.0) == pytest.approx(expected)


def test_typical_interval_uses_the_recent_window():
    assert typical_interval(list(range(0, 100)) + [1000]) == 1.0
    assert typical_interval([5.0]) is None


@pytest.mark.parametrize("phase, age, state", [(None, 10, None), (None, 70, "stalled"), ("evaluating", 500, "evaluating"),
                                               ("saving", 500, "saving")], ids=["fresh", "stalled", "eval", "save"])
def test_judge_stall(phase, age, state):
    v = judge_stall(1000.0, 1000.0 + age, 60.0, phase)
    assert v.state == state
    if state == "stalled":
        assert v.since == 1000.0


def test_run_stall_prefers_the_collector_heartbeat_fields():
    status = {"state": "training", "last_step_at": 1000.0}
    assert run_stall(status, [900.0, 901.0], 901.0, 1200.0, 1050.0).state is None
    assert run_stall(status, [900.0, 901.0], 901.0, 1200.0, 1061.0).state == "stalled"
    assert run_stall({**status, "phase": "saving"}, [], None, None, 5000.0).state == "saving"
    assert run_stall(None, [], None, None, 5000.0).state is None  # nothing known: no verdict


# --------------------------------------------------------------------------- the reader over broken files

def _write_rank(d: Path, r: int, lines: list[str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"rank-{r}.jsonl").write_text("".join(lines))


def _rec(r: int, step: int, work: float, **extra) -> str:
    return json.dumps({"v": 1, "kind": "rank", "rank": r, "step": step, "work_s": work, "rss_gb": 0.3 + r,
                       "host": "h", "node": r // 2, **extra}) + "\n"


def test_reader_tolerates_partial_malformed_and_missing_files(tmp_path):
    d = tmp_path / "ranks"
    _write_rank(d, 0, [_rec(0, 1, 0.1), _rec(0, 2, 0.1)])
    _write_rank(d, 1, [_rec(1, 1, 0.1), "{not json\n", _rec(1, 2, 0.5, non_finite=True, loss=float("nan")),
                       '{"v":1,"kind":"rank","rank":1,"st'])  # a half-written last line
    (d / "notes.txt").write_text("ignored")
    rd = RanksReader(d)
    assert rd.poll() is True
    view = ranks_view(rd, {"world": {"world_size": 3}}, time.time())
    assert view.multi and [r.rank for r in view.rows] == [0, 1] and view.missing == [2]
    assert view.non_finite == [1] and view.steps == [1, 2]
    assert view.matrix == [[0.1, 0.1], [0.1, 0.5]]
    assert view.slowest["rank"] == 1 and view.slowest["ratio"] == pytest.approx(5.0)
    assert any("malformed" in p for p in view.problems)
    lines = summary_lines(view)
    assert "2 of 3 ranks reporting" in lines and any("Never reported: rank 2" in t for t in lines)
    assert any("rank 1 (from step 2)" in t for t in lines)
    with open(d / "rank-1.jsonl", "a") as fh:  # the half line completes
        fh.write('ep":3,"work_s":0.2}\n')
    assert rd.poll() is True and rd.records[1][-1]["step"] == 3
    assert RanksReader(tmp_path / "nothing").poll() is False


def test_heatmap_has_no_nan_and_panel_renders(tmp_path):
    d = tmp_path / "run" / "ranks"
    _write_rank(d, 0, [_rec(0, 1, 0.1), _rec(0, 2, 0.2)])
    _write_rank(d, 1, [_rec(1, 2, 0.3)])
    rd = RanksReader(d)
    rd.poll()
    view = ranks_view(rd, None, time.time())
    fig = build_ranks_heatmap(view)
    assert fig["data"][0]["z"] == [[0.1, 0.2], [None, 0.3]] and fig["data"][0]["y"] == ["rank 0", "rank 1"]
    assert "NaN" not in json.dumps(fig)
    text = json.dumps(build_ranks_panel(view), default=lambda o: o.to_plotly_json())
    assert "Slowest now: rank 1" in text and "Ranks" in text


def test_panel_hidden_for_single_process_runs(tmp_path):
    with Monitor(tmp_path / "single") as mon:
        mon.log(1, loss=1.0)
    catalog = RunCatalog(tmp_path / "single")
    children, hidden, _ = update_ranks_panel(catalog.get(catalog.default_run()))
    assert hidden and children == []
    assert update_ranks_panel(None)[1] is True


# --------------------------------------------------------------------------- stalled runs from real files

def _live_collector_run(root: Path, last_step_at: float, now: float, phase: str | None = None) -> None:
    paths = rf.RunPaths.of(root)
    with rf.JsonlWriter(paths.metrics) as w:
        for i in range(10):
            w.append(rf.make_record(rf.RecordKind.TRAIN, step=i + 1, time=last_step_at - 9 + i, loss=1.0))
    rf.write_json_atomic(paths.status, {"v": 1, "state": "training", "step": 10, "updated_at": now, "heartbeat_at": now,
                                        "last_step_at": last_step_at, "phase": phase, "pid": os.getpid()})


def test_a_live_run_without_steps_is_stalled_and_the_card_says_since_when(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINBOARD_STALL_MIN_S", raising=False)
    now = time.time()
    _live_collector_run(tmp_path / "r", last_step_at=now - 90, now=now)
    catalog = RunCatalog(tmp_path / "r")
    run = catalog.get(catalog.default_run())
    assert run.state(now) == STALLED and run.summary(now).state == STALLED
    card = {c.metric: c for c in ov.overview_cards(ov.effective_status(run, now))}["state"]
    assert card.value == STALLED and card.tone == "bad" and card.note.startswith("stalled since ")
    assert "without a step; limit 60 s" in card.note


def test_a_marked_phase_is_not_a_stall(tmp_path):
    now = time.time()
    _live_collector_run(tmp_path / "r", last_step_at=now - 900, now=now, phase="saving")
    catalog = RunCatalog(tmp_path / "r")
    run = catalog.get(catalog.default_run())
    assert run.state(now) == "training" and run.stall(now).state == "saving"


def test_a_dead_collector_run_turns_stale_not_stalled(tmp_path):
    now = time.time()
    _live_collector_run(tmp_path / "r", last_step_at=now - 300, now=now - STALE_AFTER_S - 5)
    catalog = RunCatalog(tmp_path / "r")
    assert catalog.get(catalog.default_run()).state(now) == "stale"


def test_stall_min_is_configurable_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRAINBOARD_STALL_MIN_S", "12")
    assert RanksConfig().stall_min_s == 12 and stall_threshold([]) == 12
    monkeypatch.setenv("TRAINBOARD_STALL_MIN_S", "garbage")
    assert stall_threshold([]) == 60.0


def test_rank_time_prefers_work():
    assert rank_time({"work_s": 0.2, "step_time_s": 1.0}) == 0.2
    assert rank_time({"work_s": None, "step_time_s": 1.0}) == 1.0
    assert rank_time({"work_s": "x"}) is None


def test_panel_says_when_only_rank_0_runs_the_collector(tmp_path):
    d = tmp_path / "ranks"
    _write_rank(d, 0, [_rec(0, 1, 0.1)])
    rd = RanksReader(d)
    rd.poll()
    lines = summary_lines(ranks_view(rd, {"world": {"world_size": 4}}, time.time()))
    assert any(t.startswith("Only rank 0 reports") for t in lines) and not any("Never reported" in t for t in lines)


def test_rank_memory_matches_the_process_rss():
    from collectors.ranks import RankMemory
    from collectors.runtime import process_memory

    mem = RankMemory()
    try:
        got, ref = mem.read()["rss_gb"], process_memory()["rss_gb"]
    finally:
        mem.close()
    assert got == pytest.approx(ref, rel=0.2)
