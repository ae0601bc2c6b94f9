"""Benchmark: does the healthy demo stay quiet? The full-length demo training (``python app.py --demo``:
tiny GPT-2 on CPU, 3,000 steps, default settings: anomaly rules, spectral metrics, samples) run for three
seeds, each in its own process, and its ``logs/alerts.jsonl`` folded into incidents and events as the
Alerts page shows them.

Printed per seed and in total: incidents by severity (target: **0 high or critical**), informational
events (new best model, plateau, mode switches; target: at most :data:`MAX_EVENTS_PER_1000_STEPS` per
1,000 steps, documented in docs/anomaly.md), alert records written, and snapshots left on disk.

Run: ``python bench/bench_demo_alerts.py [--seeds 0 1 2] [--steps 3000] [--quick]`` (about 10-20 minutes
per seed on 2 cores; ``--quick``: one seed, 60 steps, for the test that checks what it reports).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors import runformat as rf  # noqa: E402
from collectors import snapshots as snap  # noqa: E402
from collectors.anomaly import incidents as inc  # noqa: E402

MAX_EVENTS_PER_1000_STEPS = 40
"""The documented ceiling for informational events on a healthy run (new best model dominates)."""
SEVERITIES = ("critical", "high", "medium", "low")


def run_demo(run_dir: Path, seed: int, steps: int, extra: Sequence[str] = ()) -> float:
    """One demo training in a subprocess; returns its wall time."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "collectors.demo", "--base-dir", str(run_dir), "--seed", str(seed),
                    "--max-steps", str(steps), *extra], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - t0


def score(run_dir: Path) -> dict[str, Any]:
    """What the Alerts page would show for a finished run: incidents by severity, events, records."""
    records = list(rf.iter_records(rf.RunPaths.of(run_dir).alerts, known_kinds=None))
    steps = [r["step"] for r in rf.iter_records(rf.RunPaths.of(run_dir).metrics) if r.get("kind") == "train"]
    folded = inc.fold(records, logged_steps=steps)
    by_sev = Counter(i.severity for i in folded.incidents)
    return {
        "incidents": {s: by_sev.get(s, 0) for s in SEVERITIES},
        "high_or_critical": by_sev.get("critical", 0) + by_sev.get("high", 0),
        "incident_rules": sorted({f"{i.rule}:{i.severity}" for i in folded.incidents}),
        "events": len(folded.events),
        "event_rules": dict(Counter(e.get("rule") for e in folded.events)),
        "alert_records": sum(r.get("kind") == "alert" for r in records),
        "snapshots": len(snap.list_snapshots(run_dir, with_size=False)),
        "last_step": max(steps) if steps else 0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--quick", action="store_true", help="one seed, 60 steps")
    p.add_argument("--keep", type=Path, default=None, help="write the runs here (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    seeds, steps = ([args.seeds[0]], 60) if args.quick else (args.seeds, args.steps)
    base = args.keep or Path(tempfile.mkdtemp(prefix="trainboard-demo-alerts-"))
    rows = []
    for seed in seeds:
        run_dir = base / f"demo-seed{seed}"
        wall = run_demo(run_dir, seed, steps)
        row = {"seed": seed, "steps": steps, "wall_s": round(wall, 1), **score(run_dir)}
        rows.append(row)
        print(f"seed {seed}: {steps} steps in {wall:.0f} s | incidents " +
              ", ".join(f"{s} {row['incidents'][s]}" for s in SEVERITIES) +
              f" | high/critical {row['high_or_critical']} | events {row['events']} {row['event_rules']} | "
              f"alert records {row['alert_records']} | snapshots {row['snapshots']} | {row['incident_rules']}",
              flush=True)
    total_hc = sum(r["high_or_critical"] for r in rows)
    events_per_k = max((r["events"] * 1000 / max(r["steps"], 1) for r in rows), default=0.0)
    print(f"TOTAL {len(rows)} seed(s): high/critical incidents {total_hc} (target 0) | events per 1,000 steps "
          f"≤ {events_per_k:.1f} (ceiling {MAX_EVENTS_PER_1000_STEPS})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "high_or_critical": total_hc,
                                         "max_events_per_1000_steps": events_per_k}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
