"""Test helper: imports torch once, then forks training children on demand so a test can kill -9 them.

Protocol on stdin/stdout, one line each: ``fork`` starts a child that logs a spiky loss forever through
a real Monitor (so it snapshots its live weights every third step) and answers its pid; ``finite N``
starts one that logs N steps then exits; ``reap PID`` waits for that child and answers ``reaped``.
"""
from __future__ import annotations

import os
import sys

import torch

from collectors import Monitor

CONFIG = {"snapshots": {"min_steps_between_saves": 0, "keep_last": 3}, "noise": {"enabled": False}}
"""The noise gate off: this worker tests snapshots under kill -9, with a spike every third step."""


def build_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.Linear(2048, 1024))  # ~4M params, 16 MB


def train(run_dir: str, model: torch.nn.Module, steps: int | None) -> None:
    mon = Monitor(run_dir, anomaly=CONFIG)
    mon.watch(model=model)
    i = 0
    while steps is None or i < steps:
        i += 1
        mon.log(i, loss=2.0 if i % 3 == 0 and i > 5 else 1.0)
    mon.close()


def main() -> None:
    run_dir = sys.argv[1]
    torch.set_num_threads(1)
    model = build_model()
    import tempfile

    with tempfile.TemporaryDirectory() as warm:  # import everything once, so forked children start at once
        train(warm, model, 7)
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
                    train(run_dir, model, steps)
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
