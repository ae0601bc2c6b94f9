"""``optimizer_stalled``: a training whose updates are lost is caught from its weights, not its noisy loss.

Three layers: the pure rule and the engine on both sides of its limits; :class:`UpdateWatch` on a real
torch model; a real training of the labelled suite and a real Trainer run whose optimizer stops stepping.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors.anomaly import rules as R
from collectors.anomaly.rules import AnomalyConfig, ConvergenceConfig, Observation, RuleEngine
from collectors.anomaly.updatewatch import UpdateWatch


def feed(eng: RuleEngine, changed: list[float | None], every: int = 1, lr: float = 1e-3) -> list[R.Alert]:
    out = []
    for i, c in enumerate(changed, 1):
        out += eng.observe(Observation(step=i * every, loss=2.0, grad_norm=1.0, learning_rate=lr, weights_changed=c))
    return out


def stalls(alerts: list[R.Alert]) -> list[R.Alert]:
    return [a for a in alerts if a.rule == R.Rule.OPTIMIZER_STALLED.value]


@pytest.mark.parametrize("logs,steps,lr,fires", [
    (3, 10, 1e-3, True), (2, 10, 1e-3, False), (3, 9, 1e-3, False), (3, 10, 0.0, False), (3, 10, None, True),
])
def test_rule_both_sides(logs: int, steps: int, lr: float | None, fires: bool) -> None:
    fired, alert = R.optimizer_stalled(logs, steps, 100, lr)
    assert fired is fires
    if fires:
        assert alert.severity == "high" and alert.category == "convergence" and "updates are lost" in alert.message


def test_engine_fires_once_for_a_lasting_stall_from_the_last_step_weights_moved() -> None:
    eng = RuleEngine()
    alerts = feed(eng, [None] + [0.9] * 30 + [0.0] * 40, every=5)
    got = stalls(alerts)
    assert len(got) == 1  # a lasting condition: alerted when it starts
    # weights last moved at log 31 (step 155); unchanged at logs 32, 33, 34: 3 logs spanning 15 steps
    assert got[0].step == 34 * 5 and got[0].metadata["unchanged_steps"] == 15


def test_logging_every_step_needs_ten_steps_so_a_few_skipped_fp16_steps_stay_quiet() -> None:
    # a GradScaler skips a few steps in a row on overflow: three unchanged logs of one step each are not a stall
    assert stalls(feed(RuleEngine(), [None] + [1.0] * 30 + [0.0] * 5 + [1.0] * 30)) == []
    got = stalls(feed(RuleEngine(), [None] + [1.0] * 30 + [0.0] * 12))
    assert len(got) == 1 and got[0].step == 41  # 10 steps after the last change (step 31)


def test_gradient_accumulation_logged_per_micro_batch_is_its_rhythm_not_a_stall() -> None:
    # a plain loop that logs every micro-batch of 16-step accumulation: still for 15 logs, every time
    rhythm = ([0.0] * 15 + [1.0]) * 20
    assert stalls(feed(RuleEngine(), [None] + rhythm)) == []
    # an optimizer that stops stepping for good is still caught, after twice the rhythm's longest pause
    got = stalls(feed(RuleEngine(), [None] + rhythm + [0.0] * 40))
    assert len(got) == 1 and got[0].step == 1 + len(rhythm) + 31


def test_a_training_that_never_stepped_needs_five_times_the_steps() -> None:
    got = stalls(feed(RuleEngine(), [None] + [0.0] * 60))
    assert len(got) == 1 and got[0].metadata["unchanged_steps"] == 50


def test_a_moving_weight_resets_and_a_zero_learning_rate_is_expected_stillness() -> None:
    pattern = ([0.0, 0.0, 0.5] * 20)
    assert stalls(feed(RuleEngine(), [None] + pattern, every=5)) == []
    assert stalls(feed(RuleEngine(), [None] + [0.0] * 40, every=5, lr=0.0)) == []


def test_config_validates_and_zero_turns_it_off_and_the_guides_have_no_such_rule() -> None:
    with pytest.raises(ValueError, match="convergence.stall_logs must be >= 0"):
        ConvergenceConfig(stall_logs=-1)
    with pytest.raises(ValueError, match="convergence.stall_min_steps must be an integer"):
        AnomalyConfig.from_dict({"convergence": {"stall_min_steps": "ten"}})
    off = RuleEngine(AnomalyConfig(convergence=ConvergenceConfig(stall_logs=0)))
    assert stalls(feed(off, [None] + [0.0] * 40, every=5)) == []
    assert stalls(feed(RuleEngine(R.guide_config()), [None] + [0.0] * 40, every=5)) == []


# --------------------------------------------------------------------------- UpdateWatch on a real model

def _model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(32, 4))


def _step(model, opt) -> None:
    import torch

    x = torch.randint(0, 50, (3, 4))
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


def test_update_watch_sees_steps_and_their_absence() -> None:
    import torch

    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    watch = UpdateWatch(model)
    assert watch.sampled == 3 and watch.collect() is None  # the first call only takes the sample
    _step(model, opt)
    assert watch.collect() > 0.5
    x = torch.randint(0, 50, (3, 4))
    model(x).pow(2).mean().backward()  # gradients but no optimizer step: nothing moves
    assert watch.collect() == 0.0


def test_update_watch_never_reads_replaced_storage_as_a_stall() -> None:
    import torch

    model = _model()
    watch = UpdateWatch(model)
    watch.collect()
    model.to(torch.float64)  # new storage for every parameter: the old views would never change
    assert watch.collect() is None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _step(model, opt)
    assert watch.collect() > 0.0


def test_update_watch_samples_are_host_arrays_bf16_included_and_a_nan_weight_counts_as_changed() -> None:
    """The sample is copied to the host at the logged step, so the compare (run before the optimizer step)
    is numpy, never a device copy: bf16 weights (no numpy dtype) are held as fp32, exactly; a weight turned
    NaN reads as changed, twice over (NaN != NaN), which is the non-finite rules' business, not a stall."""
    import numpy as np
    import torch

    model = _model().to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    watch = UpdateWatch(model)
    generation, first = watch.sample()
    assert isinstance(first, np.ndarray) and first.dtype == np.float32
    lin = model[2].weight
    expected = torch.cat([p.detach().reshape(-1)[::max(1, p.numel() // 64)][:64] for p in model.parameters()])
    assert torch.equal(torch.from_numpy(first), expected.float())  # every bf16 value, exactly, in fp32
    assert watch.compare((generation, first)) is None
    _step(model, opt)
    assert watch.compare(watch.sample()) > 0.5
    assert watch.compare(watch.sample()) == 0.0  # no step: nothing moved
    with torch.no_grad():
        lin.fill_(float("nan"))
    nan_share = watch.compare(watch.sample())
    assert 0.0 < nan_share < 1.0  # the Linear's NaNs changed, the embedding's weights did not
    assert watch.compare(watch.sample()) == nan_share  # still NaN: NaN != NaN, never a stall


def test_update_watch_with_nothing_trainable_reports_nothing() -> None:
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    watch = UpdateWatch(model)
    assert watch.sampled == 0 and watch.collect() is None and watch.collect() is None


# --------------------------------------------------------------------------- real trainings

@pytest.mark.integration
@pytest.mark.parametrize("log_every", [1, 5])
def test_suite_plateau_is_caught_within_its_lag_and_the_clean_twin_stays_quiet(log_every: int) -> None:
    from bench.alert_suite import SLOW_LAG, Condition, run_one
    from bench.bench_alerts import DETECTORS, replay

    cond = Condition(batch_size=2, log_every=log_every, schedule="cosine", seed=7)
    faulty = run_one("plateau", cond, "plateau", fault_step=200, steps=320)
    clean = run_one("clean", cond, None, steps=320)
    make, apart = DETECTORS["Trainboard (defaults)"]
    score = replay(faulty, make, apart)
    assert score.caught and score.lag is not None and score.lag <= SLOW_LAG, score
    assert score.false_alarms == 0
    assert replay(clean, make, apart).false_alarms == 0


STALL_FROM = 30


@pytest.mark.integration
def test_trainer_whose_optimizer_stops_stepping_raises_a_high_alert(tmp_path: Path) -> None:
    from transformers import Trainer, TrainerCallback

    from collectors import MonitorCallback
    from collectors.demo import build_demo, training_arguments

    class LoseUpdates(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **_):
            if state.global_step == STALL_FROM - 1:
                optimizer.step = lambda *a, **k: None  # the updates are lost from step STALL_FROM on

    setup = build_demo(seed=0, n_train=400, n_eval=32)
    args = training_arguments(str(tmp_path / "hf"), 60, logging_steps=5, eval_steps=1000)
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, eval_dataset=setup.eval,
                      processing_class=setup.tokenizer,
                      callbacks=[LoseUpdates(), MonitorCallback(base_dir=tmp_path / "run")])
    trainer.train()
    alerts = list(rf.iter_records(rf.RunPaths.of(tmp_path / "run").alerts))
    got = [a for a in alerts if a.get("rule") == "optimizer_stalled"]
    assert got and got[0]["severity"] == "high", [(a.get("rule"), a.get("step")) for a in alerts]
    assert STALL_FROM + 5 <= got[0]["step"] <= STALL_FROM + 20
    assert all(a["step"] >= STALL_FROM for a in alerts if a.get("severity") in ("high", "critical"))


def test_update_watch_samples_on_one_thread_compare_on_another() -> None:
    """The training thread takes the sample (one gather); the writer thread compares it: the verdicts are
    those of collect(), and a sample from before a replaced storage never meets one from after."""
    import threading

    import torch

    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    watch = UpdateWatch(model)
    samples = [watch.sample()]
    _step(model, opt)
    samples.append(watch.sample())
    samples.append(watch.sample())  # no step in between
    model.to(torch.float64)
    samples.append(watch.sample())  # a new storage: a new generation
    out: list = []
    t = threading.Thread(target=lambda: out.extend(watch.compare(s) for s in samples))
    t.start()
    t.join(60)
    assert out[0] is None and out[1] > 0.5 and out[2] == 0.0 and out[3] is None


@pytest.mark.parametrize("log_every", [1, 2, 5])
def test_the_collector_samples_the_weights_at_most_every_few_steps(tmp_path: Path, log_every: int) -> None:
    """A loop that logs every step pays a gather every CHECK_EVERY_STEPS steps, not every step; Trainer's
    5-step logging is sampled at every log."""
    import torch

    from collectors import Monitor
    from collectors.anomaly.updatewatch import CHECK_EVERY_STEPS

    taken: list[int] = []
    real = UpdateWatch.sample

    def counting(self):  # type: ignore[no-untyped-def]
        taken.append(1)
        return real(self)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    UpdateWatch.sample = counting  # type: ignore[method-assign]
    try:
        with Monitor(tmp_path) as mon:
            mon.watch(model, optimizer=opt)
            steps = list(range(log_every, 31, log_every))
            for s in steps:
                _step(model, opt)
                mon.log(s, loss=1.0, grad_norm=1.0, learning_rate=0.1)
    finally:
        UpdateWatch.sample = real  # type: ignore[method-assign]
    gap = max(log_every, CHECK_EVERY_STEPS if log_every < CHECK_EVERY_STEPS else log_every)
    expected = len(range(steps[0], 31, -(-gap // log_every) * log_every))
    assert len(taken) == expected, (len(taken), expected)
