"""Unit tests of the pure anomaly rules: both sides of every threshold, the guides' worked examples,
schedules that must not fire, NaN/Inf, configuration validation and the engine's repeat gating."""
from __future__ import annotations

import math
import random

import pytest

from collectors.anomaly import rules as R
from collectors.anomaly.rules import AnomalyConfig, Observation, RuleEngine, SmartConfig


# --------------------------------------------------------------------------- Smart Monitor rules

@pytest.mark.parametrize("current,fires", [(0.974, False), (0.975, False), (0.976, True), (1.5, True)],
                         ids=["below", "at", "just-above", "far-above"])
def test_loss_spike_worked_example_threshold(current: float, fires: bool) -> None:
    # average 0.75, threshold 0.3 → fires above 0.975
    res = R.loss_spike([0.75] * 5, current, step=10, threshold=0.3)
    assert res.fired is fires
    if fires:
        assert res.alert.threshold == pytest.approx(0.975)
        assert res.alert.rule == "loss_spike" and res.alert.severity == "high"


def test_loss_spike_reason_string_of_the_guide() -> None:
    fired, alert = R.loss_spike([0.74] * 5, 1.02, step=17500)
    assert fired and alert.reason == "loss_spike_37.8pct"
    assert alert.step == 17500 and alert.value == 1.02


def test_loss_spike_uses_only_last_five_before_current() -> None:
    # old huge values outside the last 5 must not raise the average
    hist = [10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert R.loss_spike(hist, 1.31, step=1).fired
    assert not R.loss_spike(hist, 1.29, step=1).fired


@pytest.mark.parametrize("n,fires", [(2, False), (3, True)], ids=["too-little-history", "enough-history"])
def test_loss_spike_needs_history(n: int, fires: bool) -> None:
    assert R.loss_spike([1.0] * n, 2.0, step=1).fired is fires


@pytest.mark.parametrize("current,fires", [(65.0, False), (64.9, True), (62.0, True), (70.0, False)],
                         ids=["at-limit", "just-below", "guide-example", "small-drop"])
def test_accuracy_drop_threshold(current: float, fires: bool) -> None:
    res = R.accuracy_drop([75.0] * 5, current, step=3, threshold=10)
    assert res.fired is fires


def test_accuracy_drop_reason_string() -> None:
    fired, alert = R.accuracy_drop([75.0] * 5, 62.0, step=1)
    assert fired and alert.reason == "accuracy_drop_13.0pct"


@pytest.mark.parametrize("value,expected", [(0.75, 75.0), (1.0, 100.0), (62.0, 62.0), (0.0, 0.0)])
def test_accuracy_percent(value: float, expected: float) -> None:
    assert R.accuracy_percent(value) == expected


@pytest.mark.parametrize("current,fires", [(0.6589 * 0.981, False), (0.6589 * 0.979, True), (0.6321, True), (0.66, False)],
                         ids=["1.9pct-better", "2.1pct-better", "guide-example", "worse"])
def test_best_model_needs_two_percent(current: float, fires: bool) -> None:
    assert R.best_model(0.6589, current, step=5).fired is fires


def test_best_model_reason_and_first_value() -> None:
    assert not R.best_model(None, 1.0, step=1).fired  # the first loss only sets the best
    fired, alert = R.best_model(0.6589, 0.6321, step=144200)
    assert fired and alert.reason == "best_model_loss_0.6321" and alert.severity == "low"
    assert alert.message.startswith("New best model: loss 0.6321") and alert.metadata["metric"] == "loss"


def test_best_model_on_eval_loss_says_so_in_message_and_metadata() -> None:
    eng = RuleEngine()
    eng.expect_eval = True
    alerts = [a for o in (Observation(step=10, eval_loss=2.0), Observation(step=20, eval_loss=1.0))
              for a in eng.observe(o) if a.rule == "best_model"]
    assert len(alerts) == 1 and alerts[0].reason == "best_model_loss_1.0000"
    assert alerts[0].message.startswith("New best model: eval loss 1.0000") and alerts[0].metadata["metric"] == "eval_loss"


@pytest.mark.parametrize("rises,fires", [(7, False), (8, True), (9, True)], ids=["7of9", "8of9", "9of9"])
def test_divergence_fraction(rises: int, fires: bool) -> None:
    vals = [1.0]
    for i in range(9):
        vals.append(vals[-1] + 0.1 if i < rises else vals[-1] - 0.05)
    res = R.divergence(vals, step=10)
    assert res.fired is fires
    if fires:
        assert res.alert.reason == "divergence_detected"


def test_divergence_needs_full_window() -> None:
    assert not R.divergence([1, 2, 3, 4, 5], step=5)[0]


@pytest.mark.parametrize("value,fires", [(math.nan, True), (math.inf, True), (-math.inf, True), (1.0, False), (0.0, False)],
                         ids=["nan", "inf", "-inf", "one", "zero"])
@pytest.mark.parametrize("name", ["loss", "grad_norm"])
def test_non_finite_is_critical(name: str, value: float, fires: bool) -> None:
    res = R.non_finite(name, value, step=1)
    assert res.fired is fires
    if fires:
        assert res.alert.severity == "critical"
        assert res.alert.rule == ("non_finite_loss" if name == "loss" else "non_finite_grad_norm")


# --------------------------------------------------------------------------- gradient rules

@pytest.mark.parametrize("norm,fires", [(10.0, False), (10.0001, True), (9.9, False), (15.2341, True)])
def test_gradient_explosion(norm: float, fires: bool) -> None:
    res = R.gradient_explosion(norm, step=150)
    assert res.fired is fires
    if fires:
        assert res.alert.severity == "critical" and res.alert.category == "gradient"
        assert res.alert.message == f"Gradient explosion detected: norm={norm:.4f} > 10.0"


@pytest.mark.parametrize("norm,fires", [(1e-6, False), (0.99e-6, True), (0.0, True), (1e-3, False)])
def test_gradient_vanishing(norm: float, fires: bool) -> None:
    res = R.gradient_vanishing(norm, step=1)
    assert res.fired is fires
    if fires:
        assert res.alert.severity == "high"


@pytest.mark.parametrize("factor,fires", [(1.0, True), (3.6, True), (3.7, False)])  # std/mean ≈ 3.63
def test_gradient_variance(factor: float, fires: bool) -> None:
    norms = [1.0] * 19 + [100.0]  # std ≈ 21.6, mean ≈ 5.95
    assert R.gradient_variance(norms, step=1, factor=factor).fired is fires


def test_gradient_variance_steady_norms_do_not_fire() -> None:
    rng = random.Random(0)
    norms = [1.0 + rng.uniform(-0.3, 0.3) for _ in range(100)]
    assert not R.gradient_variance(norms, step=1).fired
    assert not R.gradient_variance([1.0, 100.0], step=1).fired  # too few samples


# --------------------------------------------------------------------------- learning-rate rules

@pytest.mark.parametrize("lr,rule", [(1.0, None), (1.01, "lr_too_high"), (1e-8, None), (0.9e-8, "lr_too_low"),
                                     (0.0, None), (3e-4, None)],
                         ids=["at-max", "above-max", "at-min", "below-min", "exact-zero", "normal"])
def test_lr_out_of_range(lr: float, rule: str | None) -> None:
    res = R.lr_out_of_range(lr, step=1)
    assert res.fired is (rule is not None)
    if rule:
        assert res.alert.rule == rule


def _schedule(kind: str, total: int = 1000, peak: float = 3e-4, warmup: int = 50) -> list[float]:
    out = []
    for s in range(total):
        if kind == "linear_warmup":
            out.append(peak * min(1.0, s / warmup))
        elif kind == "warmup_cosine":
            out.append(peak * s / warmup if s < warmup else
                       peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
        elif kind == "warmup_linear_decay":
            out.append(peak * s / warmup if s < warmup else peak * max(0.0, (total - s) / (total - warmup)))
        elif kind == "step_decay":
            out.append(peak * (0.1 ** (s // 300)))
        elif kind == "constant":
            out.append(peak)
        elif kind == "inverse_sqrt":
            out.append(peak / math.sqrt(max(s, 1)))
    return out


@pytest.mark.parametrize("kind", ["linear_warmup", "warmup_cosine", "warmup_linear_decay", "step_decay", "constant",
                                  "inverse_sqrt"])
@pytest.mark.parametrize("every", [1, 5, 25], ids=["log-every-1", "log-every-5", "log-every-25"])
def test_normal_schedules_never_fire_sudden_change(kind: str, every: int) -> None:
    eng = RuleEngine()
    lrs = _schedule(kind)
    fired = []
    for s in range(every, len(lrs), every):
        fired += [a for a in eng.observe(Observation(step=s, learning_rate=lrs[s])) if a.rule.startswith("lr_")]
    assert fired == [], [a.message for a in fired]


@pytest.mark.parametrize("factor,fires", [(1.2, False), (1.5, True), (100.0, True)])
def test_lr_sudden_change_on_constant_lr(factor: float, fires: bool) -> None:
    pts = [(1, 1e-3), (2, 1e-3)]
    # excess = (factor-1) relative to the peak 1e-3: fires above 0.3
    assert R.lr_sudden_change(pts, 3, 1e-3 * factor).fired is fires


def test_lr_spike_x100_during_cosine_fires_once_then_the_drop_does_not() -> None:
    eng = RuleEngine()
    lrs = _schedule("warmup_cosine")
    fired_steps = []
    for s in range(5, 1000, 5):
        lr = lrs[s] * (100 if 500 <= s < 515 else 1)
        fired_steps += [s for a in eng.observe(Observation(step=s, learning_rate=lr)) if a.rule == "lr_sudden_change"]
    assert fired_steps == [500]


@pytest.mark.parametrize("previous,fires", [(None, True), (1e-9, True), (2e-9, False)],
                         ids=["first", "held", "decaying"])
def test_lr_too_low_only_when_not_decaying(previous: float | None, fires: bool) -> None:
    assert R.lr_out_of_range(1e-9, step=2, previous=previous).fired is fires


def test_lr_sudden_change_needs_two_points() -> None:
    assert not R.lr_sudden_change([(1, 1e-3)], 2, 1.0).fired


# --------------------------------------------------------------------------- batch size, convergence

@pytest.mark.parametrize("after,fires,severity", [(1.09, False, None), (1.11, True, "medium"), (0.85, True, "low"),
                                                  (0.95, False, None)])
def test_batch_size_impact(after: float, fires: bool, severity: str | None) -> None:
    res = R.batch_size_impact([1.0] * 20, [after] * 20, 32, 64, step=40, threshold=0.1)
    assert res.fired is fires
    if fires:
        assert res.alert.severity == severity and res.alert.metadata["new_batch_size"] == 64


def test_engine_batch_size_change_evaluated_after_window() -> None:
    eng = RuleEngine(AnomalyConfig.from_dict({"batch_size": {"window_size": 5}}))
    alerts = []
    for s in range(1, 11):
        alerts += eng.observe(Observation(step=s, loss=1.0, batch_size=32))
    for s in range(11, 16):
        alerts += eng.observe(Observation(step=s, loss=1.5, batch_size=8))
    impact = [a for a in alerts if a.rule == "batch_size_impact"]
    assert len(impact) == 1 and impact[0].step == 15 and impact[0].value == pytest.approx(0.5)


@pytest.mark.parametrize("rate_per_half,rule", [(0.0, "convergence_plateau"), (0.0005, "convergence_plateau"),
                                                (0.002, None), (0.2, None), (-0.05, "convergence_plateau"),
                                                (-0.11, "convergence_divergence")],
                         ids=["flat", "tiny-gain", "small-gain", "big-gain", "slow-rise", "rise"])
def test_convergence(rate_per_half: float, rule: str | None) -> None:
    window = [1.0] * 25 + [1.0 - rate_per_half] * 25
    res = R.convergence(window, step=50)
    assert (res.alert.rule if res.fired else None) == rule


def test_convergence_needs_full_window() -> None:
    assert not R.convergence([1.0] * 49, step=49).fired


# --------------------------------------------------------------------------- reward rules

def test_calibration_score_perfect_and_poor() -> None:
    rng = random.Random(1)
    ps = [rng.random() for _ in range(4000)]
    ys = [1.0 if rng.random() < p else 0.0 for p in ps]
    assert R.calibration_score(ps, ys) > 0.95
    assert R.calibration_score([0.95] * 100, [0.0] * 100) == pytest.approx(0.05)


@pytest.mark.parametrize("score,fires", [(0.7, False), (0.69, True)])
def test_calibration_poor(score: float, fires: bool) -> None:
    assert R.calibration_poor(score, step=1).fired is fires


@pytest.mark.parametrize("last,fires", [(0.71, False), (0.69, True), (0.89, False), (0.91, True)],
                         ids=["down-0.09", "down-0.11", "up-0.09", "up-0.11"])
def test_calibration_drift(last: float, fires: bool) -> None:
    assert R.calibration_drift([0.8, 0.8, 0.8, 0.8, 0.8, last], step=1).fired is fires


def test_reward_distribution_drift_threshold_and_noise() -> None:
    rng = random.Random(2)
    ref = [rng.gauss(0.0, 1.0) for _ in range(500)]
    same = [rng.gauss(0.0, 1.0) for _ in range(500)]
    shifted = [v + 0.5 for v in same]
    assert not R.reward_distribution_drift(ref, same, step=1).fired   # noise only
    assert R.reward_distribution_drift(ref, shifted, step=1).fired     # 0.5 std shift
    assert not R.reward_distribution_drift(ref, shifted, step=1, threshold=0.6).fired


def test_probabilities_and_outcomes() -> None:
    assert R.to_probabilities([0.2, 0.9]) == [0.2, 0.9]
    assert R.to_probabilities([0.0, 2.0])[0] == pytest.approx(0.5)
    assert R.to_outcomes([0, 1, 1]) == [0.0, 1.0, 1.0]
    assert R.to_outcomes([-0.3, 2.5]) == [0.0, 1.0]


# --------------------------------------------------------------------------- engine

def test_engine_smart_sequence_spike_best_and_nan_do_not_poison_history() -> None:
    eng = RuleEngine(R.guide_config())  # the guide's rules as written: a spike after 4 values
    out = []
    for s, loss in enumerate([1.0, 0.9, 0.8, 0.75, 0.75, 0.75, 0.75, math.nan, 1.02], start=1):
        out += eng.observe(Observation(step=s, loss=loss))
    reasons = [a.reason for a in out]
    assert "non_finite_loss" in reasons
    assert reasons[-1] == "loss_spike_34.2pct"  # average of 0.8 and 0.75 ×4 = 0.76; the NaN is skipped
    assert eng.best_loss == 0.75 and eng.best_loss_step == 4


def test_engine_level_rule_repeats_only_every_n() -> None:
    eng = RuleEngine(R.guide_config())  # a norm of 50 from the first step: above the guide's fixed limit
    n = 120
    fired = [s for s in range(1, n + 1) for a in eng.observe(Observation(step=s, grad_norm=50.0))
             if a.rule == "gradient_explosion"]
    assert fired == [1, 51, 101]
    assert [a.rule for a in eng.observe(Observation(step=n + 1, grad_norm=1.0))] == []
    assert [a.rule for a in eng.observe(Observation(step=n + 2, grad_norm=50.0))] == ["gradient_explosion"]


def test_engine_state_dict_round_trip_and_set_config_keeps_history() -> None:
    eng = RuleEngine(R.guide_config())
    for s in range(1, 8):
        eng.observe(Observation(step=s, loss=1.0 / s, grad_norm=1.0, learning_rate=1e-3))
    other = RuleEngine(R.guide_config())
    other.load_state_dict(eng.state_dict())
    assert other.state_dict() == eng.state_dict()
    eng.set_config(AnomalyConfig.from_dict({"smart": {"loss_spike_threshold": 0.01}, "noise": {"enabled": False}}))
    assert list(eng.losses) == list(other.losses)
    avg = R.recent_average(list(eng.losses))
    assert [a.rule for a in eng.observe(Observation(step=9, loss=avg * 1.05))] == ["loss_spike"]
    assert [a.rule for a in other.observe(Observation(step=9, loss=avg * 1.05))] == []  # default 0.3


def test_live_threshold_change_changes_decision() -> None:
    eng = RuleEngine()
    for s in range(1, 6):
        eng.observe(Observation(step=s, loss=1.0))
    assert eng.observe(Observation(step=6, loss=1.2)) == []
    eng.set_config(AnomalyConfig.from_dict({"smart": {"loss_spike_threshold": 0.1}}))
    assert [a.rule for a in eng.observe(Observation(step=7, loss=1.25))] == ["loss_spike"]


# --------------------------------------------------------------------------- config validation

@pytest.mark.parametrize("overrides,needle", [
    ({"smart": {"loss_spike_threshold": -1}}, "smart.loss_spike_threshold must be > 0"),
    ({"smart": {"loss_spike_threshold": "a"}}, "smart.loss_spike_threshold must be a finite number"),
    ({"smart": {"loss_window": 2.5}}, "smart.loss_window must be an integer"),
    ({"smart": {"nope": 1}}, "unknown key smart.nope"),
    ({"bogus": {}}, "unknown thresholds section 'bogus'"),
    ({"gradient": {"vanishing_threshold": 20.0}}, "vanishing_threshold must be below"),
    ({"learning_rate": {"min_lr": 2.0}}, "min_lr must be below"),
    ({"snapshots": {"min_steps_between_saves": -5}}, "min_steps_between_saves must be >= 0"),
    ({"stop_on_critical": "yes"}, "stop_on_critical must be true or false"),
    ({"smart": {"accuracy_drop_threshold": math.nan}}, "finite number"),
], ids=["negative", "string", "float-window", "unknown-key", "unknown-section", "vanish-above-explode",
        "min-above-max", "negative-steps", "bool", "nan"])
def test_config_validation_messages(overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        AnomalyConfig.from_dict(overrides)


def test_config_defaults_are_the_guides() -> None:
    c = AnomalyConfig()
    assert (c.smart.loss_spike_threshold, c.smart.accuracy_drop_threshold, c.smart.loss_window) == (0.3, 10.0, 10)
    assert (c.gradient.explosion_threshold, c.gradient.vanishing_threshold, c.gradient.window_size) == (10.0, 1e-6, 100)
    assert (c.learning_rate.change_threshold, c.learning_rate.min_lr, c.learning_rate.max_lr) == (0.3, 1e-8, 1.0)
    assert (c.batch_size.performance_threshold, c.batch_size.window_size) == (0.1, 20)
    assert (c.convergence.plateau_threshold, c.convergence.plateau_window) == (0.001, 50)
    assert (c.reward_drift.drift_threshold, c.reward_drift.calibration_threshold) == (0.1, 0.7)
    assert c.snapshots.min_steps_between_saves == 500 and c.stop_on_critical is False
    assert AnomalyConfig.from_dict(c.to_dict()) == c


def test_alert_round_trip() -> None:
    _, a = R.loss_spike([0.74] * 5, 1.02, step=3)
    d = {"v": 1, "kind": "alert", "time": 1.0, **a.to_dict()}
    assert R.Alert.from_dict(d) == a


# ---------------------------------------------------------------- which loss "best model" follows
def _best_steps(engine, observations):
    fired = []
    for obs in observations:
        fired += [a.step for a in engine.observe(obs) if a.rule == "best_model"]
    return fired


FALLING = [Observation(step=s, loss=3.0 - 0.2 * s) for s in range(1, 11)]


def test_best_model_on_train_loss_when_the_run_never_evaluates():
    assert _best_steps(RuleEngine(), FALLING) == list(range(2, 11))


def test_best_model_follows_eval_loss_once_the_run_evaluates():
    eng = RuleEngine()
    obs = FALLING[:3] + [Observation(step=3, eval_loss=2.0)] + FALLING[3:6] + [Observation(step=6, eval_loss=1.5)] \
        + FALLING[6:] + [Observation(step=10, eval_loss=1.49)]
    # train loss before the first eval (steps 2-3), then only evals: 1.5 is >2 % below 2.0, 1.49 is not
    assert _best_steps(eng, obs) == [2, 3, 6]
    assert eng.best_loss == 1.49 and eng.best_loss_step == 10


def test_best_model_when_the_training_is_known_to_evaluate():
    eng = RuleEngine()
    eng.expect_eval = True
    obs = FALLING + [Observation(step=10, eval_loss=2.0), Observation(step=20, eval_loss=1.0)]
    assert _best_steps(eng, obs) == [20]


@pytest.mark.parametrize("metric,expected", [("loss", list(range(2, 11))), ("eval_loss", [20])], ids=["loss", "eval_loss"])
def test_best_model_metric_forced(metric, expected):
    eng = RuleEngine(AnomalyConfig(smart=SmartConfig(best_model_metric=metric)))
    assert _best_steps(eng, FALLING + [Observation(step=10, eval_loss=2.0), Observation(step=20, eval_loss=1.0)]) == expected


def test_best_model_metric_is_validated():
    with pytest.raises(ValueError, match="best_model_metric must be one of auto, eval_loss, loss"):
        SmartConfig(best_model_metric="accuracy")


def test_convergence_running_sums_decide_like_the_exact_rule_over_a_long_noisy_log() -> None:
    """The engine judges the convergence rate from running half sums and runs the exact rule only near a
    limit; over thousands of logs (many refreshes, plateaus and rises) it fires exactly where the pure rule
    on the same window does, and after a restore too."""
    import random
    from collections import deque

    from collectors.anomaly import rules as R

    rng = random.Random(5)
    losses = [2.0 * 0.999 ** i * (1 + 0.1 * rng.gauss(0, 1)) + (0.5 if 1200 < i < 1400 else 0.0) for i in range(3000)]
    eng = R.RuleEngine()
    window: deque = deque(maxlen=R.PLATEAU_WINDOW)
    for i, loss in enumerate(losses, 1):
        if i == 1500:
            state = eng.state_dict()
            eng = R.RuleEngine()
            eng.load_state_dict(state)
        window.append(loss)
        eng._conv_slide()  # what observe() does around each loss, without the other rules
        eng.conv_losses.append(loss)
        got = eng._convergence(i)
        want = R.convergence(list(window), i)
        assert (got.fired, got.alert.rule if got.alert else None) == (want.fired, want.alert.rule if want.alert else None), i
