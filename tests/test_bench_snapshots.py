"""The snapshots bench runs in its quick mode and prints what it promises (issue 11)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_bench_snapshots_quick() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "bench/bench_snapshots.py", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    m = re.search(r"(\d+) copies in 60 steps", out)
    assert m and int(m.group(1)) >= 2, out  # the weights at the start and at step 50
    pct = float(re.search(r"= ([\d.]+) % of training time", out).group(1))
    assert 0.0 <= pct < 100.0
    assert re.search(r"hard-linked from a checkpoint of 65 MB\): median [\d.]+ ms", out), out
    assert re.search(r"written from the rolling copy\): median [\d.]+ ms", out), out
    print(out)
