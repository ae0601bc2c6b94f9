"""A columnar fast path for the metrics log: whole chunks of JSONL parsed by pyarrow straight into columns.

The record path (``collectors.runformat.parse_lines`` then :meth:`services.model.Run.ingest`) builds one
Python dict per line; on a 340 MB log of 1,000,000 steps x 10 metrics that is most of a first open (about
20 s on a 2-core machine). ``pyarrow.json`` parses the same bytes into typed columns on all cores, without a
Python object per value. The series cache makes reopens fast; this makes the *first* open fast.

It is only a fast path: :func:`parse_columns` takes a chunk only when the result is provably the one the
record path gives, and returns None otherwise, so the caller parses that chunk the usual way. A chunk is
taken when every line is a JSON object of kind ``train`` or ``eval`` with a known schema version, a finite
numeric ``step``, a numeric (or absent) ``time``, no Trainer NaN stand-in fields, no bare ``NaN`` /
``Infinity`` token and no encoded non-finite value, and when, per series, its steps are strictly increasing.
Anything else (malformed or blank lines, a half-written last line is never in a chunk, resume / summary /
alert records, mixed types in a field, a step logged twice) goes to the record path. Each taken series is
appended with :meth:`services.model.Series.extend`, which applies the record path's one-value-per-step rule
against what the series already holds. ``tests/test_columnar.py`` compares both paths value by value.

Without pyarrow (it is an optional dependency of the dashboard) everything takes the record path.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collectors import runformat as rf
from services.model import NUMERIC_SKIP, Series

pa: Any = None
pc: Any = None
pj: Any = None
"""pyarrow's modules, imported by :func:`_load` on the first chunk worth it (a folder of small runs never
imports pyarrow: ~40 MB of memory and a fraction of a second of start-up)."""

ENV_SWITCH = "TRAINBOARD_COLUMNAR"
"""``TRAINBOARD_COLUMNAR=0`` turns the fast path off (every chunk takes the record path)."""
MIN_CHUNK_BYTES = 256 << 10
"""Smaller chunks take the record path: it parses them in milliseconds, and pyarrow is not imported for them."""
BLOCK_BYTES = 4 << 20
"""pyarrow parses a chunk in blocks of this size, one per thread."""
METRIC_KINDS = (rf.RecordKind.TRAIN.value, rf.RecordKind.EVAL.value)
SKIP_FIELDS = NUMERIC_SKIP
"""Fields that are not metric series: the record path's own set."""
REFUSED_FIELDS = frozenset({rf.LOSS_REPLACED, rf.LOSS_NONFINITE_STEP})
NONFINITE_STRINGS = ("NaN", "Infinity", "-Infinity")
"""Encoded non-finite values, which the record path decodes (a column holding one takes the record path)."""


def available() -> bool:
    """Whether the fast path is usable here: pyarrow installed and not turned off by the environment."""
    return os.environ.get(ENV_SWITCH, "1") != "0" and _installed()


@functools.lru_cache(maxsize=1)
def _installed() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def _load() -> bool:
    """Import pyarrow's modules once; False when they cannot be imported."""
    global pa, pc, pj
    if pj is None:
        try:
            import pyarrow
            import pyarrow.compute
            import pyarrow.json
        except ImportError:  # pragma: no cover - available() found it, yet it does not import
            return False
        pa, pc, pj = pyarrow, pyarrow.compute, pyarrow.json
    return True


def release_memory() -> None:
    """Hand pyarrow's cached blocks back to the system after a read pass: its pool keeps the last chunk's
    buffers (~60 MB for a 32 MB chunk) for reuse, which a dashboard that has finished reading does not need."""
    if pa is not None:
        pa.default_memory_pool().release_unused()


@dataclass
class ColumnChunk:
    """One chunk of the metrics log as columns: per series key, (steps, values, times) ready to append."""

    rows: int
    series: dict[str, tuple[array, array, array]] = field(default_factory=dict)


def _numeric(col: Any) -> bool:
    return pa.types.is_integer(col.type) or pa.types.is_floating(col.type)


def _float64(col: Any) -> np.ndarray:
    """A numeric column as float64 (nulls as NaN): ints convert exactly as Python's ``float(int)``."""
    return np.asarray(pc.fill_null(pc.cast(col, pa.float64(), safe=False), math.nan).to_numpy(), dtype=np.float64)


def _as_array(values: np.ndarray) -> array:
    out = array("d")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return out


def _plain(table: Any) -> bool:
    """Whether every value is finite: no non-finite number (a bare ``NaN`` or ``Infinity`` token, which pyarrow
    reads as a double) and no encoded ``"NaN"`` string, inside objects and lists too. Checked on the parsed
    columns, not by scanning the bytes for tokens (five passes over a 32 MB chunk cost more than its parse)."""
    return all(_plain_column(col) for col in table.columns)


def _plain_column(col: Any) -> bool:
    """:func:`_plain` for one column; an object or list column is judged by the values inside it."""
    t = col.type
    if pa.types.is_struct(t):
        return all(_plain_column(child) for child in col.flatten())
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _plain_column(pc.list_flatten(col))
    if pa.types.is_floating(t):
        return not pc.any(pc.invert(pc.is_finite(col))).as_py()
    if pa.types.is_string(t):
        return not pc.any(pc.is_in(col, value_set=pa.array(NONFINITE_STRINGS))).as_py()
    return True


def parse_columns(chunk: bytes | bytearray) -> ColumnChunk | None:
    """``chunk`` (complete lines, ending with a newline) as columns, or None when it must take the record
    path. Pure; the chunk is parsed in place (never copied)."""
    if len(chunk) < max(MIN_CHUNK_BYTES, 2) or not chunk.endswith(b"\n") or not _load():
        return None
    if chunk[:1].isspace():
        return None
    try:
        table = pj.read_json(pa.py_buffer(chunk), read_options=pj.ReadOptions(block_size=BLOCK_BYTES))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
        return None
    n = table.num_rows
    if n != chunk.count(b"\n"):  # a blank line, or a line holding two objects: only the record path counts it right
        return None
    names = table.column_names
    if "kind" not in names or "step" not in names or REFUSED_FIELDS.intersection(names) or not _plain(table):
        return None  # Trainer's stand-in fields, non-finite values: the record path's rules
    kind = table.column("kind")
    if not pa.types.is_string(kind.type) or kind.null_count:
        return None
    kind_masks = {k: np.asarray(pc.equal(kind, k).to_numpy(), dtype=bool) for k in METRIC_KINDS}
    if int(sum(m.sum() for m in kind_masks.values())) != n:
        return None  # a resume, summary or unknown kind: its rules live in the record path
    if "v" in names:
        v = table.column("v")
        if not pa.types.is_integer(v.type) or v.null_count or n and pc.max(v).as_py() > rf.SCHEMA_VERSION:
            return None
    step_col = table.column("step")
    if not _numeric(step_col) or step_col.null_count:
        return None
    steps = _float64(step_col)
    if not np.isfinite(steps).all():
        return None
    if "time" in names:
        time_col = table.column("time")
        if not (_numeric(time_col) or pa.types.is_null(time_col.type)):
            return None
        times = _float64(time_col) if _numeric(time_col) else np.full(n, math.nan)
    else:
        times = np.full(n, math.nan)
    order: list[tuple[int, int, str, np.ndarray]] = []
    for pos, name in enumerate(names):
        if name in SKIP_FIELDS:
            continue
        col = table.column(name)
        if not _numeric(col):
            continue  # strings, bools, objects, nulls: never metric values on the record path either
        present = ~np.asarray(col.is_null().to_numpy(), dtype=bool) if col.null_count else None
        for k, mask in kind_masks.items():
            rows = np.flatnonzero(mask if present is None else mask & present)
            if len(rows):
                order.append((int(rows[0]), pos, f"{k}/{name}", rows))
    out = ColumnChunk(rows=n)
    cache: dict[str, np.ndarray] = {}
    for _, _, key, rows in sorted(order, key=lambda o: (o[0], _key_offset(chunk, o[0], o[2]), o[1])):
        s = steps[rows]
        if len(s) > 1 and not np.all(s[1:] > s[:-1]):
            return None  # a step logged again inside the chunk: the record path's rewind rules
        name = key.partition("/")[2]
        values = cache.get(name)
        if values is None:
            values = cache[name] = _float64(table.column(name))
        out.series[key] = (_as_array(s), _as_array(values[rows]), _as_array(times[rows]))
    return out


def _key_offset(chunk: bytes | bytearray, row: int, key: str) -> int:
    """Where field ``key``'s name stands in line ``row`` of ``chunk``: series first seen in the same record
    are created in the record's field order, as the record path creates them."""
    start = 0
    for _ in range(row):
        start = chunk.find(b"\n", start) + 1
    end = chunk.find(b"\n", start)
    found = chunk.find(_quoted_key(key.partition("/")[2]), start, end)
    return found if found >= 0 else end


def _quoted_key(name: str) -> bytes:
    return rf.dumps(name) + b":"


def ingest_columns(run: Any, chunk: ColumnChunk) -> None:
    """Append ``chunk`` to ``run``'s series (a :class:`services.model.Run`) as the record path would."""
    for key, (steps, values, times) in chunk.series.items():
        s = run.series.get(key)
        if s is None:
            s = run.series[key] = Series()
        s.extend(steps, values, times, True)
    run.records_read += chunk.rows
