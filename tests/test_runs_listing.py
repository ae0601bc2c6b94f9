"""The Runs list reads each run's status and the tail of its log, never its series (issue 12).

Pure units of :mod:`services.listing` on bytes, then real run directories read by the real catalog: a run
listed but never opened has no series in memory, its row matches the full read's row for every small run,
a large log's best eval loss is marked as a bound, and opening a run afterwards reads it fully. The picker's
tick sends options only when the run list changed.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from dash import no_update

from bench.bench_scale import write_many_runs
from callbacks.runs import table_rows
from callbacks.shell import picker_state, picker_update
from collectors import runformat as rf
from services import listing
from services.catalog import RunCatalog
from services.readers import TrainboardRun


def line(kind: str, **fields) -> bytes:
    return rf.dumps(rf.make_record(kind, **fields)) + b"\n"


def write_log(run: Path, lines: list[bytes], status: dict | None = None) -> None:
    p = rf.RunPaths(run)
    p.logs_dir.mkdir(parents=True, exist_ok=True)
    p.metrics.write_bytes(b"".join(lines))
    if status is not None:
        rf.write_json_atomic(p.status, status)


# --------------------------------------------------------------------------- pure units

@pytest.mark.parametrize("lines, last_step, best", [
    pytest.param([line("train", step=1, time=10.0, loss=3.0), line("eval", step=1, time=11.0, eval_loss=2.5),
                  line("train", step=2, time=12.0, loss=2.0), line("eval", step=2, time=13.0, eval_loss=2.1)],
                 2, 2.1, id="train-and-eval"),
    pytest.param([line("train", step=1, time=1.0, loss=1.0)], 1, None, id="no-eval"),
    pytest.param([line("eval", step=5, time=1.0, eval_loss=1.0), line("resume", step=3, time=2.0),
                  line("eval", step=4, time=3.0, eval_loss=1.5)], 4, 1.5, id="resume-supersedes-later-evals"),
    pytest.param([line("eval", step=1, time=1.0, eval_loss=float("nan")), line("eval", step=2, time=2.0, eval_loss=4.0)],
                 2, 4.0, id="nan-is-not-best"),
    pytest.param([b"{not json\n", line("train", step=7, time=1.0, loss=1.0)], 7, None, id="malformed-line-skipped"),
    pytest.param([line("eval", step=5, time=1.0, eval_loss=1.0), line("eval", step=5, time=2.0, eval_loss=2.0)],
                 5, 2.0, id="same-step-newest-write-wins"),
])
def test_tail_stats_of_whole_logs(lines: list[bytes], last_step: int, best: float | None) -> None:
    stats = listing.tail_stats(b"", b"".join(lines), True)
    assert stats.complete and stats.last_step == last_step and stats.best_eval_loss == best
    assert stats.bad_lines == sum(1 for ln in lines if ln.startswith(b"{not"))


def test_read_window_keeps_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    body = [line("train", step=i, time=100.0 + i, loss=1.0 / i) for i in range(1, 400)]
    log.write_bytes(b"".join(body) + b'{"v": 1, "kind": "train", "st')  # a line still being written
    head, tail, complete = listing.read_window(log, tail_bytes=2000)
    assert not complete and head == body[0]
    assert tail.endswith(b"\n") and b'"st' not in tail.rsplit(b"\n", 2)[-1]
    stats = listing.tail_stats(head, tail, complete)
    assert stats.first_time == 101.0 and stats.last_step == 399
    assert stats.bad_lines == 0  # the line cut by the window's start is dropped, not counted as malformed
    assert stats.train_times[-1] == 100.0 + 399 and len(stats.train_times) <= 21


def test_missing_log_gives_empty_stats(tmp_path: Path) -> None:
    stats = listing.read_tail_stats(tmp_path / "none.jsonl")
    assert stats.complete and stats.last_step is None and stats.best_eval_loss is None


# --------------------------------------------------------------------------- real runs, real catalog

def make_runs(base: Path) -> None:
    now = time.time()
    write_log(base / "a", [line("train", step=i, time=now - 100 + i, loss=3.0 - i / 10) for i in range(1, 11)]
              + [line("eval", step=10, time=now - 80, eval_loss=2.25)],
              {"v": 1, "state": "finished", "step": 10, "updated_at": now - 50, "started_at": now - 100})
    write_log(base / "b", [line("train", step=i, time=now - 30 + i, loss=1.0) for i in range(1, 4)]
              + [line("eval", step=2, time=now - 20, eval_loss=0.5), line("resume", step=1, time=now - 10),
                 line("eval", step=3, time=now - 5, eval_loss=0.75)])  # no status file
    write_log(base / "c", [line("train", step=1, time=now - 500, loss=1.0)],
              {"v": 1, "state": "training", "step": 1, "updated_at": now - 400})  # stale
    (rf.RunPaths(base / "a").snapshots_dir / "snap-1").mkdir(parents=True)
    rf.RunPaths(base / "a").alerts.write_bytes(line("alert", step=3, time=now, severity="high", message="x") * 2)


FIELDS = ("run_id", "kind", "name", "state", "last_step", "best_eval_loss", "duration_s", "alert_count",
          "snapshot_count", "checkpoint_count", "started_at", "updated_at", "problems")


def test_listing_reads_no_series_and_matches_the_full_read(tmp_path: Path) -> None:
    make_runs(tmp_path)
    cat = RunCatalog(tmp_path, watch=False)
    now = time.time()
    rows, _ = cat.listing(now)
    assert [r.run_id for r in rows] == ["a", "b", "c"]
    for rid in ("a", "b", "c"):
        run = cat._runs[rid]
        assert not run.opened and run.series == {}, f"{rid}: the listing read its series"
    full = [TrainboardRun(rid, tmp_path / rid, cache=False).summary(now) for rid in ("a", "b", "c")]
    for listed, read in zip(rows, full):
        for f in FIELDS:
            assert getattr(listed, f) == getattr(read, f), f"{listed.run_id}.{f}"
        assert not listed.best_eval_partial
    assert [r.state for r in rows] == ["finished", "training", "stale"]  # b: no status, files just written
    assert rows[1].best_eval_loss == 0.75  # the eval before the resume was rolled back


def test_opening_a_listed_run_reads_it_fully(tmp_path: Path) -> None:
    make_runs(tmp_path)
    cat = RunCatalog(tmp_path, watch=False)
    cat.listing()
    run = cat.get("a")
    assert run is not None and run.opened and run.version > 0 and len(run.series["train/loss"]) == 10
    rows, _ = cat.listing()
    assert rows[0].last_step == 10 and rows[0].best_eval_loss == 2.25


def test_large_log_not_opened_shows_its_best_eval_loss_as_a_bound(tmp_path: Path) -> None:
    n = 3000  # well past TAIL_BYTES: the best eval (step 1) lies outside the tail
    lines = [line("eval", step=1, time=1.0, eval_loss=0.1)]
    lines += [line("train", step=i, time=float(i), loss=2.0, grad_norm=1.0, learning_rate=1e-3) for i in range(2, n)]
    lines += [line("eval", step=n, time=float(n), eval_loss=0.9)]
    write_log(tmp_path / "big", lines, {"v": 1, "state": "finished", "step": n, "updated_at": float(n)})
    assert (tmp_path / "big" / "logs" / "metrics.jsonl").stat().st_size > 2 * listing.TAIL_BYTES
    cat = RunCatalog(tmp_path, watch=False)
    rows, _ = cat.listing()
    assert rows[0].last_step == n and rows[0].best_eval_loss == 0.9 and rows[0].best_eval_partial
    assert rows[0].duration_s == n - 1.0  # started at the first line's time: the head is read too
    assert table_rows(rows, time.time())[0]["best_eval_loss"] == "≤ 0.9"
    cat.get("big")  # opened: the row comes from the whole log, exact
    rows, _ = cat.listing()
    assert rows[0].best_eval_loss == 0.1 and not rows[0].best_eval_partial


def test_listing_fingerprint_follows_changes(tmp_path: Path) -> None:
    make_runs(tmp_path)
    cat = RunCatalog(tmp_path, watch=False)
    now = time.time()  # one clock for both: a 10 s bucket crossed between them rebuilds the rows ("ago")
    rows1, fp1 = cat.listing(now)
    rows2, fp2 = cat.listing(now)
    assert fp1 == fp2 and rows2 is rows1  # unchanged: the rows built before are returned
    with open(rf.RunPaths(tmp_path / "b").metrics, "ab") as fh:
        fh.write(line("train", step=9, time=time.time(), loss=0.5))
    rows3, fp3 = cat.listing()
    assert fp3 != fp1 and rows3[1].last_step == 9


def count_list_refreshes(cat: RunCatalog) -> dict[str, int]:
    """Wrap every listed run's ``list_refresh`` to count its calls; returns the counter ``{"n": calls}``."""
    reads = {"n": 0}
    for run in cat._runs.values():
        inner = run.list_refresh

        def counted(inner=inner) -> bool:
            reads["n"] += 1
            return inner()
        run.list_refresh = counted  # type: ignore[method-assign]
    return reads


def test_concurrent_listings_read_each_run_once(tmp_path: Path) -> None:
    write_many_runs(tmp_path, 60)
    cat = RunCatalog(tmp_path, watch=False)
    cat.rescan()
    reads = count_list_refreshes(cat)
    results: list[tuple] = []
    threads = [threading.Thread(target=lambda: results.append(cat.listing(1000.0))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4 and len({fp for _, fp in results}) == 1
    assert all(rows is results[0][0] for rows, _ in results)
    # each caller checks each run's files (polling), but only the first reads them: no change after it
    assert all(len(rows) == 60 and rows[0].last_step == 5 for rows, _ in results)
    assert reads["n"] == 4 * 60


def test_picker_tick_sends_options_only_when_the_run_list_changed(tmp_path: Path) -> None:
    write_many_runs(tmp_path, 3)
    cat = RunCatalog(tmp_path, watch=False, rescan_interval_s=0.0)
    options, value, hint, key = picker_state(cat)
    assert [o["value"] for o in options] == ["run-00000", "run-00001", "run-00002"] and hint == "3 runs"
    assert picker_update(cat, value, key, hint) == (no_update, no_update, no_update, no_update)
    write_many_runs(tmp_path / "more", 1)
    new_options, new_value, new_hint, new_key = picker_update(cat, value, key, hint)
    assert new_key != key and new_hint == "4 runs" and new_value is no_update
    assert "more/run-00000" in [o["value"] for o in new_options]
    assert picker_update(cat, value, new_key, new_hint) == (no_update, no_update, no_update, no_update)


def test_picker_hint_counts_thousands_readably() -> None:
    from callbacks.shell import run_hint

    assert run_hint(2000) == "2,000 runs" and math.isfinite(len(run_hint(10**6)))


def test_watched_listing_reads_nothing_while_idle_and_follows_events(tmp_path: Path) -> None:
    write_many_runs(tmp_path, 50)
    cat = RunCatalog(tmp_path)
    try:
        assert cat.watching
        now = time.time()  # one clock for both: a slow first listing may cross a 10 s bucket ("ago")
        rows, fp = cat.listing(now)
        reads = count_list_refreshes(cat)
        again, fp2 = cat.listing(now)
        assert fp2 == fp and again is rows and reads["n"] == 0  # no event, nothing due: no run looked at
        with open(rf.RunPaths(tmp_path / "run-00017").metrics, "ab") as fh:
            fh.write(line("train", step=99, time=time.time(), loss=0.5))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows, fp3 = cat.listing()
            if rows[17].last_step == 99:
                break
            time.sleep(0.1)
        assert rows[17].last_step == 99 and fp3 != fp and not cat._runs["run-00017"].opened
    finally:
        cat.stop()


def test_picker_holds_a_window_of_runs_and_finds_any_by_typed_words() -> None:
    from callbacks.shell import PICKER_MAX_OPTIONS, matching_runs

    ids = [f"exp-{i:04d}" for i in range(2000)]
    label = lambda rid: rid.upper() + (" (tensorboard)" if rid.endswith("7") else "")  # noqa: E731
    assert matching_runs(ids, label, "", None) == ids[:PICKER_MAX_OPTIONS]
    assert matching_runs(ids, label, None, "exp-1999") == ids[:PICKER_MAX_OPTIONS] + ["exp-1999"]  # the chosen run
    assert matching_runs(ids, label, "exp-1999", None) == ["exp-1999"]  # any case, far down the list
    assert matching_runs(ids, label, "19 tensorBOARD", None) == [r for r in ids if "19" in r and r.endswith("7")]
    assert matching_runs(ids, label, "exp", None, limit=3) == ids[:3]
    assert matching_runs(ids, label, "nothing-like-it", "exp-0005") == ["exp-0005"]
    assert matching_runs(ids, label, "", "gone") == ids[:PICKER_MAX_OPTIONS]  # an unlisted choice is not added


def test_picker_options_follow_the_typed_text(tmp_path: Path) -> None:
    from callbacks.shell import PICKER_MAX_OPTIONS

    write_many_runs(tmp_path, PICKER_MAX_OPTIONS + 20)
    cat = RunCatalog(tmp_path, watch=False, rescan_interval_s=0.0)
    options, value, hint, key = picker_state(cat)
    assert len(options) <= PICKER_MAX_OPTIONS + 1 and value in [o["value"] for o in options]
    assert hint == f"{PICKER_MAX_OPTIONS + 20} runs"
    last = f"run-{PICKER_MAX_OPTIONS + 19:05d}"
    found, same_value, same_hint, typed_key = picker_update(cat, value, key, hint, last)
    assert [o["value"] for o in found] == sorted({last, value}) or [o["value"] for o in found] == [last, value]
    assert typed_key != key and same_value is no_update and same_hint is no_update
    assert picker_update(cat, value, typed_key, hint, last) == (no_update, no_update, no_update, no_update)
    back, *_ , back_key = picker_update(cat, value, typed_key, hint, "")  # the choice made: the text clears
    assert back_key == key and len(back) <= PICKER_MAX_OPTIONS + 1


@pytest.mark.parametrize("watch", [True, False])
def test_default_run_is_the_most_recently_active_kept_until_a_file_changes(tmp_path: Path, monkeypatch,
                                                                           watch: bool) -> None:
    import os

    from services import catalog as catalog_module

    write_many_runs(tmp_path, 20)
    t0 = time.time() - 1000
    for i in range(20):  # run-00019 wrote last
        paths = rf.RunPaths(tmp_path / f"run-{i:05d}")
        for f in (paths.status, paths.metrics):
            os.utime(f, (t0 + i, t0 + i))
    stats = {"n": 0}
    real = catalog_module._mtime_of

    def counted(path: str) -> float:
        stats["n"] += 1
        return real(path)
    monkeypatch.setattr(catalog_module, "_mtime_of", counted)
    cat = RunCatalog(tmp_path, watch=watch)
    try:
        assert cat.watching is watch
        assert cat.default_run() == "run-00019" and stats["n"] == 40  # two files a run
        assert cat.default_run() == "run-00019" and stats["n"] == 40  # nothing changed: no file looked at
        with open(rf.RunPaths(tmp_path / "run-00003").metrics, "ab") as fh:
            fh.write(line("train", step=99, time=time.time(), loss=0.5))
        deadline = time.monotonic() + 30
        while cat.default_run() != "run-00003" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cat.default_run() == "run-00003"
    finally:
        cat.stop()
