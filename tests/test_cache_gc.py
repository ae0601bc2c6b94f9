"""Series-cache files of deleted, replaced or truncated runs are removed (issue 12), off the request path.

Real run directories, the real reader writing the real cache (its size floor lowered so small logs are
cached), then runs deleted, truncated and replaced on disk; :func:`services.cachegc.collect` must remove
exactly the entries that can never be used again and keep the others usable.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from services import cachegc
from services.readers import TrainboardRun
from services.seriescache import SeriesCache


def write_run(run: Path, steps: int = 200) -> Path:
    p = rf.RunPaths(run)
    p.logs_dir.mkdir(parents=True, exist_ok=True)
    p.metrics.write_bytes(b"".join(rf.dumps(rf.make_record("train", step=i, time=float(i), loss=1.0 / i)) + b"\n"
                                   for i in range(1, steps + 1)))
    return p.metrics


def cached(run: Path, cache: SeriesCache) -> TrainboardRun:
    reader = TrainboardRun(run.name, run, cache=cache)
    reader.refresh()
    assert cache.wait_idle(60)
    return reader


@pytest.fixture
def cache(tmp_path: Path) -> SeriesCache:
    return SeriesCache(tmp_path / "cache", min_bytes=1, fsync=False)


def test_entries_of_gone_replaced_and_truncated_runs_are_removed(tmp_path: Path, cache: SeriesCache) -> None:
    runs = {name: tmp_path / "runs" / name for name in ("gone", "truncated", "replaced", "kept")}
    for run in runs.values():
        write_run(run)
        cached(run, cache)
    assert len(list(cache.directory.glob("*.tbc"))) == 4
    shutil.rmtree(runs["gone"])
    log = rf.RunPaths(runs["truncated"]).metrics
    with open(log, "r+b") as fh:
        fh.truncate(100)
    fresh = write_run(tmp_path / "other")
    os.replace(fresh, rf.RunPaths(runs["replaced"]).metrics)  # another file (inode) under the same path
    old_junk = cache.directory / ("0" * 32 + ".tbc")
    old_junk.write_bytes(b"not a cache")
    os.utime(old_junk, (time.time() - 30 * 86400,) * 2)
    new_junk = cache.directory / ("1" * 32 + ".tbc")
    new_junk.write_bytes(b"another version's file, written just now")
    result = cachegc.collect(cache.directory)
    assert result.examined == 6 and result.removed == 4 and result.kept == 2
    assert result.reasons == {"its run is gone": 1, "its log was truncated": 1, "its log was replaced": 1,
                              "unreadable or another format": 1}
    left = sorted(p.name for p in cache.directory.glob("*.tbc"))
    assert left == sorted([cache.path_for(rf.RunPaths(runs["kept"]).metrics).name, new_junk.name])
    again = TrainboardRun("kept", runs["kept"], cache=cache)
    again.refresh()
    assert again.cache_info["loaded"] and len(again.series["train/loss"]) == 200


def test_a_pass_is_bounded(tmp_path: Path, cache: SeriesCache) -> None:
    for k in range(5):
        run = tmp_path / "runs" / f"r{k}"
        write_run(run, 20)
        cached(run, cache)
    shutil.rmtree(tmp_path / "runs")
    first = cachegc.collect(cache.directory, max_files=2)
    assert first.examined == 2 and first.removed == 2
    rest = cachegc.collect(cache.directory)
    assert rest.removed == 3 and not list(cache.directory.glob("*.tbc"))


def test_the_collector_thread_removes_entries_off_the_request_path(tmp_path: Path, cache: SeriesCache) -> None:
    run = tmp_path / "runs" / "r"
    write_run(run)
    cached(run, cache)
    shutil.rmtree(run)
    thread = cachegc.start_collector(cache, delay_s=0.0, interval_s=3600.0)
    assert thread is not None and thread.daemon
    deadline = time.monotonic() + 30
    while list(cache.directory.glob("*.tbc")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(cache.directory.glob("*.tbc"))
    assert cachegc.start_collector(None) is None


@pytest.mark.parametrize("header, age, why", [
    pytest.param(None, 10.0, None, id="unreadable-recent-kept"),
    pytest.param(None, cachegc.FOREIGN_AGE_S + 1, "unreadable or another format", id="unreadable-old"),
    pytest.param({"format": -1}, 10.0, None, id="other-version-recent-kept"),
    pytest.param({"format": cachegc.FORMAT_VERSION}, 10.0, "no source in the header", id="no-source"),
    pytest.param({"format": cachegc.FORMAT_VERSION, "source": "/nonexistent/trainboard/x.jsonl"}, 10.0,
                 "its run is gone", id="gone"),
])
def test_stale_reason(header, age, why) -> None:
    assert cachegc.stale_reason(header, age) == why
