"""Snapshot creation, naming, listing, pin/unpin/delete, retention, path safety and the control files."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors import control
from collectors import snapshots as S

NOW = time.mktime((2025, 11, 12, 14, 30, 22, 0, 0, -1))


def _meta(reason: str = "loss_spike_37.8pct", step: int = 17500) -> dict:
    return S.build_metadata(timestamp=S.format_ts(NOW), reason=reason, step=step, loss=1.0234, accuracy=58.3,
                            triggers=[reason], loss_history=[0.74, 0.73, 0.72, 0.71, 1.02], best_loss=0.6987,
                            best_loss_step=16800)


def _write_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"\0" * 1000)


def _make(run: Path, reason: str = "loss_spike_37.8pct", kind: str = S.KIND_ANOMALY, now: float = NOW, **kw) -> S.SnapshotResult:
    return S.create_snapshot(run, kind=kind, reason=reason, metadata=_meta(reason), status={"step": 1},
                             write_model=_write_weights, now=now, **kw)


def test_guide_layout_and_exact_metadata_fields(tmp_path: Path) -> None:
    res = _make(tmp_path)
    assert res.ok and res.name == "anomaly_20251112_143022_loss_spike_37.8pct"
    d = tmp_path / "snapshots" / res.name
    assert sorted(p.name for p in d.iterdir()) == ["metadata.json", "model", "training_status.json"]
    meta = json.loads((d / "metadata.json").read_text())
    # the guide's nine fields first, then the recovery fields of issue 11 (None when not known)
    assert list(meta) == list(S.METADATA_FIELDS) + list(S.RECOVERY_FIELDS)
    assert meta["weights_step"] is None and meta["last_good"] is None
    assert meta["data_position"] == {"epoch": None, "step_in_epoch": None, "sampler_seed": None}
    assert meta["reason"] == "loss_spike_37.8pct" and meta["timestamp"] == "20251112_143022"
    assert (d / "model" / "model.safetensors").stat().st_size == 1000
    assert not [p for p in (tmp_path / "snapshots").iterdir() if p.name.startswith(".")]


def test_manual_name_and_same_second_collisions_do_not_clobber(tmp_path: Path) -> None:
    names = [_make(tmp_path, kind=S.KIND_MANUAL).name for _ in range(3)]
    assert names == ["manual_20251112_143022", "manual_20251112_143022_2", "manual_20251112_143022_3"]
    a1, a2 = _make(tmp_path), _make(tmp_path)
    assert a2.name == a1.name + "_2"
    assert len(S.list_snapshots(tmp_path)) == 5


def test_failed_writer_leaves_nothing(tmp_path: Path) -> None:
    def boom(d: Path) -> None:
        (d / "part").write_bytes(b"x")
        raise RuntimeError("disk on fire")

    res = S.create_snapshot(tmp_path, kind="anomaly", reason="x", metadata={}, status=None, write_model=boom, now=NOW)
    assert not res.ok and "disk on fire" in res.error
    assert list((tmp_path / "snapshots").iterdir()) == []


def test_low_disk_skips(tmp_path: Path) -> None:
    res = _make(tmp_path, min_free_gb=1e9)
    assert res.skipped and not res.ok and "GB free" in res.error
    assert S.list_snapshots(tmp_path) == []


def test_listing_ignores_temporary_and_foreign_dirs(tmp_path: Path) -> None:
    _make(tmp_path)
    snaps = tmp_path / "snapshots"
    (snaps / ".tmp-snap-999999-abcd" / "model").mkdir(parents=True)
    (snaps / "random_dir").mkdir()
    (snaps / "anomaly_20251112_143022_x.txt").write_text("a file")
    infos = S.list_snapshots(tmp_path)
    assert [i.name for i in infos] == ["anomaly_20251112_143022_loss_spike_37.8pct"]
    i = infos[0]
    assert (i.kind, i.step, i.loss, i.reason, i.pinned, i.problem) == ("anomaly", 17500, 1.0234, "loss_spike_37.8pct", False, None)
    assert i.size_bytes > 1000
    assert S.clean_stale_temps(tmp_path) == [".tmp-snap-999999-abcd"]


def test_pin_blocks_delete_then_unpin_allows(tmp_path: Path) -> None:
    name = _make(tmp_path, reason="best_model_loss_0.6321", pinned=True).name
    assert S.list_snapshots(tmp_path)[0].pinned
    with pytest.raises(S.SnapshotError, match="pinned: unpin it"):
        S.delete_snapshot(tmp_path, name)
    assert not S.set_pinned(tmp_path, name, False).pinned
    S.delete_snapshot(tmp_path, name)
    assert S.list_snapshots(tmp_path) == []
    with pytest.raises(S.SnapshotError, match="no snapshot named"):
        S.delete_snapshot(tmp_path, name)


@pytest.mark.parametrize("name", ["../x", "..", "/etc/passwd", "anomaly_20251112_143022_a/../../b",
                                  ".tmp-snap-1-2", "manual_20251112_143022\x00", "snapshots", "", None, 5,
                                  "manual_2025_1", "anomaly_20251112_143022_a\\b"],
                         ids=["dotdot", "dotdot-only", "absolute", "nested-escape", "temp", "nul", "other", "empty",
                              "none", "int", "bad-ts", "backslash"])
def test_path_traversal_and_bad_names_are_refused(tmp_path: Path, name) -> None:
    _make(tmp_path)
    for fn in (lambda: S.delete_snapshot(tmp_path, name), lambda: S.set_pinned(tmp_path, name, True),
               lambda: S.resolve_snapshot(tmp_path, name)):
        with pytest.raises(S.SnapshotError):
            fn()
    assert len(S.list_snapshots(tmp_path)) == 1


def test_symlinked_snapshot_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True)
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    os.symlink(outside, run / "snapshots" / "manual_20251112_143022")
    with pytest.raises(S.SnapshotError, match="outside"):
        S.delete_snapshot(run, "manual_20251112_143022")
    assert (outside / "model").is_dir()
    assert S.list_snapshots(run) == []


def _info(name: str, ts: str, kind: str = "anomaly", pinned: bool = False) -> S.SnapshotInfo:
    created = time.mktime(time.strptime(ts, S.TS_FORMAT))
    return S.SnapshotInfo(name, Path(name), kind, ts, created, "r", 1, 1.0, None, pinned, None)


def test_plan_prune_count_age_pins_and_manual() -> None:
    infos = [_info(f"anomaly_2025111{d}_000000_x", f"2025111{d}_000000") for d in range(1, 6)]
    infos.append(_info("anomaly_20251110_000000_best", "20251110_000000", pinned=True))
    infos.append(_info("manual_20251109_000000", "20251109_000000", kind="manual"))
    assert S.plan_prune(infos, keep_last=2, max_age_days=None, now=NOW) == [
        "anomaly_20251113_000000_x", "anomaly_20251112_000000_x", "anomaly_20251111_000000_x"]
    assert S.plan_prune(infos, keep_last=0, max_age_days=None, now=NOW) == []
    now = time.mktime((2025, 11, 16, 0, 0, 0, 0, 0, -1))
    assert S.plan_prune(infos, keep_last=0, max_age_days=3.5, now=now) == [
        "anomaly_20251112_000000_x", "anomaly_20251111_000000_x"]


def test_prune_snapshots_on_disk(tmp_path: Path) -> None:
    for i in range(4):
        _make(tmp_path, reason=f"loss_spike_{i}pct", now=NOW + i)
    _make(tmp_path, reason="best_model_loss_0.5", pinned=True, now=NOW + 10)
    removed = S.prune_snapshots(tmp_path, keep_last=2)
    assert len(removed) == 2
    names = [i.name for i in S.list_snapshots(tmp_path)]
    assert len(names) == 3 and any("best_model" in n for n in names)


def test_checkpoints_pick_and_copy(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    for step in (100, 200, 300):
        cp = out / f"checkpoint-{step}"
        cp.mkdir(parents=True)
        (cp / "model.safetensors").write_bytes(str(step).encode())
    (out / "checkpoint-x").mkdir()
    cps = rf.find_checkpoints(out)
    assert [s for s, _ in cps] == [100, 200, 300]
    assert S.pick_checkpoint(cps)[0] == 300
    assert S.pick_checkpoint(cps, 250)[0] == 200
    assert S.pick_checkpoint(cps, 50)[0] == 100
    assert S.pick_checkpoint([], 5) is None
    res = S.snapshot_from_checkpoint(tmp_path / "run", source_dirs=[out], now=NOW)
    assert res.ok and res.name == "manual_20251112_143022"
    assert (res.path / "model" / "model.safetensors").read_bytes() == b"300"
    status = json.loads((res.path / "training_status.json").read_text())
    assert status["snapshot_source"]["checkpoint_step"] == 300


def test_checkpoint_found_through_status_output_dir(tmp_path: Path) -> None:
    run, hf = tmp_path / "run", tmp_path / "hf"
    (hf / "checkpoint-7").mkdir(parents=True)
    (hf / "checkpoint-7" / "w").write_text("w")
    rf.write_json_atomic(rf.RunPaths.of(run).status, {"state": "finished", "step": 7, "config": {"output_dir": str(hf)}})
    assert S.latest_checkpoint(run)[0] == 7
    empty = S.snapshot_from_checkpoint(tmp_path / "nothing")
    assert empty.skipped and "no checkpoint" in empty.error


def test_request_claim_result_round_trip(tmp_path: Path) -> None:
    req = control.request_snapshot(tmp_path)
    assert control.claim_request(tmp_path)["id"] == req["id"]
    assert control.claim_request(tmp_path) is None  # exactly one claimer
    control.write_result(tmp_path, req, S.SnapshotResult(True, "manual_x"), handled_by="test")
    assert control.read_result(tmp_path, req["id"])["name"] == "manual_x"
    assert control.read_result(tmp_path, "other") is None
    rf.RunPaths.of(tmp_path).snapshot_request.write_text("{not json")
    assert control.claim_request(tmp_path)["id"] is None


@pytest.mark.parametrize("status,alive,expected", [
    ({"state": "training", "updated_at": NOW - 5, "pid": 1, "host": "h"}, True, True),
    ({"state": "training", "updated_at": NOW - 5, "pid": 1, "host": "h"}, False, False),
    ({"state": "training", "updated_at": NOW - 500, "pid": 1, "host": "h"}, True, False),
    ({"state": "finished", "updated_at": NOW - 5, "pid": 1, "host": "h"}, True, False),
    ({"state": "evaluating", "updated_at": NOW - 5, "pid": 1, "host": "other"}, False, True),
    (None, True, False),
], ids=["live", "dead-pid", "stale", "finished", "other-host", "no-status"])
def test_training_is_live(status, alive: bool, expected: bool) -> None:
    assert control.training_is_live(status, NOW, host="h", alive=lambda pid: alive) is expected
