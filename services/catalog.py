"""The run catalog: which runs exist under the base directory, each read by the reader of its kind.

One catalog serves every page (run picker, Overview, Alerts, Snapshots, Samples, SVD, Runs). It
discovers runs to :data:`DISCOVERY_DEPTH` levels below the base dir (a directory recognised as a run
is not searched further: its ``checkpoints/`` or an HF dir's ``runs/`` event files belong to it), keeps
one reader per run between calls so re-reads are incremental, and is kept current by file events
(:class:`services.watch.DirWatcher`, non-recursive watches on the directories it reads) or, without
them, by checking file signatures on each request.

Symbolic links below the base dir are not followed: a linked directory is listed in
:attr:`RunCatalog.problems` with the reason, so it is never shown as a run that then has no data.
Only ids produced by discovery are accepted, so nothing a browser sends can point outside the base.
"""
from __future__ import annotations

import hashlib
import os
import threading
import weakref
import time
import zlib
from pathlib import Path
from typing import Any

from collectors import runformat as rf
from services.model import Run, RunKind, RunSummary, listdir, mtime
from services.readers import READERS, TB_EVENT_MARK, detect_kind
from services.push import ChangeFeed
from services.watch import DirWatcher

BASE_RUN_ID = "."
"""Run id of a base directory that is itself a run."""
DISCOVERY_DEPTH = 2
"""Runs are looked for in the base dir and this many levels below it."""
WATCHED_RESCAN_INTERVAL_S = 30.0
"""With working file events the tree is searched again on an event in the base dir, a searched folder or a
run's root (new runs, a kind that changes), and otherwise only this often: a rescan of 2,000 unchanged runs
still costs ~6,000 ``stat`` calls."""
RESCAN_INTERVAL_S = 2.0
"""Even with file events, the tree is searched for new runs this often (events can be lost on network
filesystems, and a run dir's first status file appears in a directory not watched yet)."""
RECHECK_INTERVAL_S = 30.0
"""A watched Trainboard run with no event is still re-checked about this often (a safety net: lost events
are detected as an overflow, which switches to polling). Spread over 0.5-1.5x per run
(:func:`recheck_interval`) so 2,000 runs are not all re-read in the same tick."""


def recheck_interval(run_id: str) -> float:
    """This run's re-check interval: :data:`RECHECK_INTERVAL_S` times 0.5-1.5, fixed per run id. Pure."""
    return RECHECK_INTERVAL_S * (0.5 + (zlib.crc32(run_id.encode("utf-8", "surrogateescape")) % 1000) / 1000)


DEFAULT_RUN_KEEP_S = 1.0
"""The most recently active run is worked out again after this long (without file events), or at once
when any watched file changed: it costs two ``stat`` calls per run (4,000 for 2,000 runs, ~50 ms here),
and every page load asks for it twice (the picker, and the page it draws)."""
DEFAULT_RUN_WATCHED_KEEP_S = RECHECK_INTERVAL_S
"""With working file events, an unchanged event count keeps the answer this long (every write to a run's
status or logs is an event)."""
LIST_CLOCK_S = 10.0
"""The Runs list is rebuilt at least this often even when nothing changed: a run's state (stale) and the
"updated ... ago" column follow the clock."""
COLLECTOR_DIRS = (rf.STATUS_DIR, rf.LOGS_DIR, rf.CONTROL_DIR, rf.SNAPSHOTS_DIR)
"""What is watched inside a collector-written run: its status, logs and control files, and which
snapshots exist (``snapshots/`` itself, never the inside of a snapshot)."""


def dir_key(path: Path) -> tuple[int | None, ...]:
    """What a directory's detected kind and child list depend on: the mtimes of it, its ``logs/`` and its
    ``checkpoints/`` (an entry appearing, vanishing or renamed changes its directory's mtime)."""
    out: list[int | None] = []
    for p in (path, path / rf.LOGS_DIR, path / rf.CHECKPOINTS_DIR):
        try:
            out.append(os.stat(p).st_mtime_ns)
        except OSError:
            out.append(None)
    return tuple(out)


DirMemo = dict
"""``path -> (dir_key, kind, child dirs, symlink problems)``: what discovery learned about each directory."""


def _look(p: Path, root: Path, memo: DirMemo | None) -> tuple[RunKind | None, list[Path], list[str]]:
    """The kind of one directory and (for a non-run) its child directories, from ``memo`` while unchanged."""
    key = dir_key(p) if memo is not None else None
    if memo is not None and key[0] is not None:
        hit = memo.get(p)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2], hit[3]
    kind = detect_kind(p)
    children: list[Path] = []
    problems: list[str] = []
    if kind is None:
        for n in listdir(p):
            if n.startswith((".", rf.TMP_PREFIX)):
                continue
            child = p / n
            if child.is_symlink():
                if child.is_dir() and detect_kind(child) is not None:
                    problems.append(f"{child.relative_to(root).as_posix()} is a symbolic link to "
                                    f"{os.path.realpath(child)}: not followed (start the dashboard with "
                                    f"--base-dir on its target to watch it)")
                continue
            if child.is_dir():
                children.append(child)
    if memo is not None and key is not None and key[0] is not None:
        memo[p] = (key, kind, children, problems)
    return kind, children, problems


def discover(base: str | os.PathLike[str], depth: int = DISCOVERY_DEPTH, memo: DirMemo | None = None
             ) -> tuple[list[tuple[str, RunKind, Path]], list[Path], list[str]]:
    """Every run under ``base``: ``(run_id, kind, path)`` sorted by id, the non-run directories searched
    (to watch for new runs) and the problems met (symbolic links not followed), in words.

    ``run_id`` is the path relative to base (``"."`` for base itself). Hidden and temporary directories
    are skipped. With ``memo`` (kept by the caller between calls), a directory whose mtimes
    (:func:`dir_key`) did not change is not read again: a rescan of 2,000 unchanged runs costs three
    ``stat`` calls per directory instead of detecting every kind and listing every folder.
    """
    root = Path(base)
    found: list[tuple[str, RunKind, Path]] = []
    searched: list[Path] = []
    problems: list[str] = []
    level = [root]
    seen: set[Path] = set()
    for d in range(depth + 1):
        nxt: list[Path] = []
        for p in level:
            seen.add(p)
            kind, children, probs = _look(p, root, memo)
            if kind is not None:
                rid = BASE_RUN_ID if p == root else p.relative_to(root).as_posix()
                found.append((rid, kind, p))
                continue
            searched.append(p)
            if d >= depth:
                continue
            problems += probs
            nxt += children
        level = nxt
    if memo is not None:
        for gone in [p for p in memo if p not in seen]:
            del memo[gone]
    return sorted(found, key=lambda t: t[0]), searched, problems


def activity_paths(kind: RunKind, root: Path) -> list[str] | None:
    """The files whose mtimes say when a collector run last wrote (fixed per run, so kept by the caller:
    every page load picks the default run among 2,000), or None for kinds whose files come and go."""
    if kind in (RunKind.TRAINBOARD, RunKind.EXPERIMENT):
        return [os.fspath(rf.RunPaths(root).status), os.fspath(rf.RunPaths(root).metrics)]
    return None


def _mtime_of(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def activity_time(kind: RunKind, root: Path, paths: list[str] | None = None) -> float:
    """When a run last wrote anything its reader reads (mtime), without reading it: picks the default run.
    ``paths``: its :func:`activity_paths`, when the caller keeps them."""
    if paths is None:
        paths = activity_paths(kind, root)
    if paths is not None:
        return max(map(_mtime_of, paths), default=0.0)
    if kind is RunKind.HUGGINGFACE:
        paths = rf.trainer_state_files(root)[-2:] + [root / rf.HF_TRAINER_STATE]
    else:
        paths = [root / n for n in listdir(root) if n.startswith(TB_EVENT_MARK)]
    return max((t for t in (mtime(p) for p in paths) if t is not None), default=0.0)


def import_tbparse() -> None:
    """Import tbparse (and pandas) once, while no reader thread is running (see :meth:`RunCatalog.warm`)."""
    try:
        import tbparse  # noqa: F401
    except ImportError:  # the TensorBoard reader reports it as the run's problem
        pass


class RunCatalog:
    """All runs under one base directory, kept current by file events and on-demand reading.

    Args:
        base_dir: a run directory, or a root with runs up to :data:`DISCOVERY_DEPTH` levels down.
        poll: no file events: check file signatures on each request (network filesystems, containers
            without inotify).
        watch: watch files at all (tests of the pure parts pass False).

    Attributes:
        base: the resolved base directory.
        problems: discovery problems (symbolic links not followed), in words.

    Example:
        >>> cat = RunCatalog("runs", watch=False)                     # doctest: +SKIP
        >>> for run in cat.runs():
        ...     s = run.summary(); print(s.name, s.kind, s.state, s.last_step, s.best_eval_loss)
    """

    def __init__(self, base_dir: str | os.PathLike[str], *, poll: bool = False, watch: bool = True,
                 rescan_interval_s: float = RESCAN_INTERVAL_S, max_watches: int | None = None) -> None:
        self.base = Path(base_dir).expanduser().resolve()
        self.poll = poll
        self.rescan_interval_s = rescan_interval_s
        self.problems: list[str] = []
        self._runs: dict[str, Run] = {}
        self._run_ids: list[str] = []
        self._dirty_all = True
        self._dirty: set[str] = set()
        self._owner: dict[str, str | None] = {}
        """Watched directory -> the run id it belongs to (None: a directory searched for runs)."""
        self._last_scan = -1e18
        self._memo: DirMemo = {}
        self._searched: set[Path] = set()
        self._soon: float | None = None
        self._id_set: frozenset[str] = frozenset()
        self._ids_key = ""
        self._watch_done: set[str] = set()
        """Runs whose root and collector dirs are all watched."""
        self._within_memo: dict[str, tuple[Any, bool]] = {}
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._list_lock = threading.Lock()
        self._list_checked: dict[str, float] = {}
        self._listed: tuple[tuple[str, int], list[RunSummary]] | None = None
        self._list_runs: list[Run] = []
        self._activity_paths: dict[str, tuple[RunKind, list[str] | None]] = {}
        self._default_hit: tuple[tuple[str, int], float, str] | None = None
        self._list_ids_key: str | None = None
        self._recheck: dict[str, float] = {}
        """Run id -> :func:`recheck_interval` (computed once per run)."""
        self._watcher: DirWatcher | None = None
        self.changes = ChangeFeed()
        """Counts file events; the dashboard pushes it to the browser (services/push.py)."""
        _CATALOGS.add(self)
        if watch and not poll:
            self._watcher = DirWatcher(self._on_change, max_watches=max_watches, on_give_up=self._on_give_up)
            if not self._watcher.available:
                self._watcher = None if self._watcher.problem is None else self._watcher

    def _after_fork(self) -> None:
        """In a forked child (Dash's background callbacks, e.g. "Snapshot now", run in one) a lock may have
        been copied while another thread held it, and the watcher thread does not exist: start clean and
        check files on each request."""
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._list_lock = threading.Lock()
        self._watcher = None
        for run in list(self._runs.values()):
            run._lock = threading.Lock()

    # ------------------------------------------------------------------ watching
    @property
    def watching(self) -> bool:
        return self._watcher is not None and self._watcher.available

    @property
    def watch_problem(self) -> str | None:
        """Why files are checked on each request instead of by events (None when watching or asked to poll)."""
        return None if self._watcher is None or self._watcher.available else self._watcher.problem

    def watched_dirs(self) -> list[str]:
        return self._watcher.watched() if self._watcher is not None else []

    def _watch(self, path: Path, owner: str | None) -> None:
        if self.watching and self._watcher is not None and self._watcher.watch(path):
            self._owner[os.fspath(path)] = owner

    def _watch_run(self, run_id: str, kind: RunKind, root: Path) -> None:
        """Watch a run's root and (collector runs) its status/logs/control/snapshots dirs, once each: a
        run whose dirs are all watched costs nothing here again (2,000 runs are re-offered every rescan)."""
        if run_id in self._watch_done or self._watcher is None:
            return
        self._watch(root, run_id)
        complete = self._watcher.is_watched(root)
        if kind in (RunKind.TRAINBOARD, RunKind.EXPERIMENT):
            for name in COLLECTOR_DIRS:
                sub = os.path.join(os.fspath(root), name)
                if not self._watcher.is_watched(sub):
                    if os.path.isdir(sub) and not os.path.islink(sub):
                        self._watch(Path(sub), run_id)
                    complete = complete and self._watcher.is_watched(sub)
        if complete:
            self._watch_done.add(run_id)

    def _on_change(self, dir_path: str) -> None:
        """From the watcher thread: remember which run changed (or that the run list may have), then
        tell the pages (services/push.py): they refresh now, not at their next tick."""
        try:
            self._mark_changed(dir_path)
        finally:
            self.changes.notify()

    def _mark_changed(self, dir_path: str) -> None:
        with self._lock:
            owner = self._owner.get(dir_path)
            if owner is None:
                self._dirty_all = True
                return
            if dir_path == os.fspath(self._root_of(owner)):
                self._dirty_all = True  # an entry of a run's root changed: its kind may have (results.json...)
            self._watch_done.discard(owner)  # a dir of it may have gone or come: offer its watches again
            self._dirty.add(owner)  # files in a run (root, status, logs, control, snapshots): that run only

    def _on_give_up(self, reason: str) -> None:
        """The watcher ran out (watch limit, lost events). Called from inside ``rescan`` (which holds the
        lock) or the watcher thread, so it takes no lock: it only asks for a rescan; with ``watching``
        False every ``get`` re-checks its run's files from now on (polling)."""
        self._dirty_all = True

    def _root_of(self, run_id: str) -> Path:
        return self.base if run_id == BASE_RUN_ID else self.base / run_id

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    # ------------------------------------------------------------------ discovery
    def rescan(self, force: bool = False) -> list[str]:
        """Search the tree for runs when it changed (or every ``rescan_interval_s``); returns the run ids."""
        with self._scan_lock:  # a caller arriving during a scan waits for its result instead of the old list
            now = time.monotonic()
            with self._lock:
                interval = max(self.rescan_interval_s, WATCHED_RESCAN_INTERVAL_S) if self.watching \
                    else self.rescan_interval_s
                due = force or self._dirty_all or now - self._last_scan >= interval \
                    or (self._soon is not None and now >= self._soon)
                if not due:
                    return list(self._run_ids)
                self._dirty_all = False
                self._last_scan = now
                self._soon = None
            found, searched, problems = discover(self.base, memo=self._memo)
            if any(kind is RunKind.TENSORBOARD for _, kind, _ in found):
                import_tbparse()
            with self._lock:
                fresh: dict[str, Run] = {}
                for rid, kind, path in found:
                    old = self._runs.get(rid)
                    fresh[rid] = old if old is not None and old.kind is kind else READERS[kind](rid, path)
                self._runs = fresh
                self._run_ids = [rid for rid, _, _ in found]
                self._recheck = {rid: self._recheck.get(rid) or recheck_interval(rid) for rid in self._run_ids}
                self._ids_key = hashlib.blake2b(repr([(rid, kind.value) for rid, kind, _ in found]).encode(),
                                                digest_size=12).hexdigest()
                self._id_set = frozenset(self._run_ids)
                self.problems = problems
                if set(searched) - self._searched:
                    # a folder that just appeared may have got runs before its watch existed: look again soon
                    self._soon = now + self.rescan_interval_s
                self._searched = set(searched)
                for d in searched:
                    self._watch(d, None)
                for rid, kind, path in found:
                    self._watch_run(rid, kind, path)
                return list(self._run_ids)

    def _within(self, run: Run) -> bool:
        """Whether the run's directory is still inside the base dir (no component became a symbolic link
        out of it). :func:`rf.is_within` resolves both paths (~100 µs); its answer is kept while the
        ``lstat`` of every component below the base is unchanged (a swapped component changes it)."""
        parts = [] if run.run_id == BASE_RUN_ID else run.run_id.split("/")
        key: list[Any] = []
        p = self.base
        for part in parts:
            p = p / part
            try:
                st = os.lstat(p)
            except OSError:
                return False
            key.append((st.st_ino, st.st_mode))
        hit = self._within_memo.get(run.run_id)
        if hit is not None and hit[0] == key:
            return hit[1]
        ok = rf.is_within(self.base, run.root)
        self._within_memo[run.run_id] = (key, ok)
        return ok

    def run_ids(self) -> list[str]:
        """Ids of the runs under the base dir (rescanned when the tree changed, or every few seconds)."""
        return self.rescan()

    def run_list_key(self) -> str:
        """A digest of the run ids and kinds: the picker's options change exactly when it does."""
        self.rescan()
        return self._ids_key

    def kind_of(self, run_id: str) -> RunKind | None:
        run = self._runs.get(run_id)
        return run.kind if run is not None else None

    def label(self, run_id: str) -> str:
        """The picker's label of a run: its path (the base dir's folder name for ``"."``) and its kind."""
        run = self._runs.get(run_id)
        if run is None:
            return self.base.name if run_id == BASE_RUN_ID else run_id
        return run.label

    # ------------------------------------------------------------------ reading
    def get(self, run_id: str | None) -> Run | None:
        """The run ``run_id``, brought up to date; None when it is not a run under the base dir."""
        self.rescan()
        return self._get(run_id)

    def _get(self, run_id: str | None) -> Run | None:
        if not run_id or run_id not in self._id_set:
            return None
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            watching = self.watching
            if watching and run_id not in self._dirty and run.version > 0 and run.has_collector \
                    and now - run._checked <= recheck_interval(run_id):
                # no event for it since its last check: unchanged (a directory renamed or swapped for a
                # link is an event in its parent, which makes the next rescan drop or re-detect the run)
                return run
            if not self._within(run):
                return None
            self._dirty.discard(run_id)
            if watching:
                self._watch_run(run_id, run.kind, run.root)
        run._checked = now
        run.refresh()
        return run

    def runs(self, refresh: bool = True) -> list[Run]:
        """Every run, refreshed (cheap for runs whose files did not change), by id."""
        out = []
        for rid in self.rescan():
            run = self._get(rid) if refresh else self._runs.get(rid)
            if run is not None:
                out.append(run)
        return out

    def listing(self, now: float | None = None) -> tuple[list[RunSummary], str]:
        """Every run's row for the Runs list, and a fingerprint that changes whenever a row may have.

        A run not opened yet is read as the listing needs it (:meth:`Run.list_refresh`: for a Trainboard
        run its status file and the tail of its log, never its series); an opened run is refreshed as
        pages do. With file events, a run without an event is not looked at (re-checked about every
        :data:`RECHECK_INTERVAL_S`). Concurrent callers (a browser ticking while the first listing of
        2,000 runs is still being read) wait for one listing instead of each reading every run, and an
        unchanged listing returns the rows it built before.
        """
        with self._list_lock:
            now = time.time() if now is None else now
            ids = self.rescan()
            listed = self._listed
            if listed is None or self._list_ids_key != self._ids_key or not self.watching or self._dirty:
                due = ids  # a new run list, polling, or events: every run is looked at (cheap when unchanged)
            else:
                mono = time.monotonic()
                checked, intervals = self._list_checked, self._recheck
                due = [rid for rid in ids if mono - checked.get(rid, -1e18) > intervals[rid]]
            if len(due) == len(ids):
                runs = [r for r in (self._list_get(rid) for rid in ids) if r is not None]
                self._list_runs, self._list_ids_key = runs, self._ids_key
            else:
                for rid in due:
                    self._list_get(rid)
                runs = self._list_runs
            # read after the runs were looked at and before the rows are built: a change from now on moves
            # the counter again, so the next call rebuilds; unchanged, the rows built before are current
            key = (self._ids_key, Run.changes, len(runs))
            fingerprint = hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest()
            bucket = int(now // LIST_CLOCK_S)  # the state ("stale") and the "ago" column depend on the clock
            if listed is not None and listed[0] == (fingerprint, bucket):
                return listed[1], fingerprint
            rows = [r.list_summary(now) for r in runs]
            self._listed = ((fingerprint, bucket), rows)
            return rows, fingerprint

    def _list_get(self, run_id: str) -> Run | None:
        """:meth:`_get` for the listing: a run not opened is brought up to date with ``list_refresh``."""
        run = self._runs.get(run_id)
        if run is None or run.opened:
            return self._get(run_id)
        now = time.monotonic()
        with self._lock:
            if self.watching and run_id not in self._dirty and run.has_collector \
                    and now - self._list_checked.get(run_id, -1e18) <= recheck_interval(run_id):
                return run
            if not self._within(run):
                return None
            self._dirty.discard(run_id)
            if self.watching:
                self._watch_run(run_id, run.kind, run.root)
        self._list_checked[run_id] = now
        run.list_refresh()
        return run

    def version(self) -> tuple[tuple[str, int], ...]:
        """A fingerprint of all runs' versions: unchanged means nothing new anywhere."""
        return tuple((r.run_id, r.version) for r in self.runs())

    def default_run(self) -> str | None:
        """The run to show first: the most recently active one (kept while no file changed, see
        :data:`DEFAULT_RUN_KEEP_S`)."""
        ids = self.rescan()
        if not ids:
            return None
        key, now = (self._ids_key, self.changes.count), time.monotonic()
        kept = self._default_hit
        if kept is not None and kept[0] == key and now - kept[1] < (
                DEFAULT_RUN_WATCHED_KEEP_S if self.watching else DEFAULT_RUN_KEEP_S):
            return kept[2]
        with self._lock:
            kinds = {rid: self._runs[rid].kind for rid in ids if rid in self._runs}
        known = self._activity_paths

        def when(rid: str) -> float:
            kind = kinds.get(rid, RunKind.TRAINBOARD)
            hit = known.get(rid)
            if hit is None or hit[0] is not kind:
                hit = known[rid] = (kind, activity_paths(kind, self._root_of(rid)))
            return activity_time(kind, self._root_of(rid), hit[1])
        best = max(ids, key=when)
        self._default_hit = (key, now, best)
        return best

    def warm(self) -> threading.Thread:
        """Read the most recent run in a background thread, so a large history is parsed before the first
        page asks for it (a browser that asks sooner just waits on the same run's lock).

        Discovery runs first, in the caller's thread: when a TensorBoard run exists, tbparse (and pandas)
        are imported here, before the server answers anything. Imported later in a reader thread, pandas
        is half-initialised for a moment in ``sys.modules``, and plotly serialising a page in another
        thread at that moment fails with "partially initialized module 'pandas'".
        """
        self.rescan()

        def work() -> None:
            self.get(self.default_run())
            self.listing()  # the Runs list's first open then finds its rows read
            soon = self._soon  # the first scan asks for a second look soon: done here, not on a page request
            if soon is not None:
                time.sleep(max(0.0, soon - time.monotonic()))
                self.rescan()

        t = threading.Thread(target=work, name="trainboard-warm", daemon=True)
        t.start()
        return t

    def describe(self) -> dict[str, Any]:
        """What the catalog knows, for messages: counts per kind, watch mode and problems."""
        kinds: dict[str, int] = {}
        for r in list(self._runs.values()):
            kinds[r.kind.value] = kinds.get(r.kind.value, 0) + 1
        return {"base": str(self.base), "kinds": kinds, "watching": self.watching, "problems": list(self.problems)}


_CATALOGS: "weakref.WeakSet[RunCatalog]" = weakref.WeakSet()


def _reset_catalogs_after_fork() -> None:
    for catalog in list(_CATALOGS):
        catalog._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_catalogs_after_fork)
