"""Units of the run-directory format: encoding, atomic writes, the tailer's edge cases."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from collectors import runformat as rf


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -1.5e-300, 1e308, 3, "x", None, True],
                         ids=["nan", "inf", "-inf", "zero", "tiny", "huge", "int", "str", "none", "bool"])
def test_value_round_trips_exactly(value):
    back = rf.loads(rf.dumps({"a": value, "nested": [value, {"b": value}]}))
    for got in (back["a"], back["nested"][0], back["nested"][1]["b"]):
        if isinstance(value, float) and math.isnan(value):
            assert isinstance(got, float) and math.isnan(got)
        else:
            assert got == value and type(got) is type(value)


def test_non_finite_is_valid_json_for_strict_parsers():
    import json

    data = rf.dumps({"loss": math.nan, "g": math.inf})
    parsed = json.loads(data, parse_constant=lambda c: pytest.fail(f"bare {c} in output"))
    assert parsed == {"loss": "NaN", "g": "Infinity"}


def test_encode_handles_numpy_and_tuples():
    np = pytest.importorskip("numpy")
    out = rf.loads(rf.dumps({"a": np.float32(1.5), "b": (1, 2), "c": np.int64(7), "p": Path("/x")}))
    assert out == {"a": 1.5, "b": [1, 2], "c": 7, "p": "/x"}


def test_jsonl_round_trip_with_records(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    with rf.JsonlWriter(path) as w:
        for i in range(5):
            w.append(rf.make_record(rf.RecordKind.TRAIN, step=i, loss=math.nan if i == 2 else float(i)))
    res = rf.read_new(path, 0)
    assert [r["step"] for r in res.records] == list(range(5))
    assert math.isnan(res.records[2]["loss"]) and res.records[3]["loss"] == 3.0
    assert all(r["v"] == rf.SCHEMA_VERSION and r["kind"] == "train" for r in res.records)
    assert res.offset == path.stat().st_size and res.bad_lines == 0


def test_partial_last_line_is_left_for_later(tmp_path):
    path = tmp_path / "m.jsonl"
    full = rf.dumps(rf.make_record("train", step=1, loss=1.0)) + b"\n"
    partial = rf.dumps(rf.make_record("train", step=2, loss=2.0))
    path.write_bytes(full + partial[:10])
    tail = rf.JsonlTailer(path)
    recs, reset = tail.poll()
    assert [r["step"] for r in recs] == [1] and not reset
    with open(path, "ab") as fh:
        fh.write(partial[10:] + b"\n")
    recs, reset = tail.poll()
    assert [r["step"] for r in recs] == [2] and not reset and tail.bad_lines == 0


@pytest.mark.parametrize("bad", [b"{not json", b"[1,2]", b'"just a string"', b"\xff\xfe garbage", b'{"v":1,"kind":"train"'],
                         ids=["broken", "array", "string", "binary", "unterminated"])
def test_malformed_lines_are_skipped_and_counted(tmp_path, bad):
    path = tmp_path / "m.jsonl"
    good = rf.dumps(rf.make_record("train", step=1, loss=1.0))
    path.write_bytes(good + b"\n" + bad + b"\n\n" + good + b"\n")
    tail = rf.JsonlTailer(path)
    recs, _ = tail.poll()
    assert len(recs) == 2 and tail.bad_lines == 1


def test_unknown_kind_and_newer_version_are_skipped_and_counted(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [rf.make_record("train", step=1), {"v": 1, "kind": "martian", "step": 2},
             {"v": rf.SCHEMA_VERSION + 1, "kind": "train", "step": 3}]
    path.write_bytes(b"".join(rf.dumps(x) + b"\n" for x in lines))
    tail = rf.JsonlTailer(path)
    recs, _ = tail.poll()
    assert [r["step"] for r in recs] == [1] and tail.unknown_lines == 2 and tail.bad_lines == 0


def test_truncation_is_detected_and_file_reread(tmp_path):
    path = tmp_path / "m.jsonl"
    with rf.JsonlWriter(path) as w:
        for i in range(10):
            w.append(rf.make_record("train", step=i))
    tail = rf.JsonlTailer(path)
    assert len(tail.poll()[0]) == 10
    with open(path, "wb") as fh:
        fh.write(rf.dumps(rf.make_record("train", step=100)) + b"\n")
    recs, reset = tail.poll()
    assert reset and [r["step"] for r in recs] == [100]


def test_replacement_is_detected(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(rf.dumps(rf.make_record("train", step=i)) + b"\n" for i in range(3)))
    tail = rf.JsonlTailer(path)
    tail.poll()
    new = tmp_path / "new.jsonl"
    new.write_bytes(b"".join(rf.dumps(rf.make_record("train", step=i)) + b"\n" for i in range(50, 60)))
    os.replace(new, path)
    recs, reset = tail.poll()
    assert reset and [r["step"] for r in recs][0] == 50 and len(recs) == 10


def test_missing_file_is_not_an_error(tmp_path):
    tail = rf.JsonlTailer(tmp_path / "nope.jsonl")
    assert tail.poll() == ([], False)


def test_big_chunk_fast_path_matches_slow_path(tmp_path):
    path = tmp_path / "m.jsonl"
    with rf.JsonlWriter(path) as w:
        for i in range(3000):
            w.append(rf.make_record("train", step=i, loss=math.inf if i == 7 else i * 0.5))
    recs, _ = rf.JsonlTailer(path, chunk_bytes=10_000).poll()
    assert len(recs) == 3000 and recs[7]["loss"] == math.inf and recs[2999]["loss"] == 1499.5


def test_atomic_write_and_read_json(tmp_path):
    target = tmp_path / "status" / "training_status.json"
    rf.write_json_atomic(target, {"step": 1, "loss": math.nan})
    doc, problem = rf.read_json(target)
    assert problem is None and doc["step"] == 1 and math.isnan(doc["loss"])
    assert [p.name for p in target.parent.iterdir()] == ["training_status.json"]  # no temp file left


@pytest.mark.parametrize("content,word", [(None, "does not exist"), (b"", "empty"), (b"{half", "not valid JSON")],
                         ids=["missing", "empty", "half-written"])
def test_read_json_reports_problems_in_words(tmp_path, content, word):
    p = tmp_path / "s.json"
    if content is not None:
        p.write_bytes(content)
    doc, problem = rf.read_json(p)
    assert doc is None and word in problem


def test_discover_runs_single_and_root(tmp_path):
    assert rf.discover_runs(tmp_path) == []
    run = tmp_path / "a"
    rf.write_json_atomic(rf.RunPaths.of(run).status, {"step": 0})
    (tmp_path / "not_a_run").mkdir()
    assert rf.discover_runs(tmp_path) == [run]
    assert rf.discover_runs(run) == [run]


def test_is_within_blocks_traversal(tmp_path):
    base = tmp_path / "base"
    (base / "run").mkdir(parents=True)
    assert rf.is_within(base, base / "run")
    assert not rf.is_within(base, base / ".." / "elsewhere")
    os.symlink("/etc", base / "link")
    assert not rf.is_within(base, base / "link" / "passwd")
