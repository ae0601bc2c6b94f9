"""Costs of the experiments library and the Runs page readers, measured side by side in one run.

Prints: CheckpointManager.save_checkpoint vs a plain torch.save of the same state (the price of the
temp file, CRC, fsync, manifest and symlink), verified load vs plain torch.load, and a run source's
refresh when nothing changed vs a first read of a large metrics log.

Run: python bench/bench_experiments.py [--mb 40] [--records 100000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=40, help="checkpoint size in MB (default %(default)s)")
    p.add_argument("--records", type=int, default=100_000, help="metrics records in the big run (default %(default)s)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import torch

    from collectors import CheckpointManager, MetricsLogger
    from services.readers import open_run

    torch.set_num_threads(1)
    n = int(args.mb * 1024 * 1024 / 4 / 2) // 1024
    model = torch.nn.Sequential(torch.nn.Linear(1024, n, bias=False), torch.nn.Linear(n, 1024, bias=False))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        mgr = CheckpointManager(d / "exp", keep_last_n=2)
        step = iter(range(1, 10**9))
        plain = timed(lambda: torch.save({"step": 1, "model_state_dict": model.state_dict()}, d / "plain.pt"), args.repeat)
        def save_fsync() -> None:
            with open(d / "plain_fsync.pt", "wb") as fh:
                torch.save({"step": 1, "model_state_dict": model.state_dict()}, fh)
                fh.flush()
                import os
                os.fsync(fh.fileno())

        plain_fsync = timed(save_fsync, args.repeat)
        managed = timed(lambda: mgr.save_checkpoint(next(step), model), args.repeat)
        size = (d / "plain.pt").stat().st_size / 2**20
        print(f"checkpoint {size:.1f} MB: torch.save {plain * 1000:.0f} ms, torch.save+fsync {plain_fsync * 1000:.0f} ms, "
              f"save_checkpoint {managed * 1000:.0f} ms (ratio {managed / plain:.2f} vs plain, "
              f"{managed / plain_fsync:.2f} vs fsynced; atomic + CRC-32 + fsync + manifest + symlink)")
        load_plain = timed(lambda: torch.load(d / "plain.pt", weights_only=True), args.repeat)
        load_ver = timed(lambda: mgr.load_latest_checkpoint(), args.repeat)
        print(f"load: torch.load {load_plain * 1000:.0f} ms, load_latest_checkpoint {load_ver * 1000:.0f} ms "
              f"(ratio {load_ver / load_plain:.2f}; size + CRC-32 verified)")

        ml = MetricsLogger(d / "big", log_interval=1)
        t = time.perf_counter()
        for i in range(args.records):
            ml.log_metrics(i, {"loss": 1.0 / (i + 1), "learning_rate": 1e-3}, flush=False)
        ml.close()
        log_us = (time.perf_counter() - t) / args.records * 1e6
        print(f"MetricsLogger.log_metrics: {log_us:.1f} µs per record (flush=False), {args.records} records")
        src = open_run(d / "big")
        t = time.perf_counter()
        src.refresh()
        first = time.perf_counter() - t
        idle = timed(src.refresh, 200)
        ml = MetricsLogger(d / "big", log_interval=1)
        ml.log_metrics(args.records, {"loss": 0.5})
        t = time.perf_counter()
        src.refresh()
        one_more = time.perf_counter() - t
        print(f"run source: refresh after one new record {one_more * 1000:.0f} ms (tail + series rebuild)")
        print(f"run source, {args.records} records: first read {first * 1000:.0f} ms, refresh when unchanged "
              f"{idle * 1e6:.0f} µs (ratio {first / idle:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
