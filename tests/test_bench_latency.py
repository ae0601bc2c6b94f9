"""bench/bench_latency.py in its quick mode: real collector, real server, real browser; the harness
measures every append until the loss card shows it and prints its percentiles (no timing asserted)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_latency_quick_prints_the_append_to_card_percentiles() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_latency.py"), "--quick"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = re.findall(r"sample +\d+: +(\d+) ms", proc.stdout)
    assert len(samples) == 5 and all(int(s) > 0 for s in samples), proc.stdout
    m = re.search(r"append -> loss card: p50 ([\d.]+) s, p95 ([\d.]+) s, max ([\d.]+) s over 5 samples "
                  r"\(goal p95 <= 1.0 s\)", proc.stdout)
    assert m and float(m.group(1)) <= float(m.group(3)), proc.stdout


def test_bench_latency_refuses_too_few_samples() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_latency.py"), "--samples", "1"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "--samples must be at least 2" in proc.stderr and "Traceback" not in proc.stderr
