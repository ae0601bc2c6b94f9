"""The scale bench's quick mode, run for the correctness of what it reports (never its speed).

Real servers, a real browser and real TensorBoard files, at small sizes: the open and the reopen after a
restart (with the series cache written in between), the zoom that must draw every point of its range, the
TensorBoard ratio, and the many-runs page and CPU figures.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = """
import json, sys
from bench.bench_scale import run
out = run(sys.argv[2:])
open(sys.argv[1], "w").write(json.dumps(out, default=str))
"""


@pytest.mark.timeout(1800)
def test_bench_scale_quick_reports_every_figure(tmp_path: Path) -> None:
    # its own process: the bench drives its own Playwright, which cannot share a process with the suite's
    result_file = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(result_file), "--quick", "--data-dir",
                           str(tmp_path / "data"), "--idle-s", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result_file.read_text())
    text = proc.stdout
    one = out["1m"]
    assert one["new"].get("first") and one["new"].get("reopen"), one
    assert one["new"].get("reopen_fresh"), one  # the reopen by an empty browser profile, printed beside it
    assert not {"first_error", "reopen_error", "reopen_fresh_error"} & set(one["new"]), one["new"]
    assert one["new"]["cache_written"] is True  # the first server wrote the series cache the second read
    assert one["inproc_values"] == one["values"] == one["steps"] * 5
    for phase in ("first", "reopen", "reopen_fresh"):  # also timed by the page itself, in the same load:
        # from the navigation's start to the first frame showing both, so never later than the harness's waits
        assert 0 < one["new"][f"{phase}_page"] <= one["new"][phase], (phase, one["new"])
    floor = one["floor"]  # the same stack's least page, opened the same way
    assert floor.get("first") and floor.get("reopen") and not {"first_error", "reopen_error"} & set(floor), floor
    assert floor.get("first_page") and floor.get("reopen_page"), floor
    tb = out["tb"]
    assert tb["scalars"] == one["values"] and math.isclose(tb["ratio_new"], tb["tb_s"] / one["new"]["first"])
    assert math.isclose(tb["ratio_new_page"], tb["tb_s"] / one["new"]["first_page"])
    big = out["10m"]["new"]
    assert "error" not in big, big
    assert big["zoom_points"] == big["zoom_steps"] == 1000  # the zoom drew every step of its range
    assert big["peak_rss"] > 0 and 0 < big["first_page"] <= big["first"]
    many = out["runs"]["new"]
    assert "error" not in many, many
    assert many["picker"] > 0 and many["runs_page"] > 0 and many["tick_ms"] >= 0 and many["idle_cpu_pct"] >= 0
    assert out["runs"]["inproc_n"] == out["runs"]["runs"]
    for figure in ("first open", "reopen after restart", "as the page shows", "to the harness's waits", "floor (a page of the same scripts", "by a fresh browser", "TensorBoard / Trainboard", "zoom to 1,000 steps",
                   "Runs page", "idle CPU"):
        assert figure in text
