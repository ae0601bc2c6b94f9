"""Forks writers that save checkpoints in a tight loop and kills each with SIGKILL mid-save.

Used by tests/test_experiments_proof.py. torch is imported once here and each writer is a fork, so
20+ real kill -9 cycles cost seconds, not minutes of interpreter start-up. Protocol on stdout/stdin:

    READY                      after the first (unkilled) checkpoint exists
    KILLED <i> <delay_ms>      after writer i was killed and reaped; then waits for a line on stdin
    DONE                       after the last cycle

Every checkpoint of step S holds weights filled with S, so the test can check what it loads.
Usage: python experiments_kill_saver.py --exp DIR --cycles 25
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from collectors import CheckpointManager  # noqa: E402

WIDTH = 512  # two 512x512 float32 matrices: a 2 MB checkpoint, so a save takes long enough to be hit


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH, bias=False), torch.nn.Linear(WIDTH, WIDTH, bias=False))


def writer(exp: str, first_step: int) -> None:
    """Child process: save checkpoints first_step, first_step+1, ... until killed."""
    model = make_model()
    mgr = CheckpointManager(exp, keep_last_n=2)
    step = first_step
    while True:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        mgr.save_checkpoint(step, model, None, [float(step)], {"step": step})
        step += 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--exp", required=True)
    p.add_argument("--cycles", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    model = make_model()
    with torch.no_grad():
        for prm in model.parameters():
            prm.fill_(0.0)
    CheckpointManager(args.exp, keep_last_n=2).save_checkpoint(0, model, None, [0.0], {"step": 0})
    print("READY", flush=True)
    next_step = 1
    for i in range(args.cycles):
        pid = os.fork()
        if pid == 0:
            try:
                writer(args.exp, next_step)
            finally:
                os._exit(1)
        delay = rng.uniform(0.05, 0.6)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(f"KILLED {i} {int(delay * 1000)}", flush=True)
        line = sys.stdin.readline().strip()  # the test loads the latest checkpoint now and answers its step
        if not line:
            return 2
        next_step = int(line) + 1
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
