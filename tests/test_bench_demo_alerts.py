"""bench/bench_demo_alerts.py in its quick mode: what it reports matches the run it made (not its speed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_demo_alerts as bench
from collectors import runformat as rf
from collectors.anomaly import incidents as inc

pytestmark = pytest.mark.integration


def test_quick_mode_reports_the_run_it_made(tmp_path: Path, capsys) -> None:
    out = tmp_path / "figures.json"
    assert bench.main(["--quick", "--keep", str(tmp_path / "runs"), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    run = tmp_path / "runs" / f"demo-seed{row['seed']}"
    steps = [r["step"] for r in rf.iter_records(rf.RunPaths.of(run).metrics) if r["kind"] == "train"]
    assert row["steps"] == 60 and row["last_step"] == max(steps) == 60
    records = list(rf.iter_records(rf.RunPaths.of(run).alerts, known_kinds=None))
    folded = inc.fold(records, logged_steps=steps)
    assert sum(row["incidents"].values()) == len(folded.incidents)
    assert row["high_or_critical"] == sum(i.severity in ("high", "critical") for i in folded.incidents)
    assert doc["high_or_critical"] == row["high_or_critical"]
    assert row["events"] == len(folded.events) and row["alert_records"] == sum(r["kind"] == "alert" for r in records)
    text = capsys.readouterr().out
    assert f"high/critical incidents {row['high_or_critical']} (target 0)" in text
