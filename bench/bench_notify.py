"""Cost of ``Notifier.submit()`` on the calling (training) thread while the receiver hangs.

Starts a real HTTP receiver on 127.0.0.1 that holds every request open, points a Notifier at it with
apprise ``json://``, and times each submit on the calling thread: new incidents (each one queued for
sending, until the bounded queue is full and they are dropped), repeats of an open incident (de-duplicated)
and plain alerts of one group. Beside them, a no-op baseline: calling an empty function with the same
record. Prints median and p99 in microseconds. Goal (issue 10): sending costs the training thread nothing
measurable, i.e. a few microseconds, far below one training step.
Run: ``python bench/bench_notify.py [--n 2000]``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.notify import Notifier  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The receiver runs in its own process so its server threads do not compete with the caller for the GIL
# (in a real training the receiver is another machine); it prints its port, then holds every request.
RECEIVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.helpers.http_receiver import Receiver
with Receiver(hang_s=120.0) as rec:
    print(rec.port, flush=True)
    time.sleep(120)
"""


def time_calls(fn: Callable[[Any], Any], records: list[dict]) -> list[float]:
    """Per-call wall time in microseconds."""
    out: list[float] = []
    for rec in records:
        t0 = time.perf_counter_ns()
        fn(rec)
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def summary(name: str, us: list[float]) -> str:
    us = sorted(us)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return f"{name:<42} median {statistics.median(us):8.2f} us   p99 {p99:8.2f} us   max {us[-1]:9.1f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="calls per case (default 2000)")
    args = ap.parse_args()

    def incident(i: int) -> dict:
        return {"id": f"i{i}", "rule": "loss_spike", "severity": "high", "run": "bench", "first_step": i,
                "last_step": i, "count": 1, "worst_value": 4.2, "message": "spike", "state": "open"}

    def alert(i: int) -> dict:
        return {"rule": "gradient_explosion", "category": "gradient", "severity": "critical", "step": i,
                "value": 1e4, "threshold": 10.0, "message": "big", "metadata": {}, "reason": "g"}

    def noop(record: dict) -> None:
        return None

    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        n = Notifier(f"json://127.0.0.1:{port}/hang", rate_limit_per_min=0, send_timeout_s=30.0)
        n.submit(incident(-1))  # starts the sending thread; it is now stuck in the hung request
        time.sleep(2.0)  # let it connect and block in the read
        new = [incident(i) for i in range(args.n)]
        rows = [
            summary("no-op baseline (empty function)", time_calls(noop, new)),
            summary("submit: new incidents (queue, then drop)", time_calls(n.submit, new)),
            summary("submit: same open incident again", time_calls(n.submit, [incident(0)] * args.n)),
            summary("submit: plain alerts of one group", time_calls(n.submit, [alert(i % 40) for i in range(args.n)])),
        ]
        t0 = time.perf_counter()
        n.close(timeout=1.0)
        close_s = time.perf_counter() - t0
        stats = n.stats()
    finally:
        proc.kill()
        proc.wait()
    print(f"receiver (another process) holds every request open; {args.n} calls per case")
    for row in rows:
        print(row)
    print(f"close(timeout=1.0) returned in {close_s:.2f} s; stats {stats}")


if __name__ == "__main__":
    main()
