"""The rolling last-good copy (issue 11): double-buffered, never torn, never overwritten while leased."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from collectors.snapshots import last_good as lg  # noqa: E402


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    m[1].weight = m[0].weight  # tied, as in a language model
    return m


def _bump(m: torch.nn.Module, v: float) -> None:
    with torch.no_grad():
        m[0].weight.fill_(v)


def test_copies_every_n_steps_and_keeps_two() -> None:
    said: list[str] = []
    m = _model()
    rc = lg.RollingCopy(every=5, say=said.append)
    for step in range(0, 16):
        _bump(m, float(step))
        rc.after_step(m, step)
        rc.before_optimizer_step()  # what the pre-optimizer hook does
    assert sorted(rc.steps()) == [10, 15] and rc.copies == 4
    assert len(said) == 1 and "every 5 steps" in said[0] and "MB of CPU memory" in said[0]
    lease = rc.lease(10)
    assert lease is not None and float(lease.state["0.weight"][0, 0]) == 10.0
    assert lease.state["0.weight"] is lease.state["1.weight"]  # tied weights: one buffer
    assert lease.all_finite()
    # the leased buffer is never overwritten: the next copies go to the other one, or are skipped
    for step in (20, 25):
        _bump(m, float(step))
        rc.after_step(m, step)
        rc.before_optimizer_step()
    assert float(lease.state["0.weight"][0, 0]) == 10.0 and sorted(rc.steps()) == [10, 25]
    lease.release()
    _bump(m, 30.0)
    rc.after_step(m, 30)
    rc.before_optimizer_step()
    assert sorted(rc.steps()) == [25, 30]
    assert rc.lease(10) is None  # replaced once released


def test_non_finite_copy_is_recognised_and_large_models_are_skipped() -> None:
    m = _model()
    rc = lg.RollingCopy(every=1, say=lambda _m: None)
    _bump(m, float("nan"))
    rc.after_step(m, 1)
    rc.before_optimizer_step()
    assert not rc.lease(1).all_finite()
    said: list[str] = []
    small = lg.RollingCopy(every=1, max_bytes=10, say=said.append)
    assert not small.after_step(m, 1) and not small.enabled
    assert "rolling copy is off" in said[0] and "rolling_copy_max_gb" in said[0]
    with pytest.raises(ValueError, match="positive number of steps"):
        lg.RollingCopy(every=-1)


def test_a_skipped_snapshot_frees_its_rolling_copy(tmp_path) -> None:
    from collectors import Monitor, runformat as rf
    from collectors.anomaly.plugin import AnomalyPlugin

    cfg = {"snapshots": {"rolling_copy_steps": 2, "min_steps_between_saves": 0, "min_free_gb": 1e6},
           "noise": {"enabled": False}}
    with Monitor(tmp_path, anomaly=cfg) as mon:
        mon.watch(model=_model())
        plugin = next(p for p in mon.plugins if isinstance(p, AnomalyPlugin))
        for i in range(1, 30):
            mon.log(i, loss=2.0 if i % 3 == 0 and i > 5 else 1.0)
            mon.step_end(i)
        assert all(b.leases == 0 for b in plugin.rolling.buffers)  # the floor skipped them: nothing held
        assert plugin.rolling.copies >= 10  # and the copies went on
    skipped = [a for a in rf.iter_records(rf.RunPaths.of(tmp_path).alerts) if a["rule"] == "snapshot_skipped"]
    assert skipped and "free" in skipped[0]["message"]


def test_a_nan_right_after_a_spike_still_saves_its_last_good_state(tmp_path) -> None:
    from collectors import Monitor
    from collectors import snapshots as S

    cfg = {"snapshots": {"rolling_copy_steps": 2}, "noise": {"enabled": False}}  # min_steps_between_saves: 500
    with Monitor(tmp_path, anomaly=cfg) as mon:
        mon.watch(model=_model())
        for i in range(1, 16):
            mon.log(i, loss=[2.0, 1.8, 1.6, 1.5, 1.45, 1.44, 1.43, 1.42, 1.41, 1.40, 2.6, 1.4, 1.4, float("nan"), 1.4][i - 1])
            mon.step_end(i)
    roles = {i.role: i for i in S.list_snapshots(tmp_path)}
    assert "anomaly" in roles and "nan" in roles, [i.name for i in S.list_snapshots(tmp_path)]
    meta = roles["nan"].metadata
    assert meta["weights_step"] is None and meta["last_good"]["source"] == "rolling" and meta["last_good"]["step"] <= 13
