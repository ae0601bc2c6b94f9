"""Proof of the dashboard's series cache (services.seriescache with services.readers.TrainboardRun).

- the cached series are exactly those of a fresh parse (every float compared bit for bit, NaN included,
  and every counter), also when the log grew after the cache was written;
- a log that was truncated, replaced, or rewritten with other bytes of the same size is parsed again;
- a real dashboard-side process killed with SIGKILL while it writes the cache never leaves a cache that
  loads into a wrong series.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from services.cachedir import series_cache_dir
from services.readers import TrainboardRun
from services.seriescache import SeriesCache, read_entry, remove_dead_temp_files

REPO = Path(__file__).resolve().parent.parent


def record(step: float, **fields: object) -> bytes:
    return rf.dumps(rf.make_record("train", step=step, time=1000.0 + step, **fields))


def tricky_lines(start: int, n: int) -> list[bytes]:
    """Lines a real log holds: finite and non-finite values (quoted and bare tokens), a step logged twice,
    a step going back (a resumed run), malformed and unknown lines, blanks, eval records, a metric that is
    sometimes null, bools and strings among numbers, Trainer's stand-in loss."""
    out: list[bytes] = []
    for i in range(start, start + n):
        loss = math.nan if i % 37 == 0 else (math.inf if i % 41 == 0 else 2.0 + math.sin(i) * 0.1)
        out.append(record(i, loss=loss, learning_rate=1e-3 / (1 + i), grad_norm=None if i % 13 == 0 else 1.0 + i % 7))
        if i % 29 == 0:
            out.append(f'{{"v":1,"kind":"train","step":{i},"time":{i},"loss":NaN,"grad_norm":Infinity}}'.encode())
        if i % 31 == 0:
            out.append(b'{"v":1,"kind":"train","step":')  # malformed mid-file
        if i % 43 == 0:
            out.append(b"")
            out.append(rf.dumps({"v": 1, "kind": "from_the_future", "step": i}))
        if i % 47 == 0:
            out.append(record(i, loss=9.0, note="text", flag=True))  # duplicate step: the newest write wins
        if i % 53 == 0:
            out.append(record(max(i - 20, 0), loss=3.0))  # the step goes back: the tail is replaced
        if i % 59 == 0:
            out.append(rf.dumps(rf.make_record("eval", step=i, eval_loss=1.0 / i, time=2.0)))
        if i % 61 == 0:
            out.append(record(i, loss=1.5, loss_replaced=True, loss_nonfinite_step=i))
        if i % 67 == 0:
            out.append(record(i, loss=True, grad_norm="x"))
        if i % 71 == 0:
            out.append(record(True, loss=1.0))  # a bool step: not a step
    return out


def write_lines(path: Path, lines: list[bytes], mode: str = "wb") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        fh.write(b"\n".join(lines) + b"\n")


def fresh(root: Path) -> TrainboardRun:
    run = TrainboardRun(".", root, cache=None)
    run.refresh()
    return run


def opened(root: Path, cache: SeriesCache) -> TrainboardRun:
    run = TrainboardRun(".", root, cache=cache)
    run.refresh()
    assert cache.wait_idle(60)
    return run


def assert_same(a: TrainboardRun, b: TrainboardRun) -> None:
    """Every series equal bit for bit (bytes of the float64 columns: NaN == NaN, -0.0 != 0.0), and counters."""
    assert sorted(a.series) == sorted(b.series)
    for key in a.series:
        sa, sb = a.series[key], b.series[key]
        assert sa.steps.tobytes() == sb.steps.tobytes(), key
        assert sa.values.tobytes() == sb.values.tobytes(), key
        assert sa.times.tobytes() == sb.times.tobytes(), key
        assert sa.rewinds == sb.rewinds, key
    assert (a.bad_lines, a.unknown_lines, a.bad_steps, a.records_read) == \
        (b.bad_lines, b.unknown_lines, b.bad_steps, b.records_read)
    assert a.results() == b.results()


@pytest.fixture()
def cache(tmp_path: Path) -> SeriesCache:
    return SeriesCache(tmp_path / "cache", min_bytes=0)


@pytest.fixture()
def run_root(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    write_lines(rf.RunPaths(root).metrics, tricky_lines(1, 3000))
    return root


def test_the_log_holds_what_the_rules_are_about(run_root: Path) -> None:
    run = fresh(run_root)
    loss = run.series["train/loss"]
    assert run.bad_lines > 0 and run.unknown_lines > 0 and run.bad_steps > 0 and loss.rewinds > 0
    assert any(math.isnan(v) for v in loss.values) and any(math.isinf(v) for v in loss.values)
    assert list(loss.steps) == sorted(set(loss.steps))  # one value per step, ascending


def test_reopen_reads_the_cache_not_the_log(run_root: Path, cache: SeriesCache) -> None:
    first = opened(run_root, cache)
    assert not first.cache_info["loaded"] and cache.saves == 1
    again = opened(run_root, cache)
    assert again.cache_info["loaded"] and again.cache_info["parsed_bytes"] == 0
    assert again.cache_info["offset"] == rf.RunPaths(run_root).metrics.stat().st_size
    assert_same(again, fresh(run_root))


def test_a_grown_log_parses_only_the_new_bytes(run_root: Path, cache: SeriesCache) -> None:
    opened(run_root, cache)
    metrics = rf.RunPaths(run_root).metrics
    size = metrics.stat().st_size
    # new records that step back into the cached part, plus a half-written last line
    write_lines(metrics, tricky_lines(2950, 400) + [record(3400, loss=1.0)], mode="ab")
    with open(metrics, "ab") as fh:
        fh.write(b'{"v":1,"kind":"train","step":3401,"lo')
    again = opened(run_root, cache)
    assert again.cache_info["loaded"] and again.cache_info["offset"] == size
    grown = metrics.stat().st_size
    assert 0 < again.cache_info["parsed_bytes"] < grown - size + 1
    assert_same(again, fresh(run_root))
    # the partial line completes later: same as a fresh parse again
    with open(metrics, "ab") as fh:
        fh.write(b'ss":0.5}\n')
    again.refresh()
    assert_same(again, fresh(run_root))


def truncate(metrics: Path) -> None:
    data = metrics.read_bytes()
    with open(metrics, "r+b") as fh:
        fh.truncate(data.rfind(b"\n", 0, len(data) // 2) + 1)


def replace(metrics: Path) -> None:
    tmp = metrics.with_name("new.jsonl")
    write_lines(tmp, tricky_lines(5000, 3000))
    os.replace(tmp, metrics)


def rewrite_same_size(metrics: Path) -> None:
    """Other values, same length, same inode (the bytes of one digit changed in the middle and at the end)."""
    data = bytearray(metrics.read_bytes())
    for pos in (len(data) // 2, len(data) - 200):
        i = data.index(b'"loss":2.', pos)
        j = i + len(b'"loss":2.')
        data[j] = ord("7") if data[j] != ord("7") else ord("3")
    with open(metrics, "r+b") as fh:
        fh.write(bytes(data))
    assert metrics.stat().st_size == len(data)


def rewrite_end_only(metrics: Path) -> None:
    """Same size and inode; only a byte near the end differs (the tail digest must see it)."""
    data = bytearray(metrics.read_bytes())
    i = data.rindex(b'"loss":2.') + len(b'"loss":2.')
    data[i] = ord("7") if data[i] != ord("7") else ord("3")
    with open(metrics, "r+b") as fh:
        fh.write(bytes(data))


@pytest.mark.parametrize("change, why", [(truncate, "truncated"), (replace, "replaced"),
                                          (rewrite_same_size, "rewritten"), (rewrite_end_only, "rewritten")],
                         ids=["truncated", "replaced", "same-size-rewrite", "same-size-rewrite-at-the-end"])
def test_a_changed_log_is_parsed_again(run_root: Path, cache: SeriesCache, change, why: str) -> None:
    before = opened(run_root, cache)
    metrics = rf.RunPaths(run_root).metrics
    old_inode = metrics.stat().st_ino
    change(metrics)
    assert (metrics.stat().st_ino != old_inode) == (why == "replaced")
    after = opened(run_root, cache)
    assert not after.cache_info["loaded"] and why in after.cache_info["why"]
    assert after.cache_info["parsed_bytes"] == metrics.stat().st_size  # all of it, from byte 0
    assert_same(after, fresh(run_root))
    # the live reader that had the old file sees it too (no restart)
    before.refresh()
    assert_same(before, fresh(run_root))
    # and the cache written for the new content is what a third open uses
    third = opened(run_root, cache)
    assert third.cache_info["loaded"]
    assert_same(third, fresh(run_root))


def test_a_damaged_cache_file_is_ignored(run_root: Path, cache: SeriesCache) -> None:
    opened(run_root, cache)
    path = cache.path_for(rf.RunPaths(run_root).metrics)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 8])  # a write cut short (power loss without fsync)
    entry, why = read_entry(path)
    assert entry is None and "interrupted" in why
    again = opened(run_root, cache)
    assert not again.cache_info["loaded"]
    assert_same(again, fresh(run_root))


def test_small_runs_are_not_cached(tmp_path: Path, run_root: Path) -> None:
    cache = SeriesCache(tmp_path / "c2")  # default min_bytes: a 3,000-step log is below it
    opened(run_root, cache)
    assert cache.saves == 0 and list((tmp_path / "c2").iterdir()) == []


def test_the_cache_dir_is_per_user_never_the_run_dir(tmp_path: Path) -> None:
    assert series_cache_dir({"HOME": "/home/x"}) == Path("/home/x/.cache/trainboard/series")
    assert series_cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/trainboard/series")
    assert series_cache_dir({"TRAINBOARD_CACHE_DIR": str(tmp_path), "HOME": "/h"}) == tmp_path
    assert series_cache_dir({"TRAINBOARD_SERIES_CACHE": "off", "HOME": "/h"}) is None
    (tmp_path / "file").write_text("x")
    bad = SeriesCache(tmp_path / "file" / "sub")  # below a regular file: cannot be created
    assert not bad.enabled and "cannot use" in (bad.problem or "")


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from services.readers import TrainboardRun
    from services.seriescache import SeriesCache
    cache = SeriesCache(Path(sys.argv[2]), min_bytes=0, fsync=False)
    run = TrainboardRun(".", Path(sys.argv[1]), cache=cache)
    run.refresh()              # parses the log and queues the first save on the cache's writer thread
    cache.wait_idle()
    n = 0
    while True:                # then keeps rewriting it, as a growing run does, until killed
        run._cache_offset = 0
        print("writing", n, flush=True)
        cache.save_later(run._metrics_path, run._lock, run._cache_entry)
        cache.wait_idle()
        n += 1
""")


def test_kill_9_while_writing_never_gives_a_wrong_series(tmp_path: Path) -> None:
    root = tmp_path / "big"
    from bench.bench_scale import write_run

    write_run(root, 60_000)  # ~7 MB of cache: each write takes a while
    write_lines(rf.RunPaths(root).metrics, tricky_lines(60_001, 500), mode="ab")
    reference = fresh(root)
    cache_dir = tmp_path / "cache"
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    torn_seen = 0
    delays = (0.0, 0.003, 0.01, 0.02, 0.05, 0.0, 0.001, 0.03)
    for attempt in range(40):  # at least 8 kills; more until one has landed inside a write (timing varies)
        if attempt >= len(delays) and torn_seen:
            break
        delay = delays[attempt % len(delays)] + 0.0007 * (attempt // len(delays))
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(cache_dir)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("writing"), proc.stderr.read()
            if delay:
                time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        torn_seen += any(".tmp-" in n for n in os.listdir(cache_dir))
        reader = SeriesCache(cache_dir, min_bytes=0)  # a restarted dashboard: removes the dead temp files
        assert not any(".tmp-" in n for n in os.listdir(cache_dir))
        run = TrainboardRun(".", root, cache=reader)
        run.refresh()
        reader.wait_idle(60)
        assert run.cache_info["loaded"]  # the first (complete) save survived every kill
        assert_same(run, reference)
    assert torn_seen > 0, "no kill landed during a write: the test proved nothing"


def test_dead_temp_files_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    (d / "abc.tbc.tmp-999999999-1").write_bytes(b"x")
    (d / f"abc.tbc.tmp-{os.getpid()}-1").write_bytes(b"x")
    assert remove_dead_temp_files(d) == 1
    assert sorted(os.listdir(d)) == [f"abc.tbc.tmp-{os.getpid()}-1"]


def test_ingestion_does_not_depend_on_where_the_log_is_split(tmp_path: Path) -> None:
    """The cache splits a log at its offset, the tailer at its chunk size: any split gives the same series."""
    lines = tricky_lines(1, 160)
    records = rf.parse_lines(b"\n".join(lines) + b"\n").records
    whole = TrainboardRun(".", tmp_path, cache=None)
    whole.ingest(records)
    nulls = [k for k, r in enumerate(records) if r.get("grad_norm", 0) is None or r.get("loss") is True]
    assert nulls
    for k in sorted({*nulls, *range(0, len(records), 7)}):
        split = TrainboardRun(".", tmp_path, cache=None)
        split.ingest(records[:k])
        split.ingest(records[k:])
        for key in whole.series:
            assert split.series[key].values.tobytes() == whole.series[key].values.tobytes(), (k, key)
            assert split.series[key].steps.tobytes() == whole.series[key].steps.tobytes(), (k, key)
        assert sorted(split.series) == sorted(whole.series)
        assert split.bad_steps == whole.bad_steps
