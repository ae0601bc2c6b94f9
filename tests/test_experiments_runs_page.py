"""Pure units of the Runs page: table rows, config diff, results matrix, overlay figure, CSV, checkpoints."""
from __future__ import annotations

import csv
import io
import math

import pytest

from callbacks import runs as rp
from services.model import CheckpointRow, RunSummary
from components import ids
from components.runs import (ALIGN_STEP, ALIGN_WALL, CompareRun, build_checkpoints_panel, build_compare_figure,
                             build_config_diff, build_runs_layout, fmt_duration)


def run_a() -> CompareRun:
    return CompareRun("a", "exp-a", {"train/loss": ([1, 2, 3], [3.0, 2.0, math.nan], [100.0, 101.0, 102.0]),
                                     "eval/loss": ([3], [2.5], [102.5])})


def run_b() -> CompareRun:
    return CompareRun("b", "hf-b", {"train/loss": ([2, 4], [2.8, 2.2], [None, None])})


def test_table_rows_have_units() -> None:
    s = RunSummary("x/y", "experiment", "x/y", "/p", "training", last_step=12345, best_eval_loss=1.234567,
                   duration_s=4000.0, alert_count=2, snapshot_count=1, checkpoint_count=3, updated_at=990.0)
    (row,) = rp.table_rows([s], now=1000.0)
    assert row == {"id": "x/y", "name": "x/y", "kind": "experiment", "state": "training", "last_step": "12,345",
                   "best_eval_loss": "1.235", "duration": "67 min", "alerts": 2, "snapshots": 1, "checkpoints": 3,
                   "updated": "10 s ago"}
    empty = rp.table_rows([RunSummary("z", "tensorboard", "z", "/z", "stopped")], now=0.0)[0]
    assert (empty["last_step"], empty["best_eval_loss"], empty["duration"], empty["updated"]) == ("—", "—", "—", "never")


@pytest.mark.parametrize("seconds,text", [(None, "—"), (42.0, "42 s"), (600.0, "10 min"), (7200.0, "2.0 h"), (-1.0, "—")],
                         ids=["none", "s", "min", "h", "negative"])
def test_fmt_duration(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_config_diff_shows_only_differing_keys() -> None:
    rows = rp.config_diff([{"lr": 1e-3, "bs": 32, "opt": "adam"}, {"lr": 3e-4, "bs": 32, "warmup": 10}])
    assert rows == [("lr", ["0.001", "0.0003"]), ("opt", ["adam", "—"]), ("warmup", ["—", "10"])]
    assert rp.config_diff([{"a": 1}, {"a": 1}]) == []
    assert "same configuration" in str(build_config_diff(["a", "b"], []))


def test_results_matrix_and_metric_options() -> None:
    metrics, values = rp.results_matrix([{"val_loss": 2.0, "ppl": 7.4}, {"val_loss": 2.5, "steps": 10}])
    assert metrics == ["val_loss", "ppl", "steps"] and values == [[2.0, 2.5], [7.4, None], [None, 10]]
    assert rp.metric_options([["train/loss", "train/lr"], ["eval/loss", "eval/acc"]]) == ["loss", "acc", "lr"]


def test_compare_figure_by_step_overlays_train_and_eval() -> None:
    fig, notes = build_compare_figure([run_a(), run_b()], "loss", ALIGN_STEP, False, "u")
    names = [t["name"] for t in fig["data"]]
    assert names == ["exp-a · train", "exp-a · train: NaN/Inf", "exp-a · eval", "hf-b · train"]
    assert fig["data"][0]["y"] == [3.0, 2.0, None] and fig["data"][1]["x"] == [3]  # NaN: a gap and a marker
    assert fig["data"][2]["line"]["dash"] == "dash" and fig["data"][0]["line"]["color"] == fig["data"][2]["line"]["color"]
    assert fig["data"][3]["line"]["color"] != fig["data"][0]["line"]["color"]
    assert notes == [] and fig["layout"]["xaxis"]["title"]["text"] == "step"


def test_compare_figure_by_wall_time_leaves_out_runs_without_times() -> None:
    fig, notes = build_compare_figure([run_a(), run_b()], "loss", ALIGN_WALL, True, "u")
    assert fig["data"][0]["x"] == [0.0, 1.0, 2.0] and fig["layout"]["yaxis"]["type"] == "log"
    assert notes == ["hf-b: no wall times recorded (plain Trainer log history); compare by step"]
    empty, notes2 = build_compare_figure([run_b()], "accuracy", ALIGN_STEP, False, "u")
    assert empty["data"] == [] and notes2 == ["hf-b: no 'accuracy' logged"]


def test_compare_csv_round_trips() -> None:
    text = rp.compare_csv([run_a(), run_b()], "loss")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6
    assert rows[0] == {"run": "exp-a", "split": "train", "metric": "loss", "step": "1", "wall_time": "100.0",
                       "seconds_since_start": "0.0", "value": "3.0"}
    assert rows[2]["value"] == "nan" and rows[3]["split"] == "eval"
    assert rows[4]["wall_time"] == "" and rows[5]["value"] == "2.2"


def test_checkpoint_rows_and_panel() -> None:
    rows = rp.checkpoint_rows([CheckpointRow(10, "/p/c10", 1.5, 0.0, False, True, "cmd10"),
                               CheckpointRow(20, "/p/c20", 1.5, 0.0, True, False, "cmd20")])
    assert [r["step"] for r in rows] == [20, 10] and rows[0]["size"] == "1.50 MB"
    panel = str(build_checkpoints_panel("exp-a", rows))
    assert "latest" in panel and "best" in panel and "cmd10" in panel and "Checkpoints · exp-a" in panel
    assert "No checkpoints" in str(build_checkpoints_panel("x", []))


def test_layout_uses_the_registered_ids() -> None:
    text = str(build_runs_layout())
    for name in ("RUNS_TABLE", "RUNS_GRAPH", "RUNS_CONFIG_DIFF", "RUNS_RESULTS", "RUNS_CSV_BUTTON", "RUNS_CHECKPOINTS"):
        assert getattr(ids, name) in text
