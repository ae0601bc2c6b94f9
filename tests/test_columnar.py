"""The columnar fast path (services/columnar.py) gives exactly the series of the record path.

Every comparison is bit for bit on the float64 columns (NaN included) plus the reader's counters, between
a reader with the fast path and one with ``TRAINBOARD_COLUMNAR=0``, on clean logs (which it must take) and
on logs holding everything the record path has rules for (which it must leave to it, chunk by chunk).
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from collectors import runformat as rf
from services import columnar
from services.readers import TrainboardRun
from tests.test_series_cache import assert_same, record, tricky_lines, write_lines

pytestmark = pytest.mark.skipif(not columnar.available(), reason="pyarrow is not installed")


@pytest.fixture(autouse=True)
def small_chunks_too(monkeypatch):
    """The tests' logs are small: let the fast path take chunks of any size."""
    monkeypatch.setattr(columnar, "MIN_CHUNK_BYTES", 0)


def read(root: Path, fast: bool, monkeypatch: pytest.MonkeyPatch, chunk: int | None = None) -> TrainboardRun:
    """A reader of ``root`` with or without the fast path; ``chunk`` splits the log into small chunks."""
    monkeypatch.setenv(columnar.ENV_SWITCH, "1" if fast else "0")
    run = TrainboardRun(".", root, cache=None)
    if chunk:
        run.metrics_tailer._chunk = chunk
        run.metrics_tailer._columnar_bytes = chunk * 3
    run.refresh()
    return run


def clean_lines(n: int, seed: int = 0) -> list[bytes]:
    """What a healthy training logs: train records with ints and floats, an eval every 10 steps with other
    fields, a metric sometimes null or absent, a record without a time, float steps, huge ints."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        fields: dict[str, object] = {"loss": rng.uniform(0, 5), "learning_rate": 1e-3 / i, "tokens_seen": i * 512}
        if i % 7:
            fields["grad_norm"] = None if i % 11 == 0 else rng.random() * 10
        if i % 13 == 0:
            fields["big"] = 2**60 + i  # beyond float precision: rounded the same on both paths
        rec = rf.make_record("train", step=i if i % 17 else float(i), time=1e9 + i * 0.1, **fields)
        if i % 19 == 0:
            del rec["time"]
        out.append(rf.dumps(rec))
        if i % 10 == 0:
            out.append(rf.dumps(rf.make_record("eval", step=i, time=1e9 + i, eval_loss=1.0 / i, loss=-0.0)))
    return out


def test_a_clean_log_takes_the_fast_path_with_the_same_series(tmp_path, monkeypatch):
    root = tmp_path / "run"
    write_lines(rf.RunPaths(root).metrics, clean_lines(5000))
    fast, slow = read(root, True, monkeypatch), read(root, False, monkeypatch)
    assert fast.columnar_chunks >= 1 and slow.columnar_chunks == 0
    assert_same(fast, slow)
    assert list(fast.series) == list(slow.series)  # the same series, in the same order
    assert len(fast.series["train/loss"]) == 5000 and len(fast.series["eval/eval_loss"]) == 500
    assert math.isnan(fast.series["train/loss"].times[18])  # the record without a time


@pytest.mark.parametrize("chunk", [None, 2048, 20_000], ids=["one-chunk", "tiny-chunks", "small-chunks"])
def test_a_tricky_log_gives_the_same_series_chunk_by_chunk(tmp_path, monkeypatch, chunk):
    root = tmp_path / "run"
    lines = []
    for k in range(6):  # clean stretches the fast path takes between stretches it must refuse
        lines += clean_lines(300, seed=k)[:: 1 if k % 2 else 2] if k % 3 else tricky_lines(1 + 300 * k, 200)
    write_lines(rf.RunPaths(root).metrics, lines)
    fast, slow = read(root, True, monkeypatch, chunk), read(root, False, monkeypatch, chunk)
    assert_same(fast, slow)
    if chunk:
        assert fast.columnar_chunks >= 1  # some chunks were clean, and taken


def test_a_growing_log_gives_the_same_series(tmp_path, monkeypatch):
    """Appends after the first read, one of them going back in steps (a resumed run re-logging)."""
    root = tmp_path / "run"
    metrics = rf.RunPaths(root).metrics
    write_lines(metrics, clean_lines(2000))
    fast, slow = read(root, True, monkeypatch), read(root, False, monkeypatch)
    for extra in ([record(1500.0, loss=1.0, learning_rate=2.0)] + [record(s, loss=s / 10) for s in range(1501, 1600)],
                  [record(s, loss=0.5) for s in range(1600, 1700)],
                  [b'{"v":1,"kind":"train","step":1700,"loss":0.1,"grad_norm":NaN}'],
                  [rf.dumps(rf.make_record("resume", step=1650, previous_step=1700))],
                  [record(s, loss=0.25) for s in range(1651, 1800)]):
        write_lines(metrics, extra, mode="ab")
        fast.refresh()
        slow.refresh()
        assert_same(fast, slow)
    assert fast.columnar_chunks >= 2 and fast.series["train/loss"].steps[-1] == 1799.0


REFUSED = {
    "bare-nan": b'{"v":1,"kind":"train","step":1,"loss":NaN}\n',
    "bare-inf-time": b'{"v":1,"kind":"train","step":1,"time":-Infinity,"loss":1}\n',
    "huge-number": b'{"v":1,"kind":"train","step":1,"loss":1e999}\n',
    "nan-in-an-object": b'{"v":1,"kind":"train","step":1,"loss":1,"extra":{"a":{"b":NaN}}}\n',
    "nan-in-a-list": b'{"v":1,"kind":"train","step":1,"loss":1,"hist":[1.0,Infinity]}\n',
    "encoded-inf-in-a-list": b'{"v":1,"kind":"train","step":1,"loss":1,"hist":["-Infinity"]}\n',
    "stand-in-step": record(1, loss=1.5) + b"\n" + record(2, loss=0.0, **{rf.LOSS_NONFINITE_STEP: 2}) + b"\n",
    "encoded-nan": rf.dumps(rf.make_record("train", step=1, loss=math.nan)) + b"\n",
    "malformed": b'{"v":1,"kind":"train","step":1,"loss":1}\n{"v":1,"kind":\n',
    "blank-line": record(1, loss=1.0) + b"\n\n" + record(2, loss=1.0) + b"\n",
    "two-objects-on-a-line": record(1, loss=1.0) + b" " + record(2, loss=1.0) + b"\n",
    "not-an-object": b"[1, 2]\n",
    "resume": rf.dumps(rf.make_record("resume", step=1)) + b"\n",
    "summary": rf.dumps(rf.make_record("summary", train_runtime=1.0)) + b"\n",
    "unknown-kind": b'{"v":1,"kind":"from_the_future","step":1}\n',
    "newer-schema": b'{"v":99,"kind":"train","step":1,"loss":1}\n',
    "bool-version": b'{"v":true,"kind":"train","step":1,"loss":1}\n',
    "no-step": b'{"v":1,"kind":"train","loss":1}\n',
    "null-step": b'{"v":1,"kind":"train","step":null,"loss":1}\n',
    "string-step": b'{"v":1,"kind":"train","step":"1","loss":1}\n',
    "string-time": b'{"v":1,"kind":"train","step":1,"time":"now","loss":1}\n',
    "mixed-types": record(1, loss=1.0) + b"\n" + record(2, loss="high") + b"\n",
    "step-twice": record(1, loss=1.0) + b"\n" + record(1, loss=2.0) + b"\n",
    "step-back": record(5, loss=1.0) + b"\n" + record(3, loss=2.0) + b"\n",
    "stand-in-loss": record(1, loss=1.5, loss_replaced=True) + b"\n",
    "duplicate-key": b'{"v":1,"kind":"train","step":1,"loss":1,"loss":2}\n',
    "no-final-newline": record(1, loss=1.0),
}


@pytest.mark.parametrize("chunk", list(REFUSED.values()), ids=list(REFUSED))
def test_what_the_record_path_has_rules_for_is_refused(chunk):
    assert columnar.parse_columns(chunk) is None


def test_a_clean_chunk_as_columns():
    chunk = b"".join(rf.dumps(r) + b"\n" for r in (
        rf.make_record("train", step=1, time=10.0, loss=2.0, flag=True, note="x", tokens=512),
        rf.make_record("eval", step=1, time=11.0, eval_loss=1.5),
        rf.make_record("train", step=2, loss=1.0, tokens=1024, extra={"a": 1})))
    cols = columnar.parse_columns(chunk)
    assert cols is not None and cols.rows == 3
    got = {k: [list(a) for a in v] for k, v in cols.series.items()}
    assert list(got) == ["train/loss", "train/tokens", "eval/eval_loss"]  # bools, strings, objects: not metrics
    assert got["train/loss"][:2] == [[1.0, 2.0], [2.0, 1.0]] and got["train/tokens"][1] == [512.0, 1024.0]
    assert got["train/loss"][2][0] == 10.0 and math.isnan(got["train/loss"][2][1])
    assert got["eval/eval_loss"] == [[1.0], [1.5], [11.0]]


def test_small_chunks_take_the_record_path(tmp_path, monkeypatch):
    monkeypatch.setattr(columnar, "MIN_CHUNK_BYTES", 1 << 20)
    root = tmp_path / "run"
    write_lines(rf.RunPaths(root).metrics, clean_lines(100))
    assert read(root, True, monkeypatch).columnar_chunks == 0


def test_switched_off_by_the_environment(tmp_path, monkeypatch):
    root = tmp_path / "run"
    write_lines(rf.RunPaths(root).metrics, clean_lines(100))
    assert read(root, False, monkeypatch).columnar_chunks == 0
    assert not columnar.available()
