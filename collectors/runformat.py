"""The run-directory format: paths, record kinds, schema version, encoding, the atomic writer and the tailer.

This module is the single owner of Trainboard's on-disk layout. The collector (inside training), the
standalone watchers and the dashboard all import it; no other module hard-codes a file name. It depends
only on the standard library (plus orjson when installed) so it imports inside any training process.

Layout of one run directory (see docs/run-format.md)::

    <run>/status/training_status.json   latest status, rewritten atomically
    <run>/status/training_detail.json   latest golden-vs-predicted sample (issue 4)
    <run>/logs/metrics.jsonl            one record per logged step (kind "train" or "eval"; "resume" where a
                                        training resumed into the run dir)
    <run>/logs/alerts.jsonl             one record per alert (kind "alert")
    <run>/logs/samples.jsonl            one record per sample (kind "sample")
    <run>/logs/spectral.jsonl           one record per layer measurement (kind "spectral")
    <run>/snapshots/<name>/             complete snapshots only (built under a temporary name)
    <run>/control/                      requests from the dashboard (snapshot now, thresholds)

An experiment directory (issue 6, ``collectors.experiments``) is a run directory with these additions::

    <run>/config.json                   configuration, git hash, hardware (ConfigTracker)
    <run>/results.json                  final metrics, best checkpoint, samples (ConfigTracker)
    <run>/logs/training.log             human-readable copy of metrics.jsonl (MetricsLogger)
    <run>/checkpoints/checkpoint_step_<N>.pt   one checkpoint per saved step (CheckpointManager)
    <run>/checkpoints/checkpoint_latest.pt     symlink (or pointer file) to the newest checkpoint
    <run>/checkpoints/manifest.json     size and CRC-32 of every checkpoint, for verified loading
    <run>/visualizations/*.png          plots named by step (VisualizationManager)

Non-finite floats (NaN, +Inf, -Inf) are not valid JSON. They are written as the JSON strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and read back as the floats, so they round-trip exactly
and no JSON parser (a browser's included) ever fails on them.
"""
from __future__ import annotations

import contextlib
import enum
import errno
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

try:  # orjson is several times faster; the standard library is the fallback inside minimal trainings.
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    _orjson = None
import json as _json

SCHEMA_VERSION = 1
"""Version written into every JSONL record and status file; readers accept versions up to this one."""

STATUS_DIR = "status"
LOGS_DIR = "logs"
SNAPSHOTS_DIR = "snapshots"
CONTROL_DIR = "control"
STATUS_FILE = f"{STATUS_DIR}/training_status.json"
DETAIL_FILE = f"{STATUS_DIR}/training_detail.json"
METRICS_LOG = f"{LOGS_DIR}/metrics.jsonl"
ALERTS_LOG = f"{LOGS_DIR}/alerts.jsonl"
SAMPLES_LOG = f"{LOGS_DIR}/samples.jsonl"
SPECTRAL_LOG = f"{LOGS_DIR}/spectral.jsonl"
RANKS_DIR = "ranks"
"""Per-rank health (issue 13): each process of a multi-process run appends only its own file here."""
RANK_FILE_PREFIX = "rank-"
RANK_FILE_SUFFIX = ".jsonl"
THRESHOLDS_FILE = f"{CONTROL_DIR}/thresholds.json"
SNAPSHOT_REQUEST_FILE = f"{CONTROL_DIR}/snapshot_request.json"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
CHECKPOINTS_DIR = "checkpoints"
VISUALIZATIONS_DIR = "visualizations"
TRAINING_LOG = f"{LOGS_DIR}/training.log"
CHECKPOINT_PREFIX = "checkpoint_step_"
CHECKPOINT_SUFFIX = ".pt"
CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
"""Prefix of every temporary file or directory; readers and listings ignore names that start with it."""
# issue 3: snapshots, the snapshot-now result, and the standalone Smart Monitor's files
SNAPSHOT_RESULT_FILE = f"{CONTROL_DIR}/snapshot_result.json"
SMART_MONITOR_LOCK = f"{CONTROL_DIR}/smart_monitor.lock"
SMART_MONITOR_STATE = f"{CONTROL_DIR}/smart_monitor_state.json"
SNAPSHOT_RETENTION_FILE = f"{CONTROL_DIR}/snapshot_retention.json"
"""The snapshot retention the collector applies (written by it, read by the Snapshots page; issue 11)."""
SMART_MONITOR_LOG = LOGS_DIR + "/smart_monitor_{date}.log"
"""``date`` is YYYYMMDD (local time), one log file per day as the Smart Monitor guide has it."""
SNAPSHOT_MODEL_DIR = "model"
SNAPSHOT_METADATA = "metadata.json"
SNAPSHOT_STATUS = "training_status.json"
SNAPSHOT_PIN = "pinned.json"
ANOMALY_SNAPSHOT_PREFIX = "anomaly_"
MANUAL_SNAPSHOT_PREFIX = "manual_"
HF_TRAINER_STATE = "trainer_state.json"
HF_CHECKPOINT_PREFIX = "checkpoint-"

LOSS_REPLACED = "loss_replaced"
"""Set (true) on a train record whose ``loss`` Trainer replaced: its ``logging_nan_inf_filter`` logs the
mean of the interval's finite losses (or 0.0) where a step's loss was NaN/Inf. Readers show NaN."""
LOSS_NONFINITE_STEP = "loss_nonfinite_step"
"""The first step of the logged interval whose real training loss was NaN/Inf (with ``loss_replaced``)."""

NAN_TOKEN = "NaN"
POS_INF_TOKEN = "Infinity"
NEG_INF_TOKEN = "-Infinity"
_TOKEN_TO_FLOAT = {NAN_TOKEN: math.nan, POS_INF_TOKEN: math.inf, NEG_INF_TOKEN: -math.inf}


class RecordKind(str, enum.Enum):
    """The ``kind`` field of a JSONL record; readers skip kinds they do not know and count them."""

    TRAIN = "train"
    EVAL = "eval"
    ALERT = "alert"
    SAMPLE = "sample"
    SPECTRAL = "spectral"
    SUMMARY = "summary"
    EVENT = "event"
    INCIDENT = "incident"
    """An incident opened, updated or resolved (``logs/alerts.jsonl``, see collectors/anomaly/incidents.py)."""
    RESUME = "resume"
    """A training resumed into this run dir at ``step``: what an earlier process logged after it is rolled back."""
    RANK = "rank"
    """One rank's health at a log step (``ranks/rank-N.jsonl``; docs/run-format.md, "Ranks")."""


KNOWN_KINDS = frozenset(k.value for k in RecordKind)


class RunState(str, enum.Enum):
    """The ``state`` field of the status file."""

    TRAINING = "training"
    EVALUATING = "evaluating"
    FINISHED = "finished"
    CRASHED = "crashed"


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run directory, derived from its root so no caller builds a path by hand.

    Args:
        root: the run directory.
    """

    root: Path

    @classmethod
    def of(cls, root: str | os.PathLike[str]) -> "RunPaths":
        return cls(Path(root))

    @property
    def status_dir(self) -> Path:
        return self.root / STATUS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def snapshots_dir(self) -> Path:
        return self.root / SNAPSHOTS_DIR

    @property
    def control_dir(self) -> Path:
        return self.root / CONTROL_DIR

    @property
    def status(self) -> Path:
        return self.root / STATUS_FILE

    @property
    def detail(self) -> Path:
        return self.root / DETAIL_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_LOG

    @property
    def alerts(self) -> Path:
        return self.root / ALERTS_LOG

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES_LOG

    @property
    def spectral(self) -> Path:
        return self.root / SPECTRAL_LOG

    @property
    def thresholds(self) -> Path:
        return self.root / THRESHOLDS_FILE

    @property
    def snapshot_request(self) -> Path:
        return self.root / SNAPSHOT_REQUEST_FILE

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def results(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def training_log(self) -> Path:
        return self.root / TRAINING_LOG

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def visualizations_dir(self) -> Path:
        return self.root / VISUALIZATIONS_DIR

    @property
    def checkpoint_latest(self) -> Path:
        return self.checkpoints_dir / CHECKPOINT_LATEST

    @property
    def checkpoint_manifest(self) -> Path:
        return self.checkpoints_dir / CHECKPOINT_MANIFEST

    def checkpoint(self, step: int) -> Path:
        """The checkpoint file of ``step`` (``checkpoints/checkpoint_step_<N>.pt``)."""
        return self.checkpoints_dir / checkpoint_name(step)

    @property
    def snapshot_result(self) -> Path:
        return self.root / SNAPSHOT_RESULT_FILE

    @property
    def smart_monitor_lock(self) -> Path:
        return self.root / SMART_MONITOR_LOCK

    @property
    def smart_monitor_state(self) -> Path:
        return self.root / SMART_MONITOR_STATE

    @property
    def ranks_dir(self) -> Path:
        return self.root / RANKS_DIR

    def rank_file(self, rank: int) -> Path:
        """``ranks/rank-<rank>.jsonl``: written by that rank only, as whole appended lines."""
        return self.ranks_dir / f"{RANK_FILE_PREFIX}{int(rank)}{RANK_FILE_SUFFIX}"

    def smart_monitor_log(self, date: str) -> Path:
        """The Smart Monitor's log of one day (``date`` as YYYYMMDD)."""
        return self.root / SMART_MONITOR_LOG.format(date=date)


def rank_of_file(name: str) -> int | None:
    """The rank of a ``rank-<N>.jsonl`` file name, ``None`` for any other name."""
    if not (name.startswith(RANK_FILE_PREFIX) and name.endswith(RANK_FILE_SUFFIX)):
        return None
    digits = name[len(RANK_FILE_PREFIX):-len(RANK_FILE_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint of ``step``."""
    return f"{CHECKPOINT_PREFIX}{int(step)}{CHECKPOINT_SUFFIX}"


def checkpoint_step(name: str) -> int | None:
    """The step encoded in a checkpoint file name, or None when ``name`` is not one (latest, temp, other)."""
    if not (name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX)):
        return None
    digits = name[len(CHECKPOINT_PREFIX): -len(CHECKPOINT_SUFFIX)]
    return int(digits) if digits.isdigit() else None



def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` looks like a Trainboard run (it has a status file or a metrics log)."""
    p = RunPaths.of(path)
    return p.status.is_file() or p.metrics.is_file()


# --------------------------------------------------------------------------- encoding

def encode_value(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by its token, recursively.

    Also turns tuples into lists and numpy/torch scalars into Python numbers (via ``item()``), because
    trainings log those freely and the JSON encoder must never be the thing that breaks a training.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if math.isnan(value):
            return NAN_TOKEN
        return POS_INF_TOKEN if value > 0 else NEG_INF_TOKEN
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return encode_value(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`: the three tokens become floats again, recursively."""
    if isinstance(value, str):
        return _TOKEN_TO_FLOAT.get(value, value)
    if isinstance(value, dict):
        return {k: decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to compact UTF-8 JSON bytes with the non-finite encoding applied."""
    enc = encode_value(obj)
    if _orjson is not None:
        return _orjson.dumps(enc)
    return _json.dumps(enc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes written by :func:`dumps` (or any JSON) and decode the non-finite tokens.

    Raises:
        ValueError: when ``data`` is not valid JSON (``orjson.JSONDecodeError`` is a ValueError).
    """
    if _orjson is not None:
        try:
            return decode_value(_orjson.loads(data))
        except ValueError:
            # Python's json (Trainer's trainer_state.json, json.dumps of a NaN metric) writes bare NaN,
            # Infinity and -Infinity tokens, which orjson rejects; the standard parser accepts them.
            if not _has_bare_token(data):
                raise
    return decode_value(_json.loads(data))


_BARE_TOKENS = (b"NaN", b"Infinity")


def _has_bare_token(data: bytes | str) -> bool:
    """Cheap pre-check before the slow fallback parse: only text holding a NaN/Infinity token can need it."""
    raw = data.encode() if isinstance(data, str) else data
    return any(tok in raw for tok in _BARE_TOKENS)


def make_record(kind: RecordKind | str, **fields: Any) -> dict[str, Any]:
    """A JSONL record: schema version and kind first, then ``fields``."""
    kind_value = kind.value if isinstance(kind, RecordKind) else str(kind)
    return {"v": SCHEMA_VERSION, "kind": kind_value, **fields}


# --------------------------------------------------------------------------- writing

_umask_cache: int | None = None


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666`` less the process umask.

    ``tempfile.mkstemp`` creates 0600 files; the run files get this mode instead, so a dashboard running as
    another user (a shared lab machine, a service account) can read what the training writes, exactly as it
    can read its JSONL logs. Keep a run private with the directory's mode or ``umask 077`` (docs/security.md).
    The umask is read once per process (from /proc where available: setting it to read it is not thread-safe).
    """
    global _umask_cache
    if _umask_cache is None:
        umask = None
        try:
            with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Umask:"):
                        umask = int(line.split()[1], 8)
                        break
        except (OSError, ValueError, IndexError):
            umask = None
        if umask is None:
            umask = os.umask(0o022)
            os.umask(umask)
        _umask_cache = umask
    return 0o666 & ~_umask_cache


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open a binary file whose content replaces ``path`` only if the ``with`` block completes.

    The data goes to a temporary file in the same directory (same filesystem, so the rename is atomic),
    then ``os.replace`` puts it in place: a reader sees the old file or the new one, never a mix, and an
    exception (or a kill) leaves at most a ``.tmp-`` file that readers ignore. The writer's pid in the
    temporary name lets cleanup tell a killed writer's leftover from a write in progress.

    Args:
        path: the file to replace; its directory is created.
        fsync: flush to disk before the rename (durability across power loss; default False).
        mode: permission bits for the new file (e.g. to keep a script executable); default None: the
            umask-derived mode of :func:`default_file_mode` (not mkstemp's 0600).

    Raises:
        OSError: when the directory cannot be created or written (callers inside training catch it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{target.name}.{os.getpid()}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or directory (a rename's parent) to disk; never raises (best effort: some filesystems
    refuse ``fsync`` on a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, fsync: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write`).

    ``fsync`` costs a disk flush per write; the status file does without it because the next log step
    rewrites it anyway.
    """
    data = dumps(obj)
    with atomic_write(path, fsync=fsync) as fh:
        fh.write(data)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs on this machine: cleanup of ``.tmp-`` files named with a
    writer's pid leaves a live writer's file alone. In doubt (no permission, odd errors) it says alive,
    so nothing in progress is ever deleted."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def read_json(path: str | os.PathLike[str]) -> tuple[Any | None, str | None]:
    """Read a whole-file JSON document without ever raising.

    Returns:
        ``(obj, None)`` on success, ``(None, problem)`` where ``problem`` says in words what is wrong
        (missing, empty, not JSON, unreadable) so the dashboard can show it.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None, f"{p} does not exist yet"
    except IsADirectoryError:
        return None, f"{p} is a directory, not a file"
    except OSError as exc:
        return None, f"cannot read {p}: {exc.strerror or exc}"
    if not data.strip():
        return None, f"{p} is empty"
    try:
        return loads(data), None
    except ValueError as exc:
        return None, f"{p} is not valid JSON ({str(exc).splitlines()[0][:120]})"


APPEND_BUFFER_BYTES = 64 << 10
"""A ``JsonlWriter(flush=False)`` writes its buffered lines once they reach this size (or on ``flush``)."""

_PATH_LOCKS: dict[str, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file in this process: two writers of one file (the anomaly rules' and the spectral
    plugin's alerts) never interleave, and a truncation after a failed write never cuts the other's line."""
    key = os.path.abspath(path)
    with _PATH_LOCKS_GUARD:
        lock = _PATH_LOCKS.get(key)
        if lock is None:
            lock = _PATH_LOCKS[key] = threading.Lock()
        return lock


def append_whole_lines(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Append ``data`` (complete lines) to the ``O_APPEND`` file ``fd``, keeping only whole lines.

    The one append primitive of every JSONL file the collector writes (metrics, alerts, samples, spectral,
    through :class:`JsonlWriter`). A short write is continued; when a write fails (a full disk: ENOSPC, a
    quota, EIO) the file is truncated back to its last newline, so no partial line is left for the next
    record to be glued to: after space returns the next records land intact. Only bytes this call wrote
    are ever cut (the file's size is taken before writing; callers hold the file's lock).

    Returns:
        ``(bytes kept, error)``: ``(len(data), None)`` on success; on failure the length of the prefix of
        whole lines that stayed in the file and the error. Never raises.
    """
    try:
        start = os.fstat(fd).st_size
    except OSError as exc:
        return 0, exc
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:
                raise OSError(errno.EIO, "write() wrote nothing")
            done += n
        return done, None
    except OSError as exc:
        kept = data.rfind(b"\n", 0, done) + 1  # whole lines of ours that made it (0: none)
        try:
            if os.fstat(fd).st_size > start + kept:
                os.ftruncate(fd, start + kept)
        except OSError:
            pass  # truncation failed too: readers skip the partial line; the next append starts a new one
        return kept, exc


class JsonlWriter:
    """Appends records to a JSONL file as whole lines; the one writer class of the collector's JSONL files.

    Every write goes through :func:`append_whole_lines`: whole lines or nothing, so a full disk never
    leaves a partial line (see its docstring). Records that could not be written are counted in
    ``lost`` and the failure is raised (callers report it once through their ``Guard``). A file whose
    last line lacks its newline (a writer killed mid-line) gets one before the first record, so that line
    stays alone (readers skip and count it) and the new record is intact.

    Args:
        path: the JSONL file; its directory is created.
        flush: write every record at once (default True); with False lines are buffered in memory up to
            ``APPEND_BUFFER_BYTES`` and written by ``flush()``/``close()``.

    Attributes:
        written: records written.
        lost: records lost to write errors (full disk...).
    """

    def __init__(self, path: str | os.PathLike[str], *, flush: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._flush = flush
        self._lock = _lock_for(self.path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                                       default_file_mode())
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._buffered_lines = 0
        self.written = 0
        self.lost = 0
        self._needs_newline = False
        try:
            size = os.fstat(self._fd).st_size
            self._needs_newline = size > 0 and os.pread(self._fd, 1, size - 1) != b"\n"
        except OSError:
            pass

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (already built with :func:`make_record`) as one line.

        Raises:
            OSError: the line could not be written (it is counted in ``lost``); the file holds whole lines only.
        """
        self.append_lines([dumps(record) + b"\n"])

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Append several records with one write (the writer thread's batches). Raises like :meth:`append`."""
        self.append_lines([dumps(r) + b"\n" for r in records])

    def append_lines(self, lines: list[bytes]) -> None:
        """Append encoded lines (each ending in a newline). Raises like :meth:`append`."""
        if not lines:
            return
        with self._lock:
            if self._fd is None:
                self.lost += len(lines)
                raise ValueError(f"{self.path} is closed")
            self._buffer.extend(lines)
            self._buffered += sum(len(x) for x in lines)
            self._buffered_lines += len(lines)
            if self._flush or self._buffered >= APPEND_BUFFER_BYTES:
                self._write_buffer()

    def _write_buffer(self) -> None:
        """Write the buffer (lock held); on failure count the lines that did not make it and raise."""
        if not self._buffer or self._fd is None:
            return
        data = b"".join(self._buffer)
        n_lines = self._buffered_lines
        self._buffer, self._buffered, self._buffered_lines = [], 0, 0
        if self._needs_newline:
            data = b"\n" + data
        kept, error = append_whole_lines(self._fd, data)
        if self._needs_newline and kept > 0:
            self._needs_newline = False
            kept_lines = data.count(b"\n", 0, kept) - 1
        else:
            kept_lines = data.count(b"\n", 0, kept)
        self.written += kept_lines
        if error is not None:
            lost = n_lines - kept_lines
            self.lost += lost
            raise OSError(error.errno, f"{lost} record(s) not written to {self.path.name} "
                          f"({error.strerror or error}); the file keeps whole lines only")

    def flush(self) -> None:
        """Write buffered lines (only needed with ``flush=False``). Raises like :meth:`append`."""
        with self._lock:
            self._write_buffer()

    def close(self) -> None:
        """Write what is buffered and close; idempotent. Raises like :meth:`append` (the file is closed anyway)."""
        with self._lock:
            if self._fd is None:
                return
            try:
                self._write_buffer()
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- reading

@dataclass
class ReadResult:
    """What one :func:`read_new` call consumed.

    Attributes:
        records: decoded records of known kinds, in file order.
        offset: byte offset just after the last complete line consumed.
        bad_lines: lines that were not JSON objects (malformed, truncated mid-file, not an object).
        unknown_lines: JSON objects of an unknown kind or a newer schema version.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0
    bad_lines: int = 0
    unknown_lines: int = 0
    columns: Any = None
    """What a ``columnar`` parser made of the chunk instead of ``records`` (see :func:`read_new`)."""


def parse_lines(chunk: bytes, known_kinds: Iterable[str] | None = KNOWN_KINDS) -> ReadResult:
    """Decode a chunk made only of complete lines. Pure: the core of the tailer, tested on bytes."""
    out = ReadResult()
    kinds = None if known_kinds is None else frozenset(known_kinds)
    fast = _parse_all_at_once(chunk)
    if fast is not None:
        for obj in fast:
            _keep(obj, kinds, out)
        return out
    for raw in chunk.split(b"\n"):
        if not raw.strip():
            continue
        if not raw.strip():
            continue
        try:
            obj = loads(raw)
        except ValueError:
            out.bad_lines += 1
            continue
        _keep(obj, kinds, out)
    return out


def _keep(obj: Any, kinds: frozenset[str] | None, out: ReadResult) -> None:
    """Sort one decoded line into records, bad lines (not an object) or unknown lines (kind/version)."""
    if not isinstance(obj, dict):
        out.bad_lines += 1
        return
    version = obj.get("v", SCHEMA_VERSION)
    if (kinds is not None and obj.get("kind") not in kinds) or not isinstance(version, int) or version > SCHEMA_VERSION:
        out.unknown_lines += 1
        return
    out.records.append(obj)


_TOKEN_BYTES = (b'"NaN"', b'Infinity"')
"""Quoted tokens in a chunk mean its values need :func:`decode_value`; bare tokens fail the fast path."""


def _parse_all_at_once(chunk: bytes) -> list[Any] | None:
    """Parse a chunk of clean lines as one JSON array (5-10x faster than line by line), else None.

    Large histories (200,000 steps) open in well under a second this way. "Clean" means no blank lines;
    a chunk with a blank or malformed line falls back to the line-by-line path, which skips and counts it.
    """
    body = chunk.rstrip(b"\n")
    if _orjson is None or not body or b"\n\n" in body or body[:1].isspace():
        return None
    n_lines = body.count(b"\n") + 1
    try:
        objs = _orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except ValueError:
        return None
    if len(objs) != n_lines:  # a line held two values ("1,2"): only the slow path can count it right
        return None
    if any(tok in body for tok in _TOKEN_BYTES):
        objs = decode_value(objs)
    return objs


def read_new(path: str | os.PathLike[str], offset: int, *, max_bytes: int | None = None,
             known_kinds: Iterable[str] | None = KNOWN_KINDS,
             columnar: Callable[[bytearray], Any] | None = None, columnar_bytes: int = 0) -> ReadResult:
    """Read the complete lines of ``path`` after byte ``offset``.

    Only bytes up to the last newline are consumed, so a line still being written is read on the next
    call. ``max_bytes`` bounds one call's work on a huge file (the caller loops). A missing file yields
    nothing at the same offset. ``columnar`` (the dashboard's fast path) is offered up to
    ``columnar_bytes`` of complete lines first: what it returns, unless None, is the result's ``columns``
    and no records are decoded; when it returns None, at most ``max_bytes`` are decoded as records.
    """
    result = ReadResult(offset=offset)
    if columnar is not None and columnar_bytes:
        taken = _read_columnar(path, offset, columnar_bytes, columnar)
        if taken is not None:
            return taken
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read() if max_bytes is None else fh.read(max_bytes)
    except (FileNotFoundError, IsADirectoryError):
        return result
    end = data.rfind(b"\n")
    if end < 0:
        return result
    parsed = parse_lines(data[: end + 1], known_kinds)
    parsed.offset = offset + end + 1
    return parsed


def _read_columnar(path: str | os.PathLike[str], offset: int, size: int,
                   columnar: Callable[[bytearray], Any]) -> ReadResult | None:
    """The complete lines of up to ``size`` bytes after ``offset`` through ``columnar``, or None when it did
    not take them. Read into a bytearray cut at the last newline in place: a large chunk is never copied."""
    try:
        with open(path, "rb") as fh:
            data = bytearray(max(0, min(size, os.fstat(fh.fileno()).st_size - offset)))
            fh.seek(offset)
            n = fh.readinto(data)
    except (FileNotFoundError, IsADirectoryError):
        return None
    end = data.rfind(b"\n", 0, n)
    if end < 0:
        return None
    del data[end + 1:]
    cols = columnar(data)
    return None if cols is None else ReadResult(offset=offset + end + 1, columns=cols)


@dataclass
class TailState:
    """Where a tailer is in a file: the file's identity (device, inode), last size seen and offset."""

    dev: int = -1
    inode: int = -1
    size: int = 0
    offset: int = 0


class JsonlTailer:
    """Follows one JSONL file across appends, truncation and replacement.

    ``poll()`` returns ``(records, reset)``: ``reset`` is True when the file was truncated or replaced
    since the last call, in which case ``records`` is the whole new file and the caller must drop what
    it had. Malformed and unknown lines are counted in ``bad_lines`` and ``unknown_lines``.

    Args:
        path: the JSONL file (it may not exist yet).
        chunk_bytes: most bytes read per internal step, so memory stays bounded on huge files.
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_bytes: int = 64 << 20,
                 known_kinds: Iterable[str] | None = KNOWN_KINDS,
                 columnar: Callable[[bytearray], Any] | None = None, columnar_bytes: int = 32 << 20) -> None:
        self.path = Path(path)
        self.state = TailState()
        self.bad_lines = 0
        self.unknown_lines = 0
        self._chunk = chunk_bytes
        self._kinds = known_kinds
        self._columnar = columnar
        """Offered each chunk first (:func:`read_new`); a chunk it takes is yielded as its result, not records."""
        self._columnar_bytes = columnar_bytes
        self._columnar_after = 0
        """Offset before which the columnar parser is not offered again: the span it refused last time is
        decoded as records first, so a log it cannot take costs at most one refused attempt per span."""

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        records: list[dict[str, Any]] = []
        reset = False
        for chunk, chunk_reset in self.poll_chunks():
            if not isinstance(chunk, list):
                raise TypeError("poll() of a tailer with a columnar parser: use poll_chunks()")
            records.extend(chunk)
            reset = reset or chunk_reset
        return records, reset

    def poll_chunks(self) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """Like :meth:`poll`, one chunk of at most ``chunk_bytes`` at a time, so a reader that consumes each
        chunk before asking for the next keeps only one chunk's records alive (a 340 MB log's records
        held at once as dicts take several GB). ``reset`` comes with the first item; at least one item. With
        a ``columnar`` parser, a chunk it took comes as its result instead of a list of records."""
        try:
            st = os.stat(self.path)
        except OSError:
            reset = self.state.offset > 0
            if reset:
                self._restart(-1, -1)
            yield [], reset
            return
        reset = False
        if (st.st_dev, st.st_ino) != (self.state.dev, self.state.inode) or st.st_size < self.state.offset:
            reset = self.state.inode != -1 or self.state.offset > 0
            self._restart(st.st_dev, st.st_ino)
        self.state.size = st.st_size
        yielded = False
        while self.state.offset < st.st_size:
            offer = self._columnar is not None and self.state.offset >= self._columnar_after
            res = read_new(self.path, self.state.offset, max_bytes=self._chunk, known_kinds=self._kinds,
                           columnar=self._columnar if offer else None, columnar_bytes=self._columnar_bytes)
            if offer and res.columns is None:
                self._columnar_after = self.state.offset + self._columnar_bytes
            if res.offset == self.state.offset:
                break  # only a partial line is left: wait for its newline
            self.bad_lines += res.bad_lines
            self.unknown_lines += res.unknown_lines
            self.state.offset = res.offset
            yield (res.records if res.columns is None else res.columns), reset and not yielded
            yielded = True
        if not yielded:
            yield [], reset

    def _restart(self, dev: int, inode: int) -> None:
        self.state = TailState(dev=dev, inode=inode)
        self.bad_lines = 0
        self.unknown_lines = 0


def iter_records(path: str | os.PathLike[str], known_kinds: Iterable[str] | None = KNOWN_KINDS) -> Iterator[dict[str, Any]]:
    """All complete records of a JSONL file, for one-shot readers (CLIs, tests)."""
    records, _ = JsonlTailer(path, known_kinds=known_kinds).poll()
    yield from records


def discover_runs(base: str | os.PathLike[str]) -> list[Path]:
    """Run directories under ``base``: ``base`` itself if it is a run, else its run subdirectories.

    Sorted by name; hidden and temporary directories are skipped. Never raises on unreadable dirs.
    """
    root = Path(base)
    if is_run_dir(root):
        return [root]
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [c for c in children if is_run_dir(c)]


def is_within(base: str | os.PathLike[str], candidate: str | os.PathLike[str]) -> bool:
    """True when ``candidate`` resolves to ``base`` or a path below it (symlinks followed).

    Every path that comes from a browser request passes through this check before any file access.
    """
    try:
        b = Path(base).resolve()
        c = Path(candidate).resolve()
    except (OSError, RuntimeError):
        return False
    return c == b or b in c.parents


# --------------------------------------------------------------------------- Hugging Face Trainer layout
# Trainer's own output dir is read (never written) by the dashboard, the Smart Monitor and the snapshot
# code; what its files are called and how its log_history maps onto records is known here alone.

def classify(metrics: dict[str, Any]) -> RecordKind:
    """The record kind of one Trainer ``logs`` dict: eval metrics, the end-of-training summary, or train."""
    if any(k.startswith("eval_") for k in metrics):
        return RecordKind.EVAL
    if "train_runtime" in metrics:
        return RecordKind.SUMMARY
    return RecordKind.TRAIN


def find_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every ``checkpoint-<step>`` directory of a Trainer output dir, oldest first.

    Never raises: a missing or unreadable dir has no checkpoints. Temporary names are skipped.
    """
    try:
        entries = list(os.scandir(output_dir))
    except OSError:
        return []
    out = []
    for e in entries:
        name = e.name
        if name.startswith(HF_CHECKPOINT_PREFIX) and name[len(HF_CHECKPOINT_PREFIX):].isdigit():
            try:
                if e.is_dir():
                    out.append((int(name[len(HF_CHECKPOINT_PREFIX):]), Path(e.path)))
            except OSError:
                continue
    return sorted(out)


def read_trainer_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """One ``trainer_state.json`` as Trainer writes it (``json.dumps``: bare ``NaN`` tokens included).

    Returns ``(doc, None)`` or ``(None, problem in words)``; a document without a ``log_history`` list is
    a problem too, since nothing can be shown from it.
    """
    doc, problem = read_json(path)
    if problem is not None:
        return None, problem
    if not isinstance(doc, dict) or not isinstance(doc.get("log_history", []), list):
        return None, f"{path} is not a Trainer state (no log_history list)"
    return doc, None


def trainer_state_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Every ``trainer_state.json`` of an output dir: its own (written at the end) and each checkpoint's."""
    root = Path(output_dir)
    return [root / HF_TRAINER_STATE] + [d / HF_TRAINER_STATE for _, d in find_checkpoints(root)]


def newest_trainer_state(output_dir: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, Path | None, list[str]]:
    """The readable trainer_state.json with the highest ``global_step``, where it is, and the problems met.

    Only the output dir's own file and the last two checkpoints' are read: the newest checkpoint may still
    be being written, so the one before it is the fallback.
    """
    root = Path(output_dir)
    ckpts = find_checkpoints(root)
    candidates = [root / HF_TRAINER_STATE] + [d / HF_TRAINER_STATE for _, d in reversed(ckpts[-2:])]
    best: tuple[dict[str, Any], Path] | None = None
    problems: list[str] = []
    for path in candidates:
        if not path.exists():
            continue
        doc, problem = read_trainer_state(path)
        if doc is None:
            problems.append(problem or f"{path} is unreadable")
            continue
        step = doc.get("global_step") if isinstance(doc.get("global_step"), int) else 0
        if best is None or step > (best[0].get("global_step") if isinstance(best[0].get("global_step"), int) else 0):
            best = (doc, path)
    return (best[0], best[1], problems) if best else (None, None, problems)


def records_from_log_history(history: Iterable[Any], *, after_train: int = -1,
                             after_eval: int = -1) -> tuple[list[dict[str, Any]], int]:
    """Trainboard records from Trainer's ``log_history`` entries (pure), and how many entries were unusable.

    Entries whose step is not newer than the cursors are left out (a replay's resume point); entries
    without an integer step are counted, not silently dropped. The end-of-training summary becomes a
    ``summary`` record.
    """
    out: list[dict[str, Any]] = []
    bad = 0
    for entry in history:
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            bad += 1
            continue
        fields = {k: v for k, v in entry.items() if k != "step"}
        kind = classify(fields)
        if kind == RecordKind.EVAL and step <= after_eval or kind != RecordKind.EVAL and step <= after_train:
            continue
        out.append(make_record(kind, step=step, **fields))
    return out, bad
