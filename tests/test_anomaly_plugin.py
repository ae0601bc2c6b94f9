"""The in-training AnomalyPlugin through a real Monitor (plain loop, tiny torch model): alerts file,
live-weight snapshots, control files (snapshot now, live thresholds), rate limits, low disk, stop."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from collectors import Monitor, control, runformat as rf, snapshots as S  # noqa: E402
from collectors.anomaly.plugin import AnomalyPlugin, observation_from_record  # noqa: E402
from collectors.anomaly.rules import AnomalyConfig  # noqa: E402

LOSSES = [2.0, 1.8, 1.6, 1.5, 1.45, 1.44, 1.43, 1.42, 1.41, 1.40]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _alerts(run: Path) -> list[dict]:
    """Firings: alert and event records (a new best model is an event), not the incident records."""
    return [r for r in rf.iter_records(rf.RunPaths.of(run).alerts) if r["kind"] in ("alert", "event")]


def _plugin(mon: Monitor) -> AnomalyPlugin:
    return next(p for p in mon.plugins if isinstance(p, AnomalyPlugin))


def test_on_by_default_spike_writes_alert_and_live_snapshot(tmp_path: Path) -> None:
    model = _model()
    with Monitor(tmp_path) as mon:
        mon.watch(model=model)
        for i, loss in enumerate(LOSSES, 1):
            mon.log(i, loss=loss, grad_norm=1.0, lr=1e-3)
        mon.log(11, loss=2.5, grad_norm=1.0, lr=1e-3)
    recs = _alerts(tmp_path)
    spike = [r for r in recs if r["rule"] == "loss_spike"]
    assert len(spike) == 1 and spike[0]["kind"] == "alert" and spike[0]["source"] == "collector"
    infos = {i.reason: i for i in S.list_snapshots(tmp_path)}
    s = infos[spike[0]["reason"]]
    assert s.name.startswith("anomaly_") and s.name.endswith(spike[0]["reason"]) and not s.pinned
    meta = json.loads((s.path / "metadata.json").read_text())
    assert meta["step"] == 11 and meta["loss"] == 2.5 and meta["triggers"] == [spike[0]["reason"]]
    assert meta["loss_history"][-1] == 2.5 and meta["best_loss"] == 1.40 and meta["best_loss_step"] == 10
    from safetensors.torch import load_file

    weights = load_file(s.path / "model" / "model.safetensors")
    assert torch.equal(weights["0.weight"], model[0].weight.detach())
    status = json.loads((s.path / "training_status.json").read_text())
    assert status["step"] == 11 and status["snapshot_source"]["kind"] == "live weights"
    assert meta["weights_step"] == 11 and meta["onset_step"] == 11
    # best-model snapshots: ranked by keep_best (default 3), not pinned (issue 11)
    best = [i for i in S.list_snapshots(tmp_path) if i.reason.startswith("best_model_")]
    assert best and not any(i.pinned for i in best) and len(best) <= 3 and {i.role for i in best} == {"best_model"}


def test_anomaly_false_and_bad_values(tmp_path: Path) -> None:
    assert not any(isinstance(p, AnomalyPlugin) for p in Monitor(tmp_path / "a", anomaly=False).plugins)
    with pytest.raises(ValueError, match="anomaly= must be True, False, an AnomalyConfig or a dict"):
        Monitor(tmp_path / "b", anomaly="yes")
    with pytest.raises(ValueError, match="smart.loss_window must be an integer"):
        Monitor(tmp_path / "c", anomaly={"smart": {"loss_window": "ten"}})
    mon = Monitor(tmp_path / "d", anomaly={"smart": {"loss_spike_threshold": 0.5}})
    assert _plugin(mon).config.smart.loss_spike_threshold == 0.5


def test_min_steps_between_saves_and_best_never_blocked(tmp_path: Path) -> None:
    with Monitor(tmp_path) as mon:
        mon.watch(model=_model())
        step = 0
        for rep in range(2):
            for loss in LOSSES:
                step += 1
                mon.log(step, loss=loss - rep * 0.1)  # new bests in the second round
            step += 1
            mon.log(step, loss=3.0)  # spike at steps 11 and 22: 11 apart < 500
    recs = _alerts(tmp_path)
    assert [r["step"] for r in recs if r["rule"] == "loss_spike"] == [11, 22]
    spikes = [i for i in S.list_snapshots(tmp_path) if i.reason.startswith("loss_spike")]
    assert [i.step for i in spikes] == [11]
    bests = sorted(i.step for i in S.list_snapshots(tmp_path) if i.reason.startswith("best_model"))
    assert any(s > 11 for s in bests)  # the second round's new bests were saved despite the rate limit


def test_snapshot_request_and_live_thresholds(tmp_path: Path) -> None:
    plugin = AnomalyPlugin(control_poll_s=0)
    with Monitor(tmp_path, plugins=[plugin]) as mon:
        mon.watch(model=_model())
        for i, loss in enumerate([1.0] * 6, 1):
            mon.log(i, loss=loss)
        assert not any(r["rule"] == "loss_spike" for r in _alerts(tmp_path))
        # live threshold change: 10 % is a spike now
        rf.write_json_atomic(mon.paths.thresholds, {"smart": {"loss_spike_threshold": 0.05}})
        mon.step_end(6)
        assert plugin.config.smart.loss_spike_threshold == 0.05
        mon.log(7, loss=1.1)
        mon.flush()  # the rules run on the writer thread (issue 12): wait for their alerts
        assert [r["step"] for r in _alerts(tmp_path) if r["rule"] == "loss_spike"] == [7]
        # invalid file: refused, previous values kept, training goes on
        mon.paths.thresholds.write_text(json.dumps({"smart": {"loss_spike_threshold": -3}}))
        mon.step_end(7)
        assert plugin.config.smart.loss_spike_threshold == 0.05
        assert "must be > 0" in plugin.thresholds_problem
        # removed: back to the configured values
        mon.paths.thresholds.unlink()
        mon.step_end(7)
        assert plugin.config.smart.loss_spike_threshold == 0.3
        # snapshot now
        req = control.request_snapshot(tmp_path)
        mon.step_end(8)
        res = control.read_result(tmp_path, req["id"])
        assert res["ok"] and res["name"].startswith("manual_") and res["handled_by"] == "collector"
        assert not mon.paths.snapshot_request.exists()
    manual = [i for i in S.list_snapshots(tmp_path) if i.kind == "manual"]
    assert len(manual) == 1 and (manual[0].path / "model" / "model.safetensors").is_file()
    assert manual[0].metadata["reason"] == "manual" and manual[0].step == 8


def test_low_disk_skips_snapshot_with_alert(tmp_path: Path) -> None:
    with Monitor(tmp_path, anomaly={"snapshots": {"min_free_gb": 1e9}}) as mon:
        mon.watch(model=_model())
        for i, loss in enumerate(LOSSES + [3.0], 1):
            mon.log(i, loss=loss)
    recs = _alerts(tmp_path)
    skipped = [r for r in recs if r["rule"] == "snapshot_skipped"]
    assert skipped and "GB free" in skipped[0]["message"] and skipped[0]["category"] == "snapshot"
    assert S.list_snapshots(tmp_path) == []


def test_grad_norm_and_lr_read_from_model_and_optimizer(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Monitor(tmp_path) as mon:
        mon.watch(model=model, optimizer=opt)
        loss = model(torch.ones(3, 4)).pow(2).mean()
        loss.backward()
        expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
        mon.log(1, loss=loss.item())  # no grad_norm, no lr in the log
    eng = _plugin(mon).engine
    assert list(eng.grad_norms) == [pytest.approx(expected, rel=1e-5)]
    assert eng.lr_points[-1] == (1, 0.05)


def test_stop_on_critical(tmp_path: Path) -> None:
    with Monitor(tmp_path, anomaly={"stop_on_critical": True}) as mon:
        control = SimpleNamespace(should_training_stop=False)
        mon.trainer_control = control
        mon.log(1, loss=1.0)
        assert not control.should_training_stop
        mon.log(2, loss=float("nan"))
    assert control.should_training_stop and _plugin(mon).stop_requested
    assert _alerts(tmp_path)[-1]["rule"] == "non_finite_loss"


def test_state_dict_resumes_engine(tmp_path: Path) -> None:
    with Monitor(tmp_path / "a") as mon:
        for i, loss in enumerate(LOSSES, 1):
            mon.log(i, loss=loss)
        state = _plugin(mon).state_dict()
    fresh = AnomalyPlugin()
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.engine.best_loss == 1.40 and list(fresh.engine.losses) == list(_plugin(mon).engine.losses)


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    with Monitor(tmp_path, main_process=False) as mon:
        for i, loss in enumerate(LOSSES + [5.0], 1):
            mon.log(i, loss=loss)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "snapshots").exists()


@pytest.mark.parametrize("record,expected", [
    ({"kind": "train", "step": 3, "loss": 1.0, "grad_norm": 2.0, "learning_rate": 1e-3},
     {"loss": 1.0, "grad_norm": 2.0, "learning_rate": 1e-3, "accuracy": None}),
    ({"kind": "eval", "step": 3, "eval_loss": 1.0, "eval_accuracy": 0.8}, {"loss": None, "accuracy": 0.8, "eval_loss": 1.0}),
    ({"kind": "eval", "step": 3, "eval_loss": 1.0}, {"loss": None, "accuracy": None, "eval_loss": 1.0}),
    ({"kind": "eval", "step": 3, "eval_runtime": 1.0}, None),
    ({"kind": "summary", "step": 3, "train_loss": 1.0}, None),
    ({"kind": "train", "step": "x", "loss": 1.0}, None),
], ids=["train", "eval-acc", "eval-no-acc", "eval-nothing", "summary", "bad-step"])
def test_observation_from_record(record: dict, expected: dict | None) -> None:
    obs = observation_from_record(record)
    if expected is None:
        assert obs is None
    else:
        assert {k: getattr(obs, k) for k in expected} == expected


def test_config_object_accepted(tmp_path: Path) -> None:
    cfg = AnomalyConfig.from_dict({"gradient": {"explosion_threshold": 2.0}, "noise": {"grad_extreme_ratio": 20.0}})
    with Monitor(tmp_path, anomaly=cfg) as mon:
        for step in range(1, 5):
            mon.log(step, loss=1.0, grad_norm=1.0)  # the noise gate needs a few norms to compare with
        mon.log(5, loss=1.0, grad_norm=30.0)  # early in a run only a blow-up of the norm counts (30x, above 20x)
    assert [r["rule"] for r in _alerts(tmp_path)] == ["gradient_explosion"]


def test_snapshot_is_written_in_background_with_the_weights_of_the_trigger(tmp_path: Path) -> None:
    """The step that triggers only copies the weights; a slow disk write happens on the snapshot thread,
    and the snapshot holds the weights of the trigger even though training changes them right after."""
    import time

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16))
    real_save = model.save_pretrained

    def slow_save(*a, **k):
        time.sleep(1.5)
        return real_save(*a, **k)

    model.save_pretrained = slow_save
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    mon = Monitor(tmp_path, anomaly={"smart": {"best_model_metric": "eval_loss"}}).watch(model, optimizer=opt)
    for i, loss in enumerate(LOSSES, 1):
        mon.log(i, loss=loss)
    t0 = time.perf_counter()
    mon.log(len(LOSSES) + 1, loss=3.0)  # a spike: snapshot of the live weights
    hook_s = time.perf_counter() - t0
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # the training goes on and changes every weight
    assert not torch.equal(model.transformer.wte.weight, expected["transformer.wte.weight"])
    mon.close()  # waits for the queued write
    assert hook_s < 1.0, f"the triggering step waited {hook_s:.2f} s for the disk"
    snaps = [s for s in S.list_snapshots(tmp_path) if s.reason.startswith("loss_spike")]
    assert len(snaps) == 1
    loaded = GPT2LMHeadModel.from_pretrained(snaps[0].path / "model")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # still tied


def test_background_write_failure_becomes_an_alert(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16))

    def broken_save(*a, **k):
        raise OSError(28, "No space left on device")

    model.save_pretrained = broken_save
    mon = Monitor(tmp_path, anomaly={"smart": {"best_model_metric": "eval_loss"}}).watch(model)
    for i, loss in enumerate(LOSSES + [3.0], 1):
        mon.log(i, loss=loss)
    mon.close()
    problems = [a for a in _alerts(tmp_path) if a["rule"] == "snapshot_skipped"]
    assert problems and "No space left" in problems[0]["message"]
    assert not [s for s in S.list_snapshots(tmp_path)] and not list((tmp_path / "snapshots").glob(".tmp-*"))


def test_snapshot_saves_print_no_progress_bar_but_other_bars_and_user_hooks_stay():
    """save_pretrained's "Writing model shards" bar is silenced only inside quiet_progress, in that thread."""
    import threading

    from transformers.utils import logging as hf_logging

    from collectors.anomaly.plugin import quiet_progress

    seen: list[str] = []

    def user_hook(factory, args, kwargs):
        seen.append(kwargs.get("desc", ""))
        return factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(user_hook)
    try:
        with quiet_progress():
            bar = hf_logging.tqdm(range(2), desc="inside")
            assert isinstance(bar, hf_logging.EmptyTqdm) and list(bar) == [0, 1]
            other: list[object] = []
            t = threading.Thread(target=lambda: other.append(hf_logging.tqdm(range(1), desc="other", disable=True)))
            t.start()
            t.join()
            assert not isinstance(other[0], hf_logging.EmptyTqdm)  # another thread keeps its bar
        outside = hf_logging.tqdm(range(1), desc="outside", disable=True)
        assert not isinstance(outside, hf_logging.EmptyTqdm)
        assert "outside" in seen and "inside" not in seen  # the user's hook still runs outside
    finally:
        hf_logging.set_tqdm_hook(previous)
