"""bench/bench_ranks.py in its quick mode: the harness runs end to end and prints its three figures.

No timing is asserted (the machine is shared); the figures are checked to be measured numbers.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_ranks_quick_prints_cost_straggler_and_stall_figures():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_ranks.py"), "--quick"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    print(out)  # the figures, for whoever runs this with -s
    costs = re.findall(r"per-rank health cost, rank (\d): (\d+) us per step of ([\d.]+) ms = ([\d.]+)% of step time", out)
    assert [c[0] for c in costs] == ["0", "1"], out
    assert all(float(c[2]) > 0 and float(c[3]) >= 0 for c in costs)
    straggler = re.search(r"straggler onset -> straggler alert: ([\d.]+) s", out)
    stall = re.search(r"stall -> shown stalled: ([\d.]+) s \(limit 5 s\)", out)
    assert straggler and stall, out  # "nan" (never alerted / never shown) does not match
