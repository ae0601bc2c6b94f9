"""The alert suite's LM family (bench/alert_suite.py): real short trainings of the demo's tiny GPT-2 with its
faults injected as the MLP family's are, and what the rules make of them."""
from __future__ import annotations

import math

import pytest

from bench.alert_suite import FAMILIES, Condition, iter_suite, run_one
from collectors.anomaly.rules import EVENT_RULES, Observation, RuleEngine

FAULT_STEP = 40
STEPS = 60


def replay(trace) -> list[tuple[int, str]]:
    eng = RuleEngine()
    out = []
    for r in trace.records:
        for a in eng.observe(Observation(step=r["step"], loss=r["loss"], grad_norm=r["grad_norm"],
                                         learning_rate=r["learning_rate"], weights_changed=r["weights_changed"])):
            if a.rule not in EVENT_RULES:
                out.append((a.step, a.rule))
    return out


def test_lm_runs_log_as_trainer_does_and_their_faults_show() -> None:
    cond = Condition(batch_size=2, log_every=5, schedule="cosine", seed=3, model="lm")
    assert cond.label == "lm-bs2-log5-cosine-s3"
    clean = run_one("clean", cond, None, steps=STEPS)
    boom = run_one("boom", cond, "grad_explosion", fault_step=FAULT_STEP, steps=STEPS)
    nan = run_one("nan", cond, "nan_weights", fault_step=FAULT_STEP, steps=STEPS)
    assert [r["step"] for r in clean.records] == list(range(5, STEPS + 1, 5))
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in clean.records)
    # the same data and weights up to the fault, then x2000 gradients (logged before clipping)
    before = [r for r in clean.records if r["step"] < FAULT_STEP]
    assert before == [r for r in boom.records if r["step"] < FAULT_STEP]
    at = {r["step"]: r for r in boom.records}[FAULT_STEP]
    assert at["grad_norm"] > 500 * {r["step"]: r for r in clean.records}[FAULT_STEP]["grad_norm"]
    assert ("gradient_explosion" in {rule for step, rule in replay(boom) if step == FAULT_STEP})
    assert any(step >= FAULT_STEP and rule == "non_finite_loss" for step, rule in replay(nan))


def test_suite_families_are_checked() -> None:
    assert FAMILIES == ("mlp", "lm")
    with pytest.raises(ValueError, match="unknown suite family 'cnn'"):
        next(iter_suite(quick=True, families=["cnn"]))


def test_bench_scores_catches_lags_and_false_alarms_per_detector() -> None:
    from bench.bench_alerts import evaluate, report

    cond = Condition(batch_size=4, log_every=1, schedule="constant", seed=5, model="lm")
    traces = [run_one("clean-x", cond, None, steps=STEPS),
              run_one("grad_explosion-x", cond, "grad_explosion", fault_step=FAULT_STEP, steps=STEPS)]
    ours, guide = evaluate(traces)
    assert (ours.caught, ours.faults, ours.clean_runs, ours.median_lag) == (1, 1, 1, 0)
    assert guide.detector == "guides' rules as written" and guide.caught == 1
    text = report([ours, guide], 20.0, 10.0)
    assert "Trainboard (defaults)" in text and "1/1" in text and "ratio 2.00" in text
    assert "cost of all rules" not in report([ours, guide])  # a family's own table, without the cost line


def test_the_bench_replays_a_run_without_its_rate() -> None:
    """``--without-rate``: every record loses its learning rate and nothing else, so the same runs are judged
    as a plain loop that logs only its loss and grad norm gives them (no warm-up, no LR rules)."""
    from bench.bench_alerts import replay as score, without_rate

    cond = Condition(batch_size=4, log_every=1, schedule="cosine", seed=5, model="lm")
    trace = run_one("lr_spike-x", cond, "lr_spike", fault_step=FAULT_STEP, steps=STEPS)
    bare = without_rate(trace)
    assert [r["learning_rate"] for r in bare.records] == [None] * len(trace.records)
    assert [{k: v for k, v in r.items() if k != "learning_rate"} for r in bare.records] == [
        {k: v for k, v in r.items() if k != "learning_rate"} for r in trace.records]
    assert all(r["learning_rate"] is not None for r in trace.records)  # the original is left as it was
    assert "lr_sudden_change" in {rule for _, rule in replay(trace)}
    assert "lr_sudden_change" not in {rule for _, rule in replay(bare)}
    assert score(trace, RuleEngine, True).caught  # with its rate the spike is caught at once, by the rate itself
