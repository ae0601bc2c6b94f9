"""The collector's one writer thread: the training thread queues, this thread writes.

:class:`collectors.monitor.Monitor` hands every metrics record, every status document and the plugins'
slow work (the anomaly rules) to one :class:`RunWriter`, so ``Monitor.log`` and the callback's ``on_log``
cost the training thread a few microseconds: building the record and putting it on a bounded queue. The
thread then

* appends the queued records in batches, at least every ``FLUSH_INTERVAL_S`` (0.25 s), through
  :class:`collectors.runformat.JsonlWriter` (whole lines only: a full disk never leaves a partial line);
* rewrites the status file at most every ``STATUS_INTERVAL_S`` (twice a second), and at once for every
  state change (training / evaluating / finished / crashed), after the records queued before it;
* runs the plugins' background jobs in order with the records (``Monitor.in_background``); a job whose
  result needs the training thread (a snapshot of the live weights, a stop) hands it back with
  ``Monitor.on_training_thread``, run at the training thread's next call into the monitor. The per-record
  hooks (the anomaly rules) run at its next pass too, unless the training thread, which needs their
  verdicts before its weights change, ran them first (:meth:`RunWriter.run_hooks`).

Nothing is lost: ``flush()``/``close()`` wait until everything queued is written, and the Monitor calls
them on ``close()``, at exit, on an uncaught exception and on SIGTERM/SIGINT. A ``kill -9`` loses at most
what was queued in the last ``KILL_WINDOW_S`` (0.5 s): the records of the last flush interval plus the
time one batch takes to write. When the queue holds ``max_items`` items the oldest queued status is
dropped (a newer one follows), never a record or a job; the drop is counted in ``stats()`` (written into
the status file as ``writer``). With no status left to drop the training thread waits for room: only a
disk slower than the training's logging gets there, and the wait is counted too.

This module sits beside :mod:`collectors.alerts` in the collector's chain: it imports only
:mod:`collectors.runformat` and :mod:`collectors.runtime`.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from collectors import runformat as rf
from collectors.runtime import Guard

FLUSH_INTERVAL_S = 0.25
"""Queued records are appended at least this often (the issue asks for 0.5 s; half of it leaves room for
the time a batch takes, so a kill -9 loses at most ``KILL_WINDOW_S``)."""
KILL_WINDOW_S = 0.5
"""What a kill -9 can lose: records logged in the last half second (documented in docs/run-format.md)."""
STATUS_INTERVAL_S = 0.5
"""The status file is rewritten at most this often (plus at every state change)."""
QUEUE_MAX_ITEMS = 65536
"""Queue bound: about half a minute of a training that logs every step at 2,000 steps/s."""
ROOM_WAIT_S = 0.05
"""How long one wait for room lasts before the queue is checked again (the writer may have died)."""
CLOSE_TIMEOUT_S = 30.0
"""Longest ``close()`` waits for the thread to write what is queued (a hung network disk is given up on)."""

_APPEND, _CALL, _STATUS, _BARRIER = range(4)
FINAL_STATES = frozenset({rf.RunState.FINISHED.value, rf.RunState.CRASHED.value})


class RunWriter:
    """One run's writer thread and its bounded queue (one per :class:`collectors.monitor.Monitor`).

    Args:
        status_path: the status file to rewrite.
        guard: reports each kind of failure once; the thread never raises.
        status_doc: builds the status document on the thread from the changes a ``status()`` call queued
            (``{"state": ...}``, or ``{}`` for a periodic rewrite), so neither building it nor measuring
            memory costs the training thread; ``None``: ``status()`` is given whole documents.
        fold: called on the thread with every appended record before ``status_doc`` sees it (the Monitor
            folds it into the thread's own status tracker); with ``status_doc`` it makes the periodic
            rewrites: at most every ``status_interval_s`` while records arrive, the last one included.
        max_items: the queue bound (default ``QUEUE_MAX_ITEMS``).
        flush_interval_s: how often queued records are appended (default ``FLUSH_INTERVAL_S``).
        status_interval_s: least time between two periodic status writes (default ``STATUS_INTERVAL_S``).

    Example:
        >>> w = RunWriter(paths.status, guard=Guard())                 # doctest: +SKIP
        >>> w.append(rf.JsonlWriter(paths.metrics), record); w.close()  # doctest: +SKIP
    """

    def __init__(self, status_path: str | Path, *, guard: Guard,
                 status_doc: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 fold: Callable[[dict[str, Any]], Any] | None = None, max_items: int = QUEUE_MAX_ITEMS,
                 flush_interval_s: float = FLUSH_INTERVAL_S, status_interval_s: float = STATUS_INTERVAL_S) -> None:
        if max_items < 2:
            raise ValueError(f"RunWriter(max_items=...) must be at least 2; got {max_items!r}")
        self.status_path = Path(status_path)
        self.guard = guard
        self.status_doc = status_doc
        self.fold = fold
        self._dirty = False
        self.max_items = int(max_items)
        self.flush_interval_s = float(flush_interval_s)
        self.status_interval_s = float(status_interval_s)
        self.record_hooks: list[Callable[[dict[str, Any]], Any]] = []
        """Called on the thread with every appended record (set by the Monitor: the plugins' background hooks)."""
        self.status_dropped = 0
        """Statuses dropped because the queue was full (each was superseded by a newer one)."""
        self.room_waits = 0
        """Times the training thread waited for room (the queue held only records and jobs)."""
        self.statuses_written = 0
        self.batches = 0
        self._items: deque[tuple[int, Any, Any]] = deque()
        self._n_status = 0
        # reentrant: a signal handler that flushes may interrupt the training thread inside ``_put``
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._jobs_queued = 0
        self._calls_done = 0  # counted by the writer thread alone
        self._hooks_done = 0  # counted under ``_hook_lock`` (either thread runs the record hooks)
        self._hook_records: deque[dict[str, Any]] = deque()
        self._hook_lock = threading.Lock()
        self._hook_owner: int | None = None
        self._jobs_cond = threading.Condition(threading.Lock())
        self._jobs_waiters = 0
        self._room_waiters = 0
        self._soon: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._sinks: dict[int, rf.JsonlWriter] = {}
        self._pending: dict[int, list[bytes]] = {}
        self._pending_status: dict[str, Any] | None = None
        self._last_state: str | None = None
        self._next_flush = 0.0
        self._next_status = 0.0

    # ------------------------------------------------------------------ training thread
    def start(self) -> None:
        """Start the thread (a daemon: the Monitor's exit hooks flush it; it never holds the process up)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trainboard-writer", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def append(self, sink: rf.JsonlWriter, record: dict[str, Any]) -> None:
        """Queue ``record`` for ``sink`` (never dropped). The record must not change after this call.

        Each of ``record_hooks`` is then called with it, in order (the plugins' ``on_record_background``),
        by :meth:`run_hooks`: on the training thread just before its weights change (the optimizer's step
        pre-hook), or on the thread at its next pass (within ``flush_interval_s``) when nothing hooks that
        step. No wake-up call here, and no polling for them on the thread: each wake-up of a second thread
        takes the GIL from a training whose forward needs it between its ops (measured: polling every 5 ms
        cost the writer ~550 µs of CPU per step of a loop logging every step, against the rules' ~100 µs
        run once on the training thread).
        """
        if self.record_hooks:
            self._jobs_queued += 1
            self._hook_records.append(record)
        self._put((_APPEND, sink, record))

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the thread, after the records queued so far (never dropped), at its next
        pass: within ``flush_interval_s``, or at once when someone waits for it (:meth:`wait_jobs`)."""
        self._jobs_queued += 1  # the training thread alone counts up, the writer alone counts done: no lock
        self._put((_CALL, fn, args))

    def status(self, doc: dict[str, Any], *, urgent: bool = False) -> None:
        """Queue a status: the changes for ``status_doc`` (or a whole document without it); ``urgent`` (a
        state change) is written at once, else at most every ``status_interval_s``. A full queue drops the
        oldest queued status first."""
        self._put((_STATUS, doc, urgent))
        if urgent and not self._wake.is_set():
            self._wake.set()

    def on_training_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the thread: have ``fn(*args)`` run by the training thread at its next call (``run_soon``)."""
        self._soon.append((fn, args))

    def run_soon(self) -> None:
        """Run what the thread handed back (called by the training thread at each Monitor entry point)."""
        while self._soon:
            fn, args = self._soon.popleft()
            self.guard.run(getattr(fn, "__qualname__", "a training-thread action"), fn, *args)

    @property
    def _jobs_done(self) -> int:
        return self._calls_done + self._hooks_done

    @property
    def jobs_pending(self) -> int:
        return self._jobs_queued - self._jobs_done

    def run_hooks(self) -> None:
        """Run the record hooks of every record queued so far, here, in order (each exactly once).

        Either thread calls it: the writer thread at each pass, and the training thread just before the
        weights change, when the verdicts are needed and the writer has not come to them yet. Running
        them there costs the rules' own time (tens of µs); waiting for the writer instead costs a wake-up,
        a GIL hand-over and a notification back, several hundred µs in a loop whose next forward follows
        its log at once. A thread already inside (a signal handler that flushes) returns at once."""
        me = threading.get_ident()
        if not self._hook_records or self._hook_owner == me:
            return
        with self._hook_lock:
            self._hook_owner = me
            try:
                while self._hook_records:
                    record = self._hook_records.popleft()
                    try:
                        for hook in self.record_hooks:
                            self.guard.run(getattr(hook, "__qualname__", "a record hook"), hook, record)
                    finally:
                        self._hooks_done += 1
            finally:
                self._hook_owner = None
        self._wake_job_waiters()

    def wait_jobs(self, timeout: float) -> bool:
        """Wait until every background job queued so far ran (their results are then in ``run_soon``)."""
        target = self._jobs_queued
        if self._jobs_done >= target:
            return True
        self._wake.set()  # someone waits: no need to wait for the next poll
        deadline = time.monotonic() + timeout
        with self._jobs_cond:
            self._jobs_waiters += 1
            try:
                while self._jobs_done < target and self.alive:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._jobs_cond.wait(min(left, ROOM_WAIT_S))
            finally:
                self._jobs_waiters -= 1
        return self._jobs_done >= target

    def flush(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until everything queued before this call is on disk (records, status, jobs). True when done."""
        if not self.alive:
            return self._stop and not self._items
        done = threading.Event()
        self._put((_BARRIER, done, None))
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Write everything queued, stop the thread and close the files. Idempotent; True when all was written."""
        with self._lock:
            self._stop = True
        self._wake.set()
        ok = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            ok = not self._thread.is_alive()
            if not ok:
                self.guard.warn_once("writer thread stuck", f"the writer thread did not finish writing within "
                                     f"{timeout:.0f} s (a hung disk?); the last records may be missing")
        elif self._thread is None:
            self._drain()  # never started (no log call): write what close() queued, here
            self._close_sinks()
        return ok

    def stats(self) -> dict[str, Any]:
        """Counters for the status file: queue length, drops, waits, records lost to write errors."""
        return {"queued": len(self._items), "status_dropped": self.status_dropped, "room_waits": self.room_waits,
                "records_lost": sum(s.lost for s in self._sinks.values()),
                "records_written": sum(s.written for s in self._sinks.values()),
                "flush_interval_s": self.flush_interval_s}

    def _put(self, item: tuple[int, Any, Any]) -> None:
        with self._lock:
            if len(self._items) >= self.max_items:
                self._make_room(item[0])
            self._items.append(item)
            if item[0] == _STATUS:
                self._n_status += 1

    def _make_room(self, kind: int) -> None:
        """Queue full (lock held): drop the oldest status, else wait for the thread to take the batch."""
        while len(self._items) >= self.max_items:
            if self._n_status:
                for i, queued in enumerate(self._items):
                    if queued[0] == _STATUS and not queued[2]:  # a state change is kept while a periodic one is left
                        break
                else:
                    i = next(i for i, queued in enumerate(self._items) if queued[0] == _STATUS)
                del self._items[i]
                self._n_status -= 1
                self.status_dropped += 1
                continue
            if not self.alive or self._stop:
                return  # nobody will make room: keep the record (the bound yields, no metric is ever dropped)
            self.room_waits += 1
            self._wake.set()
            self._room_waiters += 1
            try:
                self._room.wait(ROOM_WAIT_S)
            finally:
                self._room_waiters -= 1

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            # no shorter look for the record hooks (see append): the training thread runs them before its
            # weights change, and whoever waits for them sets ``_wake``
            timeout = max(0.0, self._next_flush - time.monotonic()) if self._pending else self.flush_interval_s
            if self._dirty or self._pending_status is not None:
                timeout = min(timeout, max(0.0, self._next_status - time.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
            try:
                stopping = self._drain()
            except Exception as exc:  # noqa: BLE001 - a bug of ours must not kill the thread
                self.guard.warn_once("writer thread", f"the writer thread failed: {type(exc).__name__}: {exc}")
                stopping = self._stop
            if stopping:
                self._close_sinks()
                return

    def _drain(self) -> bool:
        """Take the queue, process it in order, write what is due. Returns True when asked to stop."""
        fresh: deque[tuple[int, Any, Any]] = deque()
        with self._lock:  # as short as possible: the training thread's every log takes this lock too
            batch, self._items = self._items, fresh
            self._n_status = 0
            stopping = self._stop
            if self._room_waiters:
                self._room.notify_all()
        now = time.monotonic()
        for kind, a, b in batch:
            if kind == _APPEND:
                self._pending.setdefault(id(a), []).append(rf.dumps(b) + b"\n")
                self._sinks[id(a)] = a
                if self.fold is not None:
                    self.guard.run("updating the status", self.fold, b)
                    self._dirty = True
            elif kind == _CALL:
                self.run_hooks()  # a job runs after the records queued before it (and their hooks)
                try:
                    self.guard.run(getattr(a, "__qualname__", "a background job"), a, *b)
                finally:
                    self._job_done()
            elif kind == _STATUS:
                state = a.get("state", self._last_state)
                if b or state != self._last_state or state in FINAL_STATES:
                    self._write_appends()  # a state change never claims a step whose record is not on disk
                    self._write_status(a)
                else:
                    self._pending_status = a
            else:  # a barrier: everything before it is written now
                self.run_hooks()
                self._write_appends()
                if self._pending_status is not None:
                    self._write_status(self._pending_status)
                a.set()
        self.run_hooks()  # the rules on this batch's records (unless the training thread ran them already)
        now = time.monotonic()
        if self._pending and (stopping or now >= self._next_flush):
            self._write_appends()
        if self._pending_status is None and self._dirty and self.status_doc is not None:
            self._pending_status = {}  # records arrived since the last status: a periodic rewrite is due
        if self._pending_status is not None and (stopping or now >= self._next_status):
            self._write_appends()
            self._write_status(self._pending_status)
        if stopping:
            with self._lock:
                more = bool(self._items)
            if more:  # queued while we were writing (close() from another thread): one more pass
                return self._drain()
        return stopping

    def _job_done(self) -> None:
        self._calls_done += 1
        self._wake_job_waiters()

    def _wake_job_waiters(self) -> None:
        if self._jobs_waiters:  # the training thread waits (pre-step hook, close): wake it
            with self._jobs_cond:
                self._jobs_cond.notify_all()

    def _write_appends(self) -> None:
        pending, self._pending = self._pending, {}
        self._next_flush = time.monotonic() + self.flush_interval_s
        for key, lines in pending.items():
            sink = self._sinks[key]
            self.guard.run(f"appending to {sink.path.name}", sink.append_lines, lines)
        if pending:
            self.batches += 1

    def _write_status(self, doc: dict[str, Any]) -> None:
        self._pending_status = None
        self._dirty = False
        self._next_status = time.monotonic() + self.status_interval_s
        if self.status_doc is not None:
            built = self.guard.run("building the status", self.status_doc, doc)
            if built is None:
                return
            doc = built
        self._last_state = doc.get("state")
        doc["writer"] = self.stats()
        if self.guard.run("writing training_status.json", rf.write_json_atomic, self.status_path, doc,
                          default=False) is not False:
            self.statuses_written += 1

    def _close_sinks(self) -> None:
        for sink in list(self._sinks.values()):
            self.guard.run(f"closing {sink.path.name}", sink.close)
