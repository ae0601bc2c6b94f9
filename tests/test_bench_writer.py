"""The issue-12 collector benchmarks run in their quick mode: what they report is complete and consistent
(every row, numbers where numbers belong, ratios that follow from the figures printed). Their speed is
not checked here: the figures of a quick run on a shared machine mean nothing."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 900
NUM = r"([0-9]+(?:\.[0-9]+)?)"


def run_bench(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_log_cost_bench_quick_reports_every_row_and_its_ratio() -> None:
    pytest.importorskip("torch.utils.tensorboard")
    out = run_bench("bench/bench_anomaly.py", "--quick")
    rows = {}
    for label in ("Monitor.log, defaults (rules on)", "Monitor.log, anomaly rules off", "TensorBoard add_scalar x 3"):
        m = re.search(re.escape(label) + r"\s+" + NUM + r"\s+" + NUM, out)
        assert m, f"no figures for {label!r} in:\n{out}"
        median, p99 = float(m.group(1)), float(m.group(2))
        assert 0 < median <= p99
        rows[label] = median
    m = re.search(r"ratio Monitor.log defaults / TensorBoard x3: median " + NUM, out)
    assert m, out
    expected = rows["Monitor.log, defaults (rules on)"] / rows["TensorBoard add_scalar x 3"]
    assert float(m.group(1)) == pytest.approx(expected, abs=0.006)
    assert re.search(r"goal <= 20 µs median / <= 200 µs p99 at defaults: (met|NOT met)", out)


def test_plain_loop_bench_quick_reports_rounds_and_ratios() -> None:
    pytest.importorskip("torch.utils.tensorboard")
    out = run_bench("bench/bench_overhead.py", "--plain", "--quick")
    rates = {k: float(v) for k, v in re.findall(r"round 0\s+(bare|trainboard|tensorboard)\s+" + NUM + " steps/s", out)}
    assert set(rates) == {"bare", "trainboard", "tensorboard"} and all(v > 0 for v in rates.values()), out
    for kind in ("trainboard", "tensorboard"):
        m = re.search(rf"ratio {kind}/bare\s+= " + NUM, out)
        assert m, out
        assert float(m.group(1)) == pytest.approx(rates[kind] / rates["bare"], abs=0.002)  # one round: its own ratio
    assert re.search(r"trainboard >= tensorboard in the same rounds: (yes|no); goal >= 0.99: (met|NOT met)", out)
    m = re.search(r"trainboard median (\d+) µs / p99 (\d+) µs; tensorboard add_scalar x3 median (\d+) µs / "
                  r"p99 (\d+) µs \(ratio " + NUM + r"\)", out)
    assert m, out
    tr_med, tr_p99, tb_med, tb_p99 = (int(m.group(i)) for i in range(1, 5))
    assert 0 < tr_med <= tr_p99 and 0 < tb_med <= tb_p99
    assert float(m.group(5)) == pytest.approx(tr_med / tb_med, rel=0.05, abs=0.02)
    m = re.search(r"background threads' CPU per step \(median of the blocks\): trainboard (\d+) µs, "
                  r"tensorboard (\d+) µs, bare (\d+) µs", out)
    assert m, out  # the CPU clocks of the threads beside the training (figures, not asserted: they move)
    bg_tr, bg_tb = int(m.group(1)), int(m.group(2))
    m = re.search(r"the monitor's time per step, training thread \(median\) \+ background threads' CPU: "
                  r"trainboard (\d+) µs, tensorboard (\d+) µs \(ratio " + NUM + r"\)", out)
    assert m, out  # the sum of the two lines above, per monitor (each rounded on its own: within 1 µs)
    assert abs(int(m.group(1)) - (tr_med + bg_tr)) <= 1 and abs(int(m.group(2)) - (tb_med + bg_tb)) <= 1
    assert float(m.group(3)) == pytest.approx(int(m.group(1)) / int(m.group(2)), rel=0.05, abs=0.02)
