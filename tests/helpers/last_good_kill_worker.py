"""Test helper: imports torch once, then forks children that write anomaly snapshots with a last good
state, so a test can kill -9 them in the middle of a rolling copy or a checkpoint link.

``python last_good_kill_worker.py RUN_DIR MODE`` with MODE ``rolling`` (a rolling copy every 2 steps,
each snapshot's ``last_good/`` written from it) or ``link`` (no rolling copy: ``last_good/`` hard-links
``RUN_DIR/checkpoint-0``, a checkpoint of many files). Protocol on stdin/stdout, one line each: ``fork``
starts a child that trains forever and answers its pid; ``finite N`` one that logs N steps then exits;
``reap PID`` waits for that child and answers ``reaped <status>``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from collectors import Monitor

LINK_FILES = 400
"""Files in the linked checkpoint: enough that a link of it takes a while."""


def config(mode: str) -> dict:
    return {"snapshots": {"min_steps_between_saves": 0, "keep_last": 3,
                          "rolling_copy_steps": 2 if mode == "rolling" else 0}, "noise": {"enabled": False}}


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.Linear(2048, 1024))  # ~4M params, 16 MB


def make_checkpoint(run_dir: Path) -> None:
    cp = run_dir / "checkpoint-0"
    if cp.exists():
        return
    tmp = run_dir / ".checkpoint-0.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(LINK_FILES):
        (tmp / f"shard-{i:04d}.bin").write_bytes(bytes([i % 256]) * (1000 + i))
    os.rename(tmp, cp)


def train(run_dir: str, model: torch.nn.Module, mode: str, steps: int | None) -> None:
    mon = Monitor(run_dir, anomaly=config(mode))
    mon.watch(model=model)
    i = 0
    while steps is None or i < steps:
        i += 1
        with torch.no_grad():
            model[0].weight.add_(1e-4)  # the weights change every step, as in a training
        mon.log(i, loss=2.0 if i % 3 == 0 and i > 5 else 1.0)
        mon.step_end(i)
    mon.close()


def main() -> None:
    run_dir, mode = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    model = build_model()
    if mode == "link":
        make_checkpoint(Path(run_dir))
    import tempfile

    with tempfile.TemporaryDirectory() as warm:  # import everything once, so forked children start at once
        if mode == "link":
            make_checkpoint(Path(warm))
        train(warm, model, mode, 8)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] in ("fork", "finite"):
            steps = int(cmd[1]) if cmd[0] == "finite" else None
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    train(run_dir, model, mode, steps)
                except BaseException:  # noqa: BLE001 - report and leave with a failure code
                    import traceback

                    traceback.print_exc()
                    code = 1
                os._exit(code)
            print(pid, flush=True)
        elif cmd[0] == "reap":
            _, status = os.waitpid(int(cmd[1]), 0)
            print(f"reaped {status}", flush=True)


if __name__ == "__main__":
    main()
