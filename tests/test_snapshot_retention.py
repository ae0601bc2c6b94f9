"""Issue 11's retention: the one planner (pure), the free-disk floor and the budget, then real runs.

* units: :func:`plan_retention` (keep_best by metric, the best always, the just-written never,
  keep_last/max_age, the budget, pinned and manual snapshots never removed but counted, "crowded"),
  :func:`floor_problem`, :func:`resolve_budget`, :func:`budget_problem`, the last-good choice;
* the demo (shortened, see below) leaves at most keep_best + keep_last snapshots inside its budget;
* on a 30 MB tmpfs, snapshots stop at the floor with a ``snapshot_skipped`` alert while the training
  finishes and its own ``save_steps`` checkpoints save;
* a ``--once`` replay of an HF output dir records each snapshot's weight step and never presents
  weights newer than its event.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors import snapshots as S
from collectors.snapshots import last_good as lg
from collectors.snapshots import store as st

ROOT = Path(__file__).resolve().parents[1]
GB = S.BYTES_PER_GB
MB = 1024 * 1024
NOW = time.mktime((2025, 11, 20, 12, 0, 0, 0, 0, -1))


def _info(name: str, *, day: int = 10, role: str = "anomaly", metric: float | None = None, pinned: bool = False,
          size: int = MB) -> S.SnapshotInfo:
    ts = f"202511{day:02d}_000000"
    kind = "manual" if role == "manual" else "anomaly"
    reason = f"best_model_loss_{metric}" if role == "best_model" else name
    return S.SnapshotInfo(name, Path(name), kind, ts, time.mktime(time.strptime(ts, S.TS_FORMAT)), reason, 1,
                          metric, None, pinned, size, role=role, metric=metric)


# --------------------------------------------------------------------------- the planner (pure)

def test_keep_best_ranks_by_metric_and_keeps_the_best() -> None:
    infos = [_info(f"b{i}", day=10 + i, role="best_model", metric=m) for i, m in enumerate([3.0, 2.0, 1.0, 1.5, 0.9])]
    plan = S.plan_retention(infos, S.RetentionPolicy(keep_best=3, keep_last=20), NOW)
    assert sorted(plan.names) == ["b0", "b1"]  # 3.0 and 2.0: not among the 3 lowest
    assert all("keep_best=3" in why for _, why in plan.remove)
    # the one just written is never removed, even when it is not among the best
    plan = S.plan_retention(infos, S.RetentionPolicy(keep_best=3, keep_last=20), NOW, protect=["b0"])
    assert plan.names == ["b1"]
    # keep_best=1 keeps only the best; 0 keeps all
    assert sorted(S.plan_retention(infos, S.RetentionPolicy(keep_best=1), NOW).names) == ["b0", "b1", "b2", "b3"]
    assert S.plan_retention(infos, S.RetentionPolicy(keep_best=0), NOW).names == []


@pytest.mark.parametrize("keep_last,max_age,expected", [
    (2, None, ["a13", "a12", "a11", "a10"]),  # the NaN snapshot (day 15) counts as an anomaly one
    (0, None, []),
    (0, 7.5, ["a12", "a11", "a10"]),  # NOW is the 20th: days 10..12 are older than 7.5 days
    (4, 7.5, ["a12", "a11", "a10"]),
], ids=["keep_last", "keep_all", "max_age", "both"])
def test_anomaly_snapshots_keep_last_and_age(keep_last: int, max_age: float | None, expected: list[str]) -> None:
    infos = [_info(f"a{d}", day=d) for d in (10, 11, 12, 13, 14)]
    infos += [_info("pin", day=1, pinned=True), _info("man", day=1, role="manual"), _info("nan", day=15, role="nan")]
    got = S.plan_retention(infos, S.RetentionPolicy(keep_best=0, keep_last=keep_last, max_age_days=max_age), NOW).names
    assert sorted(got) == sorted(expected)


def test_budget_evicts_oldest_anomaly_then_worst_best_never_pinned_or_the_best() -> None:
    infos = [_info("a1", day=11, size=4 * MB), _info("a2", day=12, size=4 * MB),
             _info("b1", day=10, role="best_model", metric=1.0, size=2 * MB),
             _info("b2", day=13, role="best_model", metric=2.0, size=2 * MB),
             _info("p", day=9, pinned=True, size=3 * MB), _info("m", day=9, role="manual", size=1 * MB)]
    policy = S.RetentionPolicy(keep_best=3, keep_last=20, budget_bytes=9 * MB)
    plan = S.plan_retention(infos, policy, NOW)
    assert plan.used_bytes == 16 * MB
    assert plan.names == ["a1", "a2"] and plan.kept_bytes == 8 * MB  # 16 -> 12 -> 8
    assert all("over the budget" in why for _, why in plan.remove)
    tight = S.plan_retention(infos, S.RetentionPolicy(keep_best=3, keep_last=20, budget_bytes=5 * MB), NOW)
    assert tight.names == ["a1", "a2", "b2"]  # then the worse best; b1 (the best), p and m stay
    assert tight.kept_bytes == 6 * MB > 5 * MB and tight.pinned_bytes == 4 * MB and tight.crowded
    assert not plan.crowded
    # the just-written anomaly snapshot is kept even over the budget
    assert "a2" not in S.plan_retention(infos, policy, NOW, protect=["a2"]).names


def test_next_out_names_what_goes_next() -> None:
    infos = [_info(f"a{d}", day=d) for d in (10, 11)]
    infos += [_info("b1", role="best_model", metric=1.0), _info("b2", role="best_model", metric=2.0),
              _info("b3", role="best_model", metric=3.0)]
    plan = S.plan_retention(infos, S.RetentionPolicy(keep_best=3, keep_last=2), NOW)
    assert plan.names == []
    assert plan.next_out == [("a10", "when the next anomaly snapshot is saved (keep_last=2)"),
                             ("b3", "when a better model is saved (keep_best=3)")]


@pytest.mark.parametrize("free,size,min_free,skip", [
    (100 * GB, GB, 1.0, False),
    (3 * GB, GB, 1.0, False),           # 2 GB left = the floor of 2 x 1 GB: allowed
    (int(2.9 * GB), GB, 1.0, True),     # 1.9 GB left < 2 x 1 GB
    (int(2.5 * GB), GB, 0.5, True),     # twice the snapshot wins over a small min_free_gb
    (int(1.5 * GB), 0, 1.0, False),
    (int(0.5 * GB), 0, 1.0, True),
    (None, GB, 1.0, False),
], ids=["plenty", "at-2x", "below-2x", "2x-over-min", "links-above-min", "links-below-min", "unknown"])
def test_floor_is_max_of_min_free_and_twice_the_snapshot(free, size, min_free, skip) -> None:
    problem = S.floor_problem(free, size, min_free)
    assert (problem is not None) == skip
    if skip:
        assert "floor" in problem and f"min_free_gb={min_free:g}" in problem


def test_resolve_budget_default_scales_with_free_disk() -> None:
    assert S.resolve_budget(None, 40 * GB) == 10 * GB            # 25 % of free
    assert S.resolve_budget(None, 1000 * GB) == 50 * GB          # the cap
    assert S.resolve_budget(2.5, 1000 * GB) == int(2.5 * GB)     # explicit
    assert S.resolve_budget(0, 1000 * GB) is None                # 0: no budget
    assert S.resolve_budget(None, None) == 50 * GB


def test_budget_problem_when_pinned_fill_it() -> None:
    infos = [_info("p", pinned=True, size=8 * MB), _info("a", size=5 * MB)]
    policy = S.RetentionPolicy(budget_bytes=10 * MB)
    assert S.budget_problem(infos, policy, MB) is None
    problem = S.budget_problem(infos, policy, 3 * MB)
    assert problem is not None and "pinned" in problem and "max_total_gb" in problem
    assert S.budget_problem(infos, S.RetentionPolicy(budget_bytes=None), 100 * MB) is None


@pytest.mark.parametrize("limit,cps,rolls,expected", [
    (60, [20, 40, 60], [50], ("checkpoint", 60)),
    (59, [20, 40, 60], [50], ("rolling", 50)),
    (50, [50], [50], ("checkpoint", 50)),            # a tie: the link costs no disk
    (10, [20], [], None),
    (45, [], [0, 50], ("rolling", 0)),
], ids=["checkpoint-newer", "rolling-newer", "tie", "none", "older-rolling"])
def test_choose_last_good(limit, cps, rolls, expected) -> None:
    got = lg.choose_last_good(limit, [(s, Path(f"checkpoint-{s}")) for s in cps], rolls)
    assert (got[:2] if got else None) == expected


@pytest.mark.parametrize("onset,logged,expected", [
    (61, list(range(1, 70)), 60), (30, [5, 10, 15, 20, 25, 30], 25), (3, [], 2)],
    ids=["every-step", "every-5", "no-logs"])
def test_good_limit_is_the_log_before_the_onset(onset, logged, expected) -> None:
    assert lg.good_limit(onset, logged) == expected


@pytest.mark.parametrize("step,epoch,expected", [(30, 0.5, 30), (130, 2.1666666, 10), (100, 2.0, 0), (5, None, None)])
def test_position_for(step, epoch, expected) -> None:
    assert lg.position_for(step, epoch, 7)["step_in_epoch"] == expected
    assert lg.position_for(step, epoch, 7)["sampler_seed"] == 7


def test_retention_file_round_trip_and_garbage(tmp_path: Path) -> None:
    assert S.read_retention(tmp_path) == (None, {}, None)
    S.write_retention(tmp_path, S.RetentionPolicy(keep_best=2, budget_bytes=5 * MB), max_total_gb=None)
    policy, doc, problem = S.read_retention(tmp_path)
    assert policy == S.RetentionPolicy(keep_best=2, budget_bytes=5 * MB) and problem is None and "updated_at" in doc
    (tmp_path / "control" / "snapshot_retention.json").write_text('{"keep_best": "x"')
    policy, _, problem = S.read_retention(tmp_path)
    assert policy is None and problem


def test_legacy_best_model_pins_are_ranked_person_pins_kept(tmp_path: Path) -> None:
    def make(reason: str, loss: float, now: float) -> str:
        meta = S.build_metadata(timestamp="", reason=reason, step=1, loss=loss, accuracy=None, triggers=[reason],
                                loss_history=[], best_loss=loss, best_loss_step=1)
        return S.create_snapshot(tmp_path, kind="anomaly", reason=reason, metadata=meta, status={},
                                 write_model=lambda d: (d / "w").write_bytes(b"x" * 100), now=now).name
    names = [make(f"best_model_loss_{loss}", loss, NOW + i) for i, loss in enumerate([3.0, 2.0, 1.0, 0.5])]
    for n in names[:2]:  # what older versions wrote for every best model
        rf.write_json_atomic(tmp_path / "snapshots" / n / "pinned.json", {"pinned": True, "by": "best_model"})
    S.set_pinned(tmp_path, names[0], True)  # a person pins the worst one
    removed = S.prune_snapshots(tmp_path, 0, policy=S.RetentionPolicy(keep_best=2))
    assert removed == [names[1]]
    kept = {i.name: i for i in S.list_snapshots(tmp_path)}
    assert set(kept) == {names[0], names[2], names[3]} and kept[names[0]].pinned


def test_hard_links_counted_once(tmp_path: Path) -> None:
    src = tmp_path / "checkpoint-5"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"\0" * 10_000)
    (src / "optimizer.pt").write_bytes(b"\0" * 20_000)
    meta = S.build_metadata(timestamp="", reason="x", step=5, loss=1.0, accuracy=None, triggers=["x"],
                            loss_history=[], best_loss=None, best_loss_step=None)
    res = S.create_snapshot(tmp_path / "run", kind="anomaly", reason="loss_spike_1pct", metadata=meta, status={},
                            write_model=lambda d: S.copy_tree_linked(src, d),
                            write_extra=lambda tmp: lg.link_checkpoint(src, tmp / "last_good"))
    assert res.ok
    assert not (res.path / "last_good" / "optimizer.pt").exists()  # left out unless save_optimizer
    size = S.list_snapshots(tmp_path / "run")[0].size_bytes
    assert 30_000 <= size < 31_000  # model/ and last_good/ share the checkpoint's inodes


def _listed(run: Path) -> list[tuple]:
    """What a listing says of each snapshot, as comparable rows."""
    return [(i.name, i.pinned, i.size_bytes, i.loss, i.metadata.get("step")) for i in S.list_snapshots(run)]


def _fresh_listing(run: Path) -> list[tuple]:
    """What a listing with nothing remembered reads from disk (the cache emptied first)."""
    st._listing_cache.clear()
    return _listed(run)


def test_listing_remembers_unchanged_snapshots_and_sees_every_change(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def make(reason: str, loss: float, nbytes: int, now: float) -> str:
        meta = S.build_metadata(timestamp="", reason=reason, step=int(now - NOW), loss=loss, accuracy=None,
                                triggers=[reason], loss_history=[], best_loss=loss, best_loss_step=1)
        return S.create_snapshot(run, kind="anomaly", reason=reason, metadata=meta, status={},
                                 write_model=lambda d: (d / "w").write_bytes(b"x" * nbytes), now=now).name

    def listed() -> list[tuple]:
        return _listed(run)

    a = make("best_model_loss_2.0", 2.0, 1000, NOW + 1)
    b = make("loss_spike_40pct", 1.5, 3000, NOW + 2)
    first = listed()
    assert first == _fresh_listing(run) and {r[0] for r in first} == {a, b}
    reads = []
    real_read = st.read_snapshot
    st.read_snapshot = lambda path, **kw: reads.append(path.name) or real_read(path, **kw)  # type: ignore[assignment]
    try:
        assert listed() == first and reads == []  # unchanged: nothing read again
        S.set_pinned(run, b, True)  # a person pins one: pinned.json appears in its directory
        assert listed() == _fresh_listing(run) and dict((r[0], r[1]) for r in listed())[b] is True
        S.set_pinned(run, b, False)
        assert listed() == _fresh_listing(run) and dict((r[0], r[1]) for r in listed())[b] is False
        meta_path = run / "snapshots" / a / rf.SNAPSHOT_METADATA
        doc = json.loads(meta_path.read_text())
        doc["loss"] = 1.25
        meta_path.write_text(json.dumps(doc))  # edited in place, not replaced: same inode
        assert [r for r in listed() if r[0] == a][0][3] == 1.25
        c = make("loss_spike_90pct", 3.0, 5000, NOW + 3)  # a new one, then one deleted
        S.delete_snapshot(run, a)
        assert listed() == _fresh_listing(run) and {r[0] for r in listed()} == {b, c}
        # a directory replaced under the same name (another inode) is read anew, sizes included
        doomed = run / "snapshots" / b
        os.rename(doomed, run / "snapshots" / ".gone")
        twin = make("loss_spike_40pct", 1.5, 7000, NOW + 2)
        assert twin == b and listed() == _fresh_listing(run)
        assert [r for r in listed() if r[0] == b][0][2] > 7000  # the new directory's weights, not the old 3,000 B
    finally:
        st.read_snapshot = real_read  # type: ignore[assignment]
    sized = S.list_snapshots(run, with_size=False)  # a listing without sizes, then one with: sizes are there
    assert all(i.size_bytes is not None for i in S.list_snapshots(run)) and len(sized) == 2


def test_listing_returns_its_own_objects(tmp_path: Path) -> None:
    meta = S.build_metadata(timestamp="", reason="x", step=5, loss=1.0, accuracy=None, triggers=["x"],
                            loss_history=[], best_loss=None, best_loss_step=None)
    S.create_snapshot(tmp_path, kind="anomaly", reason="loss_spike_1pct", metadata=meta, status={},
                      write_model=lambda d: (d / "w").write_bytes(b"x"))
    one = S.list_snapshots(tmp_path)[0]
    one.pinned = True  # a caller changing its copy changes no later listing
    assert S.list_snapshots(tmp_path)[0].pinned is False


# --------------------------------------------------------------------------- real runs

def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _demo(base: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "collectors.demo", "--base-dir", str(base), "--no-spectral",
                           "--samples-every", "0", *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


DEMO_STEPS = 300
"""The retention demo is shortened from app.py's 3,000 steps (about 18 minutes on 2 loaded cores) to
300, with evals every 10 steps and an LR spike, so it makes as many best-model and anomaly snapshots."""


@pytest.mark.integration
def test_demo_leaves_at_most_keep_best_plus_keep_last_inside_the_budget(tmp_path: Path) -> None:
    budget_gb = 0.004  # about 4 MB: room for ~4 of the demo's snapshots (0.6 MB, 1.2 MB with last_good/)
    proc = _demo(tmp_path, "--max-steps", str(DEMO_STEPS), "--eval-steps", "10",
                 "--inject-lr-spike", str(DEMO_STEPS // 2),
                 "--keep-last", "2", "--min-steps-between-saves", "0", "--max-total-gb", str(budget_gb))
    assert "last-good rolling copy of the weights every 50 steps" in proc.stderr  # the memory cost, said once
    assert proc.stderr.count("last-good rolling copy") == 1
    snaps = S.list_snapshots(tmp_path)
    alerts = list(rf.iter_records(rf.RunPaths.of(tmp_path).alerts))
    bests = [a for a in alerts if a["rule"] == "best_model"]
    assert len(bests) > 3, "the demo must make more best models than are kept"
    assert any(a["rule"] in ("loss_spike", "gradient_explosion") for a in alerts)
    assert len(snaps) <= 3 + 2, [s.name for s in snaps]
    assert sum(s.size_bytes for s in snaps) <= budget_gb * GB
    kept_best = [s for s in snaps if s.role == "best_model"]
    assert kept_best and min(s.metric for s in kept_best) == pytest.approx(min(a["value"] for a in bests), rel=1e-3)
    doc = json.loads((tmp_path / "control" / "snapshot_retention.json").read_text())
    assert doc["keep_best"] == 3 and doc["keep_last"] == 2 and doc["budget_bytes"] == int(budget_gb * GB)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a 30 MB tmpfs here (needs root and mount rights): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.integration
def test_snapshots_stop_at_the_floor_training_and_its_checkpoints_go_on(small_tmpfs: Path) -> None:
    base = small_tmpfs / "run"
    # every best model saved (keep_best 0, no budget) with a floor of 24 GiB/1000 (about 25 MB) of the 30 MB:
    # the training's checkpoints (about 2 MB each) and a few snapshots (0.6 MB) bring the disk to the floor
    _demo(base, "--max-steps", "120", "--eval-steps", "5", "--save-steps", "20", "--save-total-limit", "2",
          "--keep-best", "0", "--max-total-gb", "0", "--min-free-gb", "0.024", "--min-steps-between-saves", "0",
          "--rolling-copy-steps", "0")
    alerts = list(rf.iter_records(rf.RunPaths.of(base).alerts))
    skipped = [a for a in alerts if a["rule"] == "snapshot_skipped"]
    assert skipped, [a["rule"] for a in alerts]
    assert skipped[0]["severity"] == "high" and "below the floor" in skipped[0]["message"]
    saved = S.list_snapshots(base)
    assert saved, "some snapshots fit before the floor"
    free = S.store.free_bytes(base)
    assert free is not None and free > 0
    status, _ = rf.read_json(rf.RunPaths.of(base).status)
    assert status["state"] == "finished"
    cps = rf.find_checkpoints(base / "hf_output")
    assert [s for s, _ in cps][-1] == 120 and (cps[-1][1] / "model.safetensors").stat().st_size > 0


def _hf_dir(tmp: Path) -> Path:
    """An HF output dir: falling losses (a best model at most logs), a spike at 55, checkpoints 20 and 50."""
    losses = [3.0, 2.6, 2.2, 1.9, 1.7, 1.6, 1.5, 1.45, 1.42, 1.35]
    out = tmp / "hf"
    history = [{"step": 5 * (i + 1), "loss": l, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.05 * (i + 1)}
               for i, l in enumerate(losses)]
    history.append({"step": 55, "loss": 7.0, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.55})
    for step in (20, 50):
        cp = out / f"checkpoint-{step}"
        cp.mkdir(parents=True)
        (cp / "model.safetensors").write_text(f"weights-{step}")
        (cp / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 100,
                                                            "log_history": [h for h in history if h["step"] <= step]}))
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 55, "log_history": history}))
    return out


@pytest.mark.integration
def test_once_replay_records_weight_steps_never_newer(tmp_path: Path) -> None:
    out = _hf_dir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "collectors.anomaly.smart_monitor", "--base-dir", str(out), "--once",
                           "--keep-best", "0"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    snaps = S.list_snapshots(out)
    assert len(snaps) >= 4
    held = set()
    for s in snaps:
        meta = json.loads((s.path / "metadata.json").read_text())
        ws = meta["weights_step"]
        if ws is None:  # no checkpoint at or before the event: metadata only, and it says so
            assert not (s.path / "model").exists() and "no checkpoint-* at or before step" in (meta["last_good_missing"] or "")
            assert s.step < 20
        else:
            assert ws <= s.step, (s.name, ws)
            assert (s.path / "model" / "model.safetensors").read_text() == f"weights-{ws}"
            held.add(ws)
    assert held == {20, 50}
    spike = [s for s in snaps if s.reason.startswith("loss_spike")]
    assert len(spike) == 1
    meta = json.loads((spike[0].path / "metadata.json").read_text())
    assert meta["weights_step"] == 50 and meta["last_good"]["step"] == 50 and meta["onset_step"] == 55
    assert meta["data_position"] == {"epoch": 0.5, "step_in_epoch": 50, "sampler_seed": None}
    early = [s for s in snaps if s.role == "best_model" and s.step < 20]
    assert early and all(not (s.path / "model").exists() for s in early)  # never checkpoint-50 under step 5's loss
