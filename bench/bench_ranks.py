"""Per-rank health (issue 13): its cost on the training thread, and how fast a stall and a straggler show.

1. **Cost**, 2 processes (``torchrun --nproc_per_node 2``, gloo, CPU, tiny GPT-2, the real Trainer) with
   the default settings: every hook the per-rank health runs on the training thread (step begin/end, the
   forward hook, the record appended at each log step) is timed inside the real plugin and divided by the
   training's time. Reported at ``logging_steps=1`` (the worst case: a record every step) and printed
   against the goal of 1%. The watchdog thread's reading of the rank files happens off the training
   thread (once a second).
2. **Straggler onset -> alert**: in the same run rank 1 starts sleeping 0.3 s per step at step 10; the
   time from its first sleep to the ``straggler`` line in ``logs/alerts.jsonl`` (the rule needs 3
   consecutive slow log steps, then the watchdog's next 1 s poll).
3. **Stall -> shown**: a single-process training whose data loader blocks; the time from the block to
   the dashboard's run model (the one every page reads) saying ``stalled``, against the limit
   (``TRAINBOARD_STALL_MIN_S``: 60 s by default, 5 s in ``--quick``).

Run: ``python bench/bench_ranks.py [--quick]`` (quick: fewer steps, a 5 s stall limit; about 2 minutes here).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from collectors import runformat as rf  # noqa: E402

SCRIPT = REPO / "tests" / "scripts" / "ranks_train.py"
GOAL_FRACTION = 0.01
ONSET_STEP = 10


def _env(**extra: object) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cost_and_straggler(tmp: Path, steps: int) -> dict[str, float]:
    out = tmp / "ddp"
    marker = tmp / "straggler-began"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, env=_env(TB_MAX_STEPS=steps, TB_LOG_STEPS=1, TB_TIMING=tmp / "timing",
                                        TB_STRAGGLER_RANK=1, TB_STRAGGLER_S=0.3, TB_STRAGGLER_FROM=ONSET_STEP,
                                        TB_STRAGGLER_MARKER=marker),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"the 2-process training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    res: dict[str, float] = {}
    for r in (0, 1):
        t = json.loads((tmp / "timing" / f"rank-{r}.json").read_text())
        # step time before the straggler starts (after it, every rank waits 0.3 s in the all-reduce, which
        # would make the cost look smaller than it is); the hooks' own time does not depend on the sleep
        clean = [rec["step_time_s"] for rec in rf.iter_records(rf.RunPaths.of(out / "run").rank_file(r))
                 if not rec.get("final") and 2 <= rec["step"] < ONSET_STEP and rec.get("step_time_s")]
        step_s = statistics.median(clean)
        per_step = t["hook_s"] / max(t["steps"], 1)
        res[f"rank{r}_fraction"] = per_step / step_s
        res[f"rank{r}_us_per_step"] = per_step * 1e6
        res[f"rank{r}_step_ms"] = step_s * 1e3
    alerts = [a for a in rf.iter_records(rf.RunPaths.of(out / "run").alerts) if a.get("rule") == "straggler"] \
        if rf.RunPaths.of(out / "run").alerts.exists() else []
    began = float(marker.read_text())
    res["straggler_alert_s"] = (alerts[0]["time"] - began) if alerts else float("nan")
    return res


def stall_to_shown(tmp: Path, stall_min: float, stall_s: float) -> dict[str, float]:
    from services.catalog import RunCatalog

    os.environ["TRAINBOARD_STALL_MIN_S"] = str(stall_min)
    out = tmp / "stall"
    marker = tmp / "stall-began"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_env(TB_MAX_STEPS=14, TB_LOG_STEPS=1, TB_STALL_STEP=8, TB_STALL_S=stall_s,
                                     TB_STALL_MIN_S=stall_min, TB_STALL_MARKER=marker, TRAINBOARD_STALL_MIN_S=stall_min))
    shown = None
    catalog = None
    while proc.poll() is None:
        if catalog is None and rf.RunPaths.of(out / "run").status.exists():
            catalog = RunCatalog(out / "run", poll=True)
        run = catalog.get(catalog.default_run()) if catalog is not None else None
        if run is not None and shown is None:
            run.refresh()
            if run.state() == "stalled":
                shown = time.time()
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"the stalling training failed:\n{proc.stderr.read().decode()[-3000:]}")
    began = float(marker.read_text())
    return {"stall_shown_s": (shown - began) if shown else float("nan"), "stall_limit_s": stall_min}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and a 5 s stall limit (harness check)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as d:
        tmp = Path(d)
        c = cost_and_straggler(tmp, 24 if args.quick else 120)
        s = stall_to_shown(tmp, 5.0 if args.quick else 60.0, 12.0 if args.quick else 75.0)
    for r in (0, 1):
        frac = c[f"rank{r}_fraction"]
        print(f"per-rank health cost, rank {r}: {c[f'rank{r}_us_per_step']:.0f} us per step of "
              f"{c[f'rank{r}_step_ms']:.1f} ms = {frac * 100:.3f}% of step time "
              f"(goal <= {GOAL_FRACTION * 100:.0f}%: {'met' if frac <= GOAL_FRACTION else 'MISSED'})")
    print(f"straggler onset -> straggler alert: {c['straggler_alert_s']:.1f} s")
    print(f"stall -> shown stalled: {s['stall_shown_s']:.1f} s (limit {s['stall_limit_s']:.0f} s)")


if __name__ == "__main__":
    main()
