"""kill -9 in the middle of a last-good rolling copy or checkpoint link never lists a partial snapshot.

Real processes (forked from a worker that imported torch once), killed at random moments 12 times per
mode; after each kill every listed snapshot is checked whole, down to each file of ``last_good/``. A
restarted monitor cleans the temporary directories the killed ones left (``clean_stale_temps``).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import snapshots as S

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "helpers" / "last_good_kill_worker.py"
KILLS = 12
pytestmark = pytest.mark.integration


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _check_complete(run: Path, mode: str) -> int:
    """Every listed snapshot is whole; returns how many anomaly snapshots hold a last good state."""
    from safetensors.torch import load_file

    with_last_good = 0
    for info in S.list_snapshots(run):
        assert info.problem is None, (info.name, info.problem)
        meta = info.metadata
        assert list(meta)[: len(S.METADATA_FIELDS)] == list(S.METADATA_FIELDS)
        assert set(S.RECOVERY_FIELDS) <= set(meta)
        weights = load_file(info.path / "model" / "model.safetensors")
        assert weights["0.weight"].shape == (2048, 1024)
        good = meta["last_good"]
        if good is None:
            assert meta["last_good_missing"], info.name
            continue
        with_last_good += 1
        lg_dir = info.path / good["path"]
        if mode == "rolling":
            assert good["source"] == "rolling"
            w = load_file(lg_dir / "model.safetensors")
            assert w["0.weight"].shape == (2048, 1024) and w["1.weight"].shape == (1024, 2048)
            assert (info.path / meta["rng_state"]).is_file()
        else:
            assert good == {"step": 0, "source": "checkpoint", "path": "last_good", "checkpoint": "checkpoint-0"}
            src = run / "checkpoint-0"
            names = sorted(p.name for p in src.iterdir())
            assert sorted(p.name for p in lg_dir.iterdir()) == names
            for n in names:
                assert (lg_dir / n).stat().st_size == (src / n).stat().st_size
    return with_last_good


@pytest.mark.parametrize("mode", ["rolling", "link"])
def test_kill_9_during_last_good_never_lists_a_partial_snapshot(tmp_path: Path, mode: str) -> None:
    pytest.importorskip("torch")
    run = tmp_path / "run"
    run.mkdir()
    worker = subprocess.Popen([sys.executable, str(WORKER), str(run), mode], cwd=ROOT, env=_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rng = random.Random(11 if mode == "rolling" else 12)
    mid = 0

    def ask(cmd: str) -> str:
        worker.stdin.write(cmd + "\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    try:
        assert worker.stdout.readline().strip() == "ready"
        for _ in range(KILLS):
            pid = int(ask("fork"))
            time.sleep(rng.uniform(0.1, 0.8))
            os.kill(pid, signal.SIGKILL)
            assert ask(f"reap {pid}").startswith("reaped")
            snaps = run / "snapshots"
            temps = [p.name for p in snaps.glob(".tmp-snap-*")] if snaps.exists() else []
            mid += any(t.startswith(f".tmp-snap-{pid}-") for t in temps)
            _check_complete(run, mode)  # never a partial one, whatever the moment of the kill
        pid = int(ask("finite 30"))
        assert ask(f"reap {pid}") == "reaped 0"
        assert _check_complete(run, mode) >= 1, "the restarted monitor saved snapshots with a last good state"
        assert not list((run / "snapshots").glob(".tmp-*")), "stale temporary directories were cleaned"
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    assert mid >= 1, "no kill landed during a snapshot: the test did not test anything"
    print(f"{mode}: {mid}/{KILLS} kills landed while a snapshot was being written")
