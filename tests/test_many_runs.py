"""2,000 runs in one base dir: listed without inotify overflow, and polled when watching runs out.

Real directories, the real inotify watcher (one instance, non-recursive watches) and the real catalog. The
watch limit is lowered through the watcher's own ``max_watches`` (``TRAINBOARD_MAX_WATCHES``), not the
system's; a lost-events overflow is fed to the real watcher as the kernel's IN_Q_OVERFLOW event.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from bench.bench_scale import write_many_runs
from collectors import runformat as rf
from services.catalog import RunCatalog, discover
from services.watch import EVENT_HEADER, IN_Q_OVERFLOW, DirWatcher

N_RUNS = 2000
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("many")
    write_many_runs(base, N_RUNS)
    return base


def append_step(base: Path, run_id: str, step: int) -> None:
    with open(rf.RunPaths(base / run_id).metrics, "ab") as fh:
        fh.write(rf.dumps(rf.make_record("train", step=step, time=time.time(), loss=0.1)) + b"\n")


def wait_for(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_2000_runs_are_listed_and_watched_without_overflow(many: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trainboard.watch")
    cat = RunCatalog(many)
    try:
        ids = cat.run_ids()
        assert len(ids) == N_RUNS and ids[0] == "run-00000" and ids[-1] == f"run-{N_RUNS - 1:05d}"
        rows = [r.summary() for r in cat.runs()]
        assert len(rows) == N_RUNS and all(r.last_step == 5 and r.state == "finished" for r in rows)
        assert cat.watching and cat.watch_problem is None
        watched = cat.watched_dirs()
        # the base dir, each run's root and its status/logs/control/snapshots dirs: never inside them
        assert len(watched) == 1 + 5 * N_RUNS
        assert not any(p.count("/snapshots/") for p in watched)
        # a change in one run arrives as an event for that run alone
        run = cat.get("run-01234")
        before = run.version
        append_step(many, "run-01234", 6)
        assert wait_for(lambda: cat.get("run-01234").version > before)
        assert cat.get("run-01234").series["train/loss"].steps[-1] == 6
        assert not [r for r in caplog.records if "overflow" in r.getMessage()]
    finally:
        cat.stop()


def test_watch_limit_reached_falls_back_to_polling_and_says_so_once(many: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trainboard.watch")
    cat = RunCatalog(many, max_watches=300)
    try:
        ids = cat.run_ids()
        assert len(ids) == N_RUNS
        assert not cat.watching and cat.watched_dirs() == []
        assert "watch limit" in (cat.watch_problem or "") and "polling" in cat.watch_problem
        warnings = [r for r in caplog.records if "watch limit" in r.getMessage()]
        assert len(warnings) == 1
        # polling: a run that never got a watch still shows what is appended to it
        rid = ids[-1]
        cat.get(rid)
        append_step(many, rid, 7)
        assert cat.get(rid).series["train/loss"].steps[-1] == 7
        assert len(cat.runs()) == N_RUNS
        cat.rescan(force=True)
        assert len([r for r in caplog.records if "watch limit" in r.getMessage()]) == 1  # once
    finally:
        cat.stop()


def test_max_watches_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINBOARD_MAX_WATCHES", "3")
    w = DirWatcher(lambda _p: None)
    try:
        assert w.max_watches == 3
    finally:
        w.stop()


def test_event_queue_overflow_falls_back_to_polling(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trainboard.watch")
    write_many_runs(tmp_path, 3)
    cat = RunCatalog(tmp_path)
    try:
        cat.run_ids()
        assert cat.watching
        watcher = cat._watcher
        assert watcher is not None
        overflow = EVENT_HEADER.pack(-1, IN_Q_OVERFLOW, 0, 0)
        watcher._dispatch(overflow)  # what the kernel queues when events were dropped
        watcher._dispatch(overflow)
        assert not cat.watching and "overflowed" in (cat.watch_problem or "")
        assert len([r for r in caplog.records if "overflowed" in r.getMessage()]) == 1
        assert wait_for(lambda: watcher._fd == -1, 10)  # the watcher thread closed inotify: watches freed
        append_step(tmp_path, "run-00001", 9)
        assert cat.get("run-00001").series["train/loss"].steps[-1] == 9
    finally:
        cat.stop()


def test_discovery_does_not_reread_unchanged_directories(many: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.catalog as catalog

    memo: dict = {}
    found, _, _ = discover(many, memo=memo)
    assert len(found) == N_RUNS
    calls: list[Path] = []
    real = catalog.detect_kind
    monkeypatch.setattr(catalog, "detect_kind", lambda p: calls.append(Path(p)) or real(p))
    again, _, _ = discover(many, memo=memo)
    assert again == found and calls == []  # nothing changed: no directory detected or listed again
    (many / "run-00007" / rf.CHECKPOINTS_DIR).mkdir()  # one run changed: only it is looked at again
    (many / "new-run" / rf.LOGS_DIR).mkdir(parents=True)
    append_step(many, "new-run", 1)
    third, _, _ = discover(many, memo=memo)
    assert sorted(set(calls)) == [many, many / "new-run", many / "run-00007"]
    assert len(third) == N_RUNS + 1
