"""Unit tests of MetricsLogger: the dashboard's record format, the human log, reading back, summaries."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from collectors import MetricsLogger, create_experiment_directory
from collectors import runformat as rf
from collectors.experiments.metrics_logger import format_line, format_value, summarize


@pytest.mark.parametrize("value,text", [
    (3.14159, "3.142"), (2, "2"), (1e-4, "1.000e-04"), (123456.0, "1.235e+05"), (math.nan, "nan"), ("x", "x"),
    (True, "True"),
], ids=["float", "int", "tiny", "huge", "nan", "str", "bool"])
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_format_line_has_kind_step_and_pairs() -> None:
    line = format_line(rf.make_record("train", step=5, time=0.0, loss=1.23456, learning_rate=3e-4))
    assert "[train] step 5 | loss=1.235 | learning_rate=3.000e-04" in line


def test_summarize_is_pure_and_skips_non_finite() -> None:
    recs = [{"kind": "train", "step": 0, "loss": 4.0}, {"kind": "train", "step": 10, "loss": math.nan},
            {"kind": "train", "step": 20, "loss": 2.0, "note": "x"}]
    s = summarize(recs)
    assert s["total_steps"] == 20
    assert s["loss_final"] == 2.0 and s["loss_min"] == 2.0 and s["loss_mean"] == 3.0
    assert "note_final" not in s and "kind_final" not in s
    assert summarize([]) == {"total_steps": 0}


def test_records_are_exactly_the_dashboard_format(tmp_path: Path) -> None:
    dirs = create_experiment_directory(tmp_path, "exp")
    ml = MetricsLogger(dirs["logs"], log_interval=10)
    ml.log_metrics(0, {"loss": 4.0, "learning_rate": 1e-3, "perplexity": 54.6})
    ml.log_metrics(10, {"eval_loss": 3.5})
    ml.log_metrics(20, {"val_loss": 3.4}, kind="eval")
    paths = rf.RunPaths.of(dirs["root"])
    assert rf.is_run_dir(dirs["root"])  # the dashboard's discovery sees an experiment as a run
    records = list(rf.iter_records(paths.metrics))  # the reader the dashboard uses
    assert [r["kind"] for r in records] == ["train", "eval", "eval"]
    first = records[0]
    assert list(first)[:4] == ["v", "kind", "step", "time"] and first["v"] == rf.SCHEMA_VERSION
    assert first["loss"] == 4.0 and first["learning_rate"] == 1e-3
    text = paths.training_log.read_text().splitlines()
    assert len(text) == 3 and "[eval] step 10 | eval_loss=3.5" in text[1]


def test_run_dir_given_instead_of_logs_dir(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path / "exp")
    ml.log_metrics(1, {"loss": 1.0})
    assert (tmp_path / "exp" / "logs" / "metrics.jsonl").is_file()


def test_tensor_values_and_nan_round_trip(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ml = MetricsLogger(tmp_path / "logs")
    ml.log_metrics(torch.tensor(3), {"loss": torch.tensor(2.5), "grad_norm": math.inf, "x": math.nan})
    rec = ml.load_metrics()[0]
    assert rec["step"] == 3 and rec["loss"] == 2.5 and rec["grad_norm"] == math.inf and math.isnan(rec["x"])


def test_should_log(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path / "logs", log_interval=5)
    assert [s for s in range(12) if ml.should_log(s)] == [0, 5, 10]


def test_load_skips_invalid_lines_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ml = MetricsLogger(tmp_path / "logs")
    ml.log_metrics(1, {"loss": 3.0})
    with open(ml.metrics_file, "ab") as fh:
        fh.write(b"{not json\n[1, 2]\n\n")
    ml.log_metrics(2, {"loss": 2.0})
    with open(ml.metrics_file, "ab") as fh:
        fh.write(b'{"v": 1, "kind": "train", "step": 3, "lo')  # a crash mid-line
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        recs = ml.load_metrics()
    assert [r["step"] for r in recs] == [1, 2]
    assert ml.bad_lines == 3 and "skipped 3 invalid line(s)" in caplog.text
    assert ml.get_latest_step() == 2
    summary = ml.get_metrics_summary()
    assert summary["total_steps"] == 2 and summary["loss_final"] == 2.0 and summary["loss_mean"] == 2.5


def test_empty_log(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path / "logs")
    assert ml.load_metrics() == [] and ml.get_latest_step() is None
    assert ml.get_metrics_summary() == {"total_steps": 0}


def test_flush_false_buffers_until_flush(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path / "logs")
    for s in range(3):
        ml.log_metrics(s, {"loss": 1.0}, flush=False)
    ml.flush()
    assert len(list(rf.iter_records(ml.metrics_file))) == 3
    ml.close()
    ml.log_metrics(3, {"loss": 1.0})  # reopens after close
    assert ml.get_latest_step() == 3


@pytest.mark.parametrize("step,metrics,kind,match", [
    (-1, {"loss": 1.0}, None, "non-negative"),
    ("a", {"loss": 1.0}, None, "non-negative"),
    (1, [1.0], None, "dict"),
    (1, {"step": 1.0}, None, "reserved"),
    (1, {"loss": 1.0}, "alert", "train, eval"),
], ids=["negative", "str-step", "list", "reserved", "bad-kind"])
def test_bad_input_is_a_clear_error(tmp_path: Path, step: object, metrics: object, kind: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetricsLogger(tmp_path / "logs").log_metrics(step, metrics, kind=kind)  # type: ignore[arg-type]


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log_interval"):
        MetricsLogger(tmp_path, log_interval=0)
    (tmp_path / "f" / "logs").parent.mkdir()
    (tmp_path / "f" / "logs").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        MetricsLogger(tmp_path / "f" / "logs")


def test_unwritable_directory_warns_once_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "exp"
    blocker.mkdir()
    (blocker / "logs").mkdir()
    (blocker / "logs" / "metrics.jsonl").mkdir()  # a directory where the file should be: open() fails
    ml = MetricsLogger(blocker / "logs")
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert ml.log_metrics(1, {"loss": 1.0}) is None
        assert ml.log_metrics(2, {"loss": 1.0}) is None
    assert caplog.text.count("appending to metrics.jsonl failed") == 1


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path / "logs", main_process=False)
    assert ml.log_metrics(1, {"loss": 1.0}) is None
    assert not (tmp_path / "logs" / "metrics.jsonl").exists()
