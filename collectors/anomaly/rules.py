"""The anomaly rules: pure functions that decide whether one observation is an anomaly.

One engine serves the in-training collector (:mod:`collectors.anomaly.plugin`), the plain-loop API
(:class:`collectors.anomaly.detector.AdvancedAnomalyDetector`) and the standalone watcher
(:mod:`collectors.anomaly.smart_monitor`). Each rule is a pure function of plain numbers returning a
:class:`RuleResult` (``fired``, ``alert``); :class:`RuleEngine` keeps the bounded histories the rules
read and applies them in order. Nothing here does I/O or imports torch, so every rule is unit-tested
on lists of floats at both sides of its threshold. :class:`Alert` and :class:`Severity` are defined
once for every producer in :mod:`collectors.alerts` and re-exported here.

Two families of rules, with the defaults the guides name:

* Smart Monitor (snapshot triggers): loss spike, accuracy drop, new best model, divergence, and
  non-finite loss / gradient norm.
* Advanced anomaly detection: gradient explosion / vanishing / variance, learning rate out of range
  or changed suddenly, batch-size impact, convergence plateau / divergence, reward calibration and
  reward distribution drift.
"""
from __future__ import annotations

import enum
import math
import operator
from collections import deque
from itertools import islice, repeat
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from collectors import runformat as rf
from collectors.alerts import Alert, Severity
from collectors.snapshots.last_good import ROLLING_COPY_MAX_GB, ROLLING_COPY_STEPS
from collectors.snapshots.store import KEEP_BEST

# --------------------------------------------------------------------------- names

class Category(str, enum.Enum):
    """What an alert is about; the Alerts page filters on it."""

    LOSS = "loss"
    ACCURACY = "accuracy"
    GRADIENT = "gradient"
    LEARNING_RATE = "learning_rate"
    BATCH_SIZE = "batch_size"
    CONVERGENCE = "convergence"
    REWARD = "reward"
    SNAPSHOT = "snapshot"


class Rule(str, enum.Enum):
    """Every alert type the engine emits (the ``rule`` field of an alert)."""

    LOSS_SPIKE = "loss_spike"
    ACCURACY_DROP = "accuracy_drop"
    BEST_MODEL = "best_model"
    DIVERGENCE = "divergence"
    NON_FINITE_LOSS = "non_finite_loss"
    NON_FINITE_GRAD_NORM = "non_finite_grad_norm"
    NON_FINITE_EVAL_LOSS = "non_finite_eval_loss"
    GRADIENT_EXPLOSION = "gradient_explosion"
    GRADIENT_VANISHING = "gradient_vanishing"
    GRADIENT_VARIANCE = "gradient_variance"
    LR_TOO_HIGH = "lr_too_high"
    LR_TOO_LOW = "lr_too_low"
    LR_SUDDEN_CHANGE = "lr_sudden_change"
    BATCH_SIZE_IMPACT = "batch_size_impact"
    CONVERGENCE_PLATEAU = "convergence_plateau"
    CONVERGENCE_DIVERGENCE = "convergence_divergence"
    CALIBRATION_POOR = "calibration_poor"
    CALIBRATION_DRIFT = "calibration_drift"
    REWARD_DISTRIBUTION_DRIFT = "reward_distribution_drift"
    SNAPSHOT_SKIPPED = "snapshot_skipped"
    OPTIMIZER_STALLED = "optimizer_stalled"


SNAPSHOT_TRIGGER_RULES = frozenset({Rule.LOSS_SPIKE.value, Rule.ACCURACY_DROP.value, Rule.DIVERGENCE.value})
"""Anomalies that save a snapshot (limited by ``min_steps_between_saves``)."""
BEST_MODEL_RULE = Rule.BEST_MODEL.value
"""The trigger whose snapshots are pinned and never rate-limited."""

LEVEL_RULES = frozenset({
    Rule.DIVERGENCE.value, Rule.NON_FINITE_LOSS.value, Rule.NON_FINITE_GRAD_NORM.value,
    Rule.NON_FINITE_EVAL_LOSS.value, Rule.GRADIENT_EXPLOSION.value, Rule.GRADIENT_VANISHING.value,
    Rule.GRADIENT_VARIANCE.value,
    Rule.LR_TOO_HIGH.value, Rule.LR_TOO_LOW.value, Rule.CONVERGENCE_PLATEAU.value,
    Rule.CONVERGENCE_DIVERGENCE.value, Rule.CALIBRATION_POOR.value, Rule.CALIBRATION_DRIFT.value,
    Rule.REWARD_DISTRIBUTION_DRIFT.value, Rule.OPTIMIZER_STALLED.value,
})
"""Rules about a lasting condition: alerted when it starts, then every ``ALERT_REPEAT_EVERY`` observations
while it lasts, so a training stuck at grad norm 50 writes a handful of alerts, not one per step."""
ALERT_REPEAT_EVERY = 50

EVENT_RULES = frozenset({Rule.BEST_MODEL.value, Rule.CONVERGENCE_PLATEAU.value, Rule.GRADIENT_VARIANCE.value})
"""Informational events, not alerts: shown on a timeline and as chart markers, never counted as alerts."""

# --------------------------------------------------------------------------- defaults (the guides' values)

LOSS_SPIKE_THRESHOLD = 0.3
ACCURACY_DROP_THRESHOLD = 10.0
LOSS_WINDOW = 10
RECENT_COUNT = 5
"""The recent average is the mean of the last 5 values before the current one."""
MIN_HISTORY = 3
"""Values needed before the current one for the spike/drop rules to judge (early noise is not a spike)."""
BEST_MODEL_IMPROVEMENT = 0.02
BEST_MODEL_METRICS = ("auto", "eval_loss", "loss")
"""What "best model" is judged on. ``auto``: the eval loss once the run evaluates (or is known to), the
train loss otherwise. Validation loss is what Lightning's ModelCheckpoint and Trainer's best-model
tracking use; a train-loss best fires at nearly every log step early in training, and each firing writes
a full snapshot, which would slow a real training noticeably."""
DIVERGENCE_WINDOW = 10
DIVERGENCE_FRACTION = 0.8
MIN_STEPS_BETWEEN_SAVES = 500

GRADIENT_EXPLOSION = 10.0
GRADIENT_VANISHING = 1e-6
GRADIENT_WINDOW = 100
GRADIENT_VARIANCE_FACTOR = 1.0
GRADIENT_VARIANCE_MIN_SAMPLES = 10

LR_CHANGE_THRESHOLD = 0.3
LR_MIN = 1e-8
LR_MAX = 1.0
LR_TREND_POINTS = 3
"""Learning rates kept to predict the next one (two for the linear trend, plus the current)."""

BATCH_PERFORMANCE_THRESHOLD = 0.1
BATCH_WINDOW = 20
BATCH_MIN_BEFORE = 3

PLATEAU_THRESHOLD = 0.001
PLATEAU_WINDOW = 50
CONVERGENCE_DIVERGENCE_RATE = -0.1
STALL_LOGS = 3
"""Consecutive checks (logged steps at least ``updatewatch.CHECK_EVERY_STEPS`` apart) at which none of the
sampled weights changed that make ``optimizer_stalled``."""
STALL_MIN_STEPS = 10
"""...spanning at least this many training steps: a GradScaler may skip a few steps in a row on purpose
(fp16 overflow at the start), and with logging every step three logs are only three steps."""

REWARD_DRIFT_THRESHOLD = 0.1
CALIBRATION_THRESHOLD = 0.7
REWARD_WINDOW = 500
"""Reward values (and prediction/outcome pairs) per comparison window."""
CALIBRATION_BINS = 10
CALIBRATION_MIN_PAIRS = 50
CALIBRATION_HISTORY = 20
DRIFT_SIGNIFICANCE_Z = 3.0
"""A reward-mean shift must also be this many standard errors wide, so sampling noise never alerts."""

NOISE_WINDOW = 64
"""Logged values the noise gate learns a metric's level and spread from (median and MAD)."""
NOISE_K = 6.0
"""A jump must clear the median by this many robust standard deviations (OLMo-core's 6σ practice)."""
NOISE_PATIENCE = 3
"""Consecutive logged values above the gate that make a sustained spike (llm-foundry's patience)."""
NOISE_EXTREME_FACTOR = 1.0
"""A single value fires at once when it is also above the window's largest value × (1 + this): beyond
anything the run's own noise has produced. Smaller outliers must persist for ``patience`` logs."""
NOISE_SHIFT_K = 4.0
"""A level shift must clear the median by this many standard errors of the shifted mean."""
NOISE_WARMUP_LOGS = 20
"""Logged values before loss spike, divergence and gradient explosion judge anything: the first
steps of a training (and of its warm-up) fall fast and jump, and carry no baseline yet."""
EARLY_FACTOR = 10.0
"""Within the first ``warmup_logs`` logs a gradient norm must exceed every norm before it by this factor
to fire (the guides' quick-start example multiplies its loss, so its norm, by 1000): the early norms of
a healthy training jump several-fold (the demo's: 1.9 to 10.5 at step 25). Early losses are judged with
a widened spread instead (see :data:`SMALL_SAMPLE_WIDEN`)."""
EARLY_FALL_LOGS = 8
"""A training that logs no learning rate is in its early training while its first loss window lasts and
the median of the window's first this many values is :data:`EARLY_FALL_FRACTION` above the median of its
last this many (see :meth:`RuleEngine._early_fall`)."""
EARLY_FALL_FRACTION = 0.15
"""How far the loss must have fallen within its first window to be in its early fall: its first losses'
median 15 % above its recent one. The suite's healthy GPT-2 runs were at 27-50 % when their warm-up jumped;
a loop whose loss fell 10 % and then doubles (the tests' planted spikes) is judged in full."""
GRAD_EXTREME_RATIO = 50.0
"""After the warm-up, a single gradient norm fires at once only at this many times the window's median
(``noise.grad_extreme_ratio``); smaller ones must persist (the level-shift path). Gradient norms are
heavy-tailed: a healthy small-batch transformer logs isolated norms of 5-15x its median every few hundred
steps (a hard or long batch; Trainer clips it at ``max_grad_norm``), and up to 26x in its first 150 steps
(the suite's LM family, ``bench/alert_suite.py``), which a robust spread learnt from 64 values calls dozens
of sigmas. An injected gradient fault is x2000; a corrupt batch (x27-43 in the MLP family) is caught by its
loss."""
GRAD_SHIFT_RATIO = 5.0
"""A lasting rise of the gradient norm (the median of the last ``patience + 2`` logs) must also be this many
times the window's median: the early norms of a healthy small-batch transformer stay 2-4x their median for
a dozen logs."""
SMALL_SAMPLE_WIDEN = 3.0
"""A spread learnt from n < ``window`` values is widened by 1 + this / sqrt(n − 1): from 8 values a
robust sigma can be half the true one by chance, and an early training would then alert on noise."""
LEVEL_REFRESH = 8
"""Logs between two recomputations of a window's median and spread when no decision hangs on them."""
NOISE_LONG_SHIFT_LOGS = 16
"""Logs a lasting rise too small to show in ``patience + 2`` is judged over (0 turns that check off)."""
LONG_SHIFT_EVERY = 4
"""Logs between two judgements of that longer rise (it builds up over 16 logs: 3 more cost little lag)."""
DIVERGENCE_RECENT = 9
"""Logged losses whose median is the recent level divergence judges (two outlier batches cannot move it)."""
DIVERGENCE_RISE = 0.35
"""Divergence (noise-aware): the loss level (median of the last 9 logs) rose this fraction above the median
of the older half of the noise window, and by ``k / 2`` robust standard deviations, for three logs in a
row. It was 0.25 until the suite's LM family: a clean batch-size-2 GPT-2 logging every step has a 9-log
median that wanders +29 % above its earlier level and back (its samples differ widely in difficulty)."""

MIN_SNAPSHOT_FREE_GB = 1.0
SNAPSHOT_KEEP_LAST = 20
SNAPSHOT_KEEP_BEST = KEEP_BEST


# --------------------------------------------------------------------------- records

class RuleResult(NamedTuple):
    """What one rule decided: ``fired`` and, when it fired, the alert (unpacks as ``fired, alert``)."""

    fired: bool
    alert: Alert | None = None


NOT_FIRED = RuleResult(False, None)


def _fire(rule: Rule, category: Category, severity: Severity, step: int, value: float | None,
          threshold: float | None, message: str, reason: str = "", **metadata: Any) -> RuleResult:
    return RuleResult(True, Alert(rule.value, category.value, severity.value, int(step), value, threshold,
                                  message, dict(metadata), reason or rule.value))


def is_finite_number(x: Any) -> bool:
    if type(x) is float:  # a logged value, almost always: one check instead of three
        return math.isfinite(x)
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    m = _mean(values)
    # (v - m) ** 2 for each v, in C (map with pow, not a generator: the same floats at a third of the cost)
    return math.sqrt(math.fsum(map(pow, map(operator.sub, values, repeat(m)), repeat(2))) / len(values))


# --------------------------------------------------------------------------- configuration

def _check(section: str, name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
           integer: bool = False, lo_open: bool = False) -> None:
    """Raise a ValueError naming ``section.name`` and the allowed range when ``value`` is outside it."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{section}.{name} must be {kind}; got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{section}.{name} must be {'>' if lo_open else '>='} {lo}; got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{section}.{name} must be <= {hi}; got {value!r}")


@dataclass(frozen=True)
class SmartConfig:
    """Smart Monitor rules (snapshot triggers).

    Args:
        loss_spike_threshold: fraction above the recent average that is a spike (default 0.3 = 30 %).
        accuracy_drop_threshold: percentage points below the recent average that is a drop (default 10).
        loss_window: losses kept (default 10); the recent average uses the last 5 before the current.
        best_model_improvement: a new best must be this fraction below the previous best (default 0.02).
        divergence_window: recent losses whose consecutive changes are checked (default 10).
        divergence_fraction: share of increases that is divergence (default 0.8).
        best_model_metric: ``"auto"`` (default: eval loss when the run evaluates, else train loss),
            ``"eval_loss"`` or ``"loss"``.
    """

    loss_spike_threshold: float = LOSS_SPIKE_THRESHOLD
    accuracy_drop_threshold: float = ACCURACY_DROP_THRESHOLD
    loss_window: int = LOSS_WINDOW
    best_model_improvement: float = BEST_MODEL_IMPROVEMENT
    divergence_window: int = DIVERGENCE_WINDOW
    divergence_fraction: float = DIVERGENCE_FRACTION
    best_model_metric: str = "auto"

    def __post_init__(self) -> None:
        if self.best_model_metric not in BEST_MODEL_METRICS:
            raise ValueError(f"smart.best_model_metric must be one of {', '.join(BEST_MODEL_METRICS)}; "
                             f"got {self.best_model_metric!r}")
        _check("smart", "loss_spike_threshold", self.loss_spike_threshold, 0, 100, lo_open=True)
        _check("smart", "accuracy_drop_threshold", self.accuracy_drop_threshold, 0, 100, lo_open=True)
        _check("smart", "loss_window", self.loss_window, 2, 10_000, integer=True)
        _check("smart", "best_model_improvement", self.best_model_improvement, 0, 1)
        _check("smart", "divergence_window", self.divergence_window, 3, 10_000, integer=True)
        _check("smart", "divergence_fraction", self.divergence_fraction, 0, 1, lo_open=True)


@dataclass(frozen=True)
class GradientConfig:
    """Gradient-norm rules. Args: explosion_threshold (10.0), vanishing_threshold (1e-6), window_size
    (100 norms for the variance rule), variance_factor (alert when std > mean × this; 1.0)."""

    explosion_threshold: float = GRADIENT_EXPLOSION
    vanishing_threshold: float = GRADIENT_VANISHING
    window_size: int = GRADIENT_WINDOW
    variance_factor: float = GRADIENT_VARIANCE_FACTOR

    def __post_init__(self) -> None:
        _check("gradient", "explosion_threshold", self.explosion_threshold, 0, lo_open=True)
        _check("gradient", "vanishing_threshold", self.vanishing_threshold, 0)
        _check("gradient", "window_size", self.window_size, 2, 1_000_000, integer=True)
        _check("gradient", "variance_factor", self.variance_factor, 0, lo_open=True)
        if self.vanishing_threshold >= self.explosion_threshold:
            raise ValueError("gradient.vanishing_threshold must be below gradient.explosion_threshold; "
                             f"got {self.vanishing_threshold!r} >= {self.explosion_threshold!r}")


@dataclass(frozen=True)
class LearningRateConfig:
    """Learning-rate rules. Args: change_threshold (0.3: a rise above the schedule's trend by more than
    30 % of its recent peak), min_lr (1e-8), max_lr (1.0), restarts (False: the schedule has warm restarts,
    so a rate back at most to the run's own peak is not a sudden change; ``MonitorCallback`` sets it by
    itself for Trainer's ``cosine_with_restarts``)."""

    change_threshold: float = LR_CHANGE_THRESHOLD
    min_lr: float = LR_MIN
    max_lr: float = LR_MAX
    restarts: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.restarts, bool):
            raise ValueError(f"learning_rate.restarts must be true or false; got {self.restarts!r}")
        _check("learning_rate", "change_threshold", self.change_threshold, 0, lo_open=True)
        _check("learning_rate", "min_lr", self.min_lr, 0)
        _check("learning_rate", "max_lr", self.max_lr, 0, lo_open=True)
        if self.min_lr >= self.max_lr:
            raise ValueError(f"learning_rate.min_lr must be below learning_rate.max_lr; got {self.min_lr!r} >= {self.max_lr!r}")


@dataclass(frozen=True)
class BatchSizeConfig:
    """Batch-size impact. Args: performance_threshold (0.1 = mean loss moved by 10 %), window_size (20
    losses compared before and after a change)."""

    performance_threshold: float = BATCH_PERFORMANCE_THRESHOLD
    window_size: int = BATCH_WINDOW

    def __post_init__(self) -> None:
        _check("batch_size", "performance_threshold", self.performance_threshold, 0, lo_open=True)
        _check("batch_size", "window_size", self.window_size, 2, 1_000_000, integer=True)


@dataclass(frozen=True)
class ConvergenceConfig:
    """Convergence tracking. Args: plateau_threshold (0.001 relative improvement across the window),
    plateau_window (50 losses), divergence_rate (-0.1: the loss rose by more than 10 %), stall_logs (3
    logged steps without any sampled weight changing, 0 turns ``optimizer_stalled`` off) spanning at least
    stall_min_steps (10) steps."""

    plateau_threshold: float = PLATEAU_THRESHOLD
    plateau_window: int = PLATEAU_WINDOW
    divergence_rate: float = CONVERGENCE_DIVERGENCE_RATE
    stall_logs: int = STALL_LOGS
    stall_min_steps: int = STALL_MIN_STEPS

    def __post_init__(self) -> None:
        _check("convergence", "plateau_threshold", self.plateau_threshold, 0, 1)
        _check("convergence", "plateau_window", self.plateau_window, 4, 1_000_000, integer=True)
        _check("convergence", "divergence_rate", self.divergence_rate, -100, 0)
        _check("convergence", "stall_logs", self.stall_logs, 0, 1_000_000, integer=True)
        _check("convergence", "stall_min_steps", self.stall_min_steps, 0, 1_000_000_000, integer=True)


@dataclass(frozen=True)
class RewardDriftConfig:
    """Reward-model rules. Args: drift_threshold (0.1), calibration_threshold (0.7 = 1 − expected
    calibration error), window_size (500 rewards / prediction pairs per window)."""

    drift_threshold: float = REWARD_DRIFT_THRESHOLD
    calibration_threshold: float = CALIBRATION_THRESHOLD
    window_size: int = REWARD_WINDOW

    def __post_init__(self) -> None:
        _check("reward_drift", "drift_threshold", self.drift_threshold, 0, lo_open=True)
        _check("reward_drift", "calibration_threshold", self.calibration_threshold, 0, 1)
        _check("reward_drift", "window_size", self.window_size, 10, 10_000_000, integer=True)


@dataclass(frozen=True)
class NoiseConfig:
    """The noise gate added on top of the guides' relative thresholds (see docs/anomaly.md).

    A loss spike must clear the guide's relative threshold (``smart.loss_spike_threshold``: at least
    30 % above the recent average) *and* the metric's own noise: the median of the last ``window``
    logged values plus ``k`` robust standard deviations (1.4826 × MAD). It then fires at once when it is
    beyond anything in the window (its maximum × (1 + ``extreme_factor``)), else after ``patience``
    consecutive logs above the gate. Divergence and gradient explosion are gated the same way.

    Args:
        enabled: apply the gate (default True; False gives the guides' rules as written).
        window: logged values the level and spread are learnt from (default 64).
        k: robust standard deviations a jump must clear (default 6.0).
        patience: consecutive logs above the gate for a sustained spike (default 3).
        extreme_factor: above the window's maximum × (1 + this) fires at once (default 1.0).
        shift_k: standard errors of the recent mean a level shift must clear (default 4.0).
        warmup_logs: logged values before loss spike, divergence and gradient explosion judge (default 20).
        divergence_rise: fraction the loss level (median of the last 9 logs) must rise above the older
            half of the window for divergence (default 0.35).
        long_shift_logs: a lasting rise too small to show in ``patience + 2`` logs is also judged over
            this many (default 16; 0 turns it off; at most ``window / 2``).
        grad_extreme_ratio: a single gradient norm fires at once only above this many times the window's
            median (default 50; smaller ones must persist, see :data:`GRAD_EXTREME_RATIO`).

    While the learning rate is still rising by its schedule (warm-up) and for as many logs after as it lasted
    (at most ``warmup_logs``), single values fire at once only beyond anything the window holds (losses: its maximum × (1 +
    ``extreme_factor``); gradient norms: also × :data:`EARLY_FACTOR`), as in the first ``warmup_logs`` logs,
    and a lasting rise of the gradient norm is not judged (a blow-up still is). A training that logs no
    learning rate gets the same while its loss is still falling steeply (:data:`EARLY_FALL_LOGS`).
    """

    enabled: bool = True
    window: int = NOISE_WINDOW
    k: float = NOISE_K
    patience: int = NOISE_PATIENCE
    extreme_factor: float = NOISE_EXTREME_FACTOR
    shift_k: float = NOISE_SHIFT_K
    warmup_logs: int = NOISE_WARMUP_LOGS
    divergence_rise: float = DIVERGENCE_RISE
    long_shift_logs: int = NOISE_LONG_SHIFT_LOGS
    grad_extreme_ratio: float = GRAD_EXTREME_RATIO

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"noise.enabled must be true or false; got {self.enabled!r}")
        _check("noise", "window", self.window, 8, 100_000, integer=True)
        _check("noise", "k", self.k, 0, 100)
        _check("noise", "patience", self.patience, 1, 1000, integer=True)
        _check("noise", "extreme_factor", self.extreme_factor, 0, 100)
        _check("noise", "shift_k", self.shift_k, 0, 100)
        _check("noise", "warmup_logs", self.warmup_logs, 0, 1_000_000, integer=True)
        _check("noise", "divergence_rise", self.divergence_rise, 0, 100)
        _check("noise", "long_shift_logs", self.long_shift_logs, 0, self.window // 2, integer=True)
        _check("noise", "grad_extreme_ratio", self.grad_extreme_ratio, 1, 1e6)
        if 0 < self.long_shift_logs < 4:
            raise ValueError(f"noise.long_shift_logs must be 0 (off) or at least 4; got {self.long_shift_logs!r}")


@dataclass(frozen=True)
class SnapshotConfig:
    """When snapshots are saved and kept.

    Args:
        enabled: save snapshots on triggers (default True).
        min_steps_between_saves: steps between two anomaly snapshots (default 500; best-model ones are
            never blocked).
        keep_last: unpinned anomaly snapshots kept (default 20; 0 keeps all).
        max_age_days: unpinned anomaly snapshots older than this are removed (default None: no limit).
        min_free_gb: below this much free disk a snapshot is skipped with an alert (default 1.0).
        background: write anomaly snapshots of the live weights in a background thread (default True):
            the training step only copies the weights to CPU memory, as Lightning's async checkpointing
            does; manual snapshots and PEFT adapters are written at once.
        keep_best: best-model snapshots kept, the lowest by their loss (default 3; 0 keeps all); the best
            is always kept, the one just written is never pruned.
        max_total_gb: all snapshots of the run together (default None: min(50 GB, 25 % of the disk free
            when the training starts); 0: no budget). Pinned snapshots count against it.
            Also, a snapshot is skipped (``snapshot_skipped`` alert) when writing it would leave less
            than max(``min_free_gb``, 2 × its size) free.
        last_good: anomaly snapshots also keep the last good state from before the fault in
            ``last_good/`` (default True).
        rolling_copy_steps: optimizer steps between two rolling CPU copies of the weights, the last good
            state of runs without checkpoints (default 50; 0: off).
        rolling_copy_max_gb: no rolling copy for weights larger than this (default 2.0; it costs two
            copies of the weights in CPU memory).
        save_optimizer: also link the checkpoint's optimizer state into ``last_good/`` (default False).
    """

    enabled: bool = True
    min_steps_between_saves: int = MIN_STEPS_BETWEEN_SAVES
    keep_last: int = SNAPSHOT_KEEP_LAST
    max_age_days: float | None = None
    min_free_gb: float = MIN_SNAPSHOT_FREE_GB
    background: bool = True
    keep_best: int = SNAPSHOT_KEEP_BEST
    max_total_gb: float | None = None
    last_good: bool = True
    rolling_copy_steps: int = ROLLING_COPY_STEPS
    rolling_copy_max_gb: float = ROLLING_COPY_MAX_GB
    save_optimizer: bool = False

    def __post_init__(self) -> None:
        _check("snapshots", "keep_best", self.keep_best, 0, integer=True)
        if self.max_total_gb is not None:
            _check("snapshots", "max_total_gb", self.max_total_gb, 0)
        _check("snapshots", "rolling_copy_steps", self.rolling_copy_steps, 0, integer=True)
        _check("snapshots", "rolling_copy_max_gb", self.rolling_copy_max_gb, 0)
        for name in ("enabled", "background", "last_good", "save_optimizer"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"snapshots.{name} must be true or false; got {getattr(self, name)!r}")
        _check("snapshots", "min_steps_between_saves", self.min_steps_between_saves, 0, integer=True)
        _check("snapshots", "keep_last", self.keep_last, 0, integer=True)
        if self.max_age_days is not None:
            _check("snapshots", "max_age_days", self.max_age_days, 0, lo_open=True)
        _check("snapshots", "min_free_gb", self.min_free_gb, 0)


SECTIONS: dict[str, type] = {
    "smart": SmartConfig, "gradient": GradientConfig, "learning_rate": LearningRateConfig,
    "batch_size": BatchSizeConfig, "convergence": ConvergenceConfig, "reward_drift": RewardDriftConfig,
    "snapshots": SnapshotConfig, "noise": NoiseConfig,
}


@dataclass(frozen=True)
class AnomalyConfig:
    """Every threshold of the engine, grouped as in the guides; also the shape of ``control/thresholds.json``.

    Args:
        smart, gradient, learning_rate, batch_size, convergence, reward_drift, snapshots, noise: the sections.
        stop_on_critical: ask the training to stop on a critical alert (default False).

    Raises:
        ValueError: from :meth:`from_dict` / the sections, naming the bad key and the allowed values.

    Example:
        >>> AnomalyConfig.from_dict({"smart": {"loss_spike_threshold": 0.5}}).smart.loss_spike_threshold
        0.5
    """

    smart: SmartConfig = field(default_factory=SmartConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    learning_rate: LearningRateConfig = field(default_factory=LearningRateConfig)
    batch_size: BatchSizeConfig = field(default_factory=BatchSizeConfig)
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    reward_drift: RewardDriftConfig = field(default_factory=RewardDriftConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    stop_on_critical: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, overrides: Mapping[str, Any] | None) -> "AnomalyConfig":
        """A copy with ``overrides`` (same shape as :meth:`to_dict`, any subset) applied and validated.

        Raises:
            ValueError: unknown section/key, wrong type or a value out of range (message names it).
        """
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise ValueError(f"thresholds must be a JSON object; got {type(overrides).__name__}")
        changes: dict[str, Any] = {}
        for key, val in overrides.items():
            if key in ("v", "updated_at", "updated_by"):
                continue  # bookkeeping written beside the thresholds
            if key == "stop_on_critical":
                if not isinstance(val, bool):
                    raise ValueError(f"stop_on_critical must be true or false; got {val!r}")
                changes[key] = val
                continue
            cls = SECTIONS.get(key)
            if cls is None:
                raise ValueError(f"unknown thresholds section {key!r}; allowed: {', '.join([*SECTIONS, 'stop_on_critical'])}")
            if not isinstance(val, Mapping):
                raise ValueError(f"thresholds section {key!r} must be an object; got {val!r}")
            allowed = {f.name for f in fields(cls)}
            bad = sorted(set(val) - allowed)
            if bad:
                raise ValueError(f"unknown key {key}.{bad[0]}; allowed in {key}: {', '.join(sorted(allowed))}")
            changes[key] = replace(getattr(self, key), **dict(val))
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AnomalyConfig":
        return cls().merged(data)


def guide_config() -> "AnomalyConfig":
    """The guides' rules as written (no noise gate, no warm-up grace, no ``optimizer_stalled``, which the
    guides do not have): the benchmark's anchor."""
    return AnomalyConfig(noise=NoiseConfig(enabled=False), convergence=ConvergenceConfig(stall_logs=0))


def coerce_config(value: "bool | AnomalyConfig | Mapping[str, Any] | None") -> AnomalyConfig | None:
    """``True``/``None`` → defaults, ``False`` → None (off), a mapping → validated config.

    Raises:
        ValueError: for any other type, naming the allowed ones.
    """
    if value is False:
        return None
    if value is True or value is None:
        return AnomalyConfig()
    if isinstance(value, AnomalyConfig):
        return value
    if isinstance(value, Mapping):
        return AnomalyConfig.from_dict(value)
    raise ValueError(f"anomaly= must be True, False, an AnomalyConfig or a dict; got {type(value).__name__}")


# --------------------------------------------------------------------------- Smart Monitor rules

def recent_average(history: Sequence[float], count: int = RECENT_COUNT) -> float:
    """Mean of the last ``count`` values of ``history`` (all of them when shorter)."""
    tail = history[-count:] if len(history) > count else history
    return _mean(tail)


def loss_spike(history: Sequence[float], current: float, step: int, threshold: float = LOSS_SPIKE_THRESHOLD,
               min_history: int = MIN_HISTORY) -> RuleResult:
    """Fires when ``current`` > recent average × (1 + threshold).

    ``history`` holds the finite losses before the current one (oldest first); the recent average is
    the mean of its last 5. Example: average 0.75, threshold 0.3 → fires above 0.975. The reason is
    the percent above the average, one decimal: 0.74 → 1.02 gives ``loss_spike_37.8pct``.
    """
    if len(history) < min_history or not is_finite_number(current):
        return NOT_FIRED
    avg = recent_average(history)
    limit = avg * (1.0 + threshold)
    if avg <= 0 or not current > limit:
        return NOT_FIRED
    pct = (current / avg - 1.0) * 100.0
    return _fire(Rule.LOSS_SPIKE, Category.LOSS, Severity.HIGH, step, current, limit,
                 f"Loss spike: {current:.4g} is {pct:.1f}% above the recent average {avg:.4g} (limit {limit:.4g})",
                 f"loss_spike_{pct:.1f}pct", recent_average=avg, threshold_fraction=threshold)


def accuracy_drop(history: Sequence[float], current: float, step: int, threshold: float = ACCURACY_DROP_THRESHOLD,
                  min_history: int = 1) -> RuleResult:
    """Fires when ``current`` < recent average − ``threshold`` (accuracies in percent).

    Example: average 75 %, current 62 % → 13 points below: ``accuracy_drop_13.0pct``.
    """
    if len(history) < min_history or not is_finite_number(current):
        return NOT_FIRED
    avg = recent_average(history)
    limit = avg - threshold
    if not current < limit:
        return NOT_FIRED
    drop = avg - current
    return _fire(Rule.ACCURACY_DROP, Category.ACCURACY, Severity.HIGH, step, current, limit,
                 f"Accuracy drop: {current:.1f}% is {drop:.1f} points below the recent average {avg:.1f}%",
                 f"accuracy_drop_{drop:.1f}pct", recent_average=avg, threshold_points=threshold)


def accuracy_percent(value: float) -> float:
    """Accuracy as percent: values in [0, 1] are fractions (× 100), larger values are percent already."""
    return value * 100.0 if 0.0 <= value <= 1.0 else value


def best_model(best: float | None, current: float, step: int, improvement: float = BEST_MODEL_IMPROVEMENT,
               metric: str = "loss") -> RuleResult:
    """Fires when ``current`` is a new all-time low more than ``improvement`` (2 %) below ``best``.

    The first loss only sets the best (nothing to compare). Reason: ``best_model_loss_0.6321`` whichever
    loss is followed (the guide's name); the message and ``metadata.metric`` say which (``loss`` or
    ``eval_loss``).
    """
    if best is None or not is_finite_number(current):
        return NOT_FIRED
    limit = best * (1.0 - improvement) if best > 0 else best - abs(best) * improvement
    if not current < limit:
        return NOT_FIRED
    return _fire(Rule.BEST_MODEL, Category.LOSS, Severity.LOW, step, current, limit,
                 f"New best model: {metric.replace('_', ' ')} {current:.4f} (previous best {best:.4f})",
                 f"best_model_loss_{current:.4f}", previous_best=best, metric=metric)


def divergence(window: Sequence[float], step: int, fraction: float = DIVERGENCE_FRACTION,
               size: int = DIVERGENCE_WINDOW) -> RuleResult:
    """Fires when ``fraction`` (80 %) or more of the consecutive changes in the last ``size`` losses are rises."""
    if len(window) < size:
        return NOT_FIRED
    vals = list(window)[-size:]
    rises = sum(1 for a, b in zip(vals, vals[1:]) if b > a)
    share = rises / (len(vals) - 1)
    if share < fraction:
        return NOT_FIRED
    return _fire(Rule.DIVERGENCE, Category.LOSS, Severity.HIGH, step, share, fraction,
                 f"Divergence: the loss rose in {rises} of the last {len(vals) - 1} evaluations",
                 "divergence_detected", rises=rises, changes=len(vals) - 1, losses=vals)


def non_finite(name: str, value: Any, step: int) -> RuleResult:
    """Critical whenever the loss (``name="loss"``), the gradient norm (``"grad_norm"``) or the eval loss
    (``"eval_loss"``: weights gone NaN between two logs show there first when the train loss is averaged or
    hidden) is NaN or ±Inf."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isfinite(value):
        return NOT_FIRED
    rule = {"loss": Rule.NON_FINITE_LOSS, "eval_loss": Rule.NON_FINITE_EVAL_LOSS}.get(name, Rule.NON_FINITE_GRAD_NORM)
    cat = Category.GRADIENT if rule is Rule.NON_FINITE_GRAD_NORM else Category.LOSS
    return _fire(rule, cat, Severity.CRITICAL, step, value, None, f"Non-finite {name.replace('_', ' ')}: {value}")


class NoiseLevel(NamedTuple):
    """A metric's recent level and spread: median, robust standard deviation (1.4826 × MAD), maximum."""

    median: float
    sigma: float
    maximum: float


def _newest(window: "deque[float]", count: int) -> list[float]:
    """The last ``count`` values of ``window``, newest first: read from the right end, where slicing a deque
    from the left walks the whole window. For callers whose use does not depend on the order (a sum, a
    sort, the largest value removed)."""
    return list(islice(reversed(window), count))


def _median(sorted_vals: Sequence[float]) -> float:
    n = len(sorted_vals)
    return sorted_vals[n // 2] if n % 2 else 0.5 * (sorted_vals[n // 2 - 1] + sorted_vals[n // 2])


def noise_level(window: Sequence[float]) -> NoiseLevel:
    """Median, robust sigma and maximum of ``window`` (pure; values oldest first, at least one).

    The spread is taken from the *changes* between consecutive values (1.4826 × their MAD / √2), which
    is the noise's own standard deviation whether or not the loss is still falling: early in training
    the trend would otherwise count as noise and hide a real spike. The median and MAD ignore the
    occasional outlier batch that a mean and standard deviation would follow, so one bad batch neither
    hides the next nor inflates the spread for the whole window.
    """
    n = len(window)
    if n < 3:
        vals = list(window)
        ordered = sorted(vals)
        med = _median(ordered)
        dev = sorted([abs(v - med) for v in vals])
        return NoiseLevel(med, 1.4826 * _median(dev), ordered[-1])
    arr = np.fromiter(window, float, n)
    ordered = np.sort(arr)
    return NoiseLevel(float(_median(ordered)), _changes_sigma(arr), float(ordered[-1]))


def change_sigma(vals: Sequence[float]) -> float:
    """The robust standard deviation of a window's noise from its changes: :func:`noise_level`'s spread
    (at least 3 values, oldest first), for callers that need the spread alone (divergence's level takes
    its median from another part of the window, and sorting the whole window for it was wasted)."""
    return _changes_sigma(np.fromiter(vals, float, len(vals)))


def _changes_sigma(arr: "np.ndarray") -> float:
    """:func:`change_sigma` of an array. On arrays rather than in Python: the subtractions, absolute values
    and sorts are the same IEEE operations, so the figure is the same to the last bit (checked against the
    pure-Python version on windows of 3-64 values at scales 1e-3 to 1e3), at about two thirds of the cost;
    the gate computes it every few logs. numpy's sort is not stable, which can only matter to the sign of
    a zero median when a window holds both 0.0 and -0.0 (equal in every comparison); a stable sort would
    cost more than the arrays save."""
    diffs = arr[1:] - arr[:-1]
    diffs.sort()
    dev = np.abs(diffs - float(_median(diffs)))
    dev.sort()
    return 1.4826 * float(_median(dev)) / math.sqrt(2.0)


def _bounded_level(window: Sequence[float]) -> NoiseLevel:
    """:func:`noise_level` of a bounded metric (accuracy in percent): its spread is at least the standard
    deviation of its changes / √2. A batch accuracy takes few distinct values (k/8 at batch size 8), whose
    many equal changes make the MAD read low (13 points against a binomial's 16); bounded values have no
    outliers for a standard deviation to follow. Taken from the changes, as the MAD is, so a rising
    accuracy's trend does not count as noise."""
    lvl = noise_level(window)
    vals = list(window)
    if len(vals) < 3:
        return lvl
    diffs = [b - a for a, b in zip(vals, vals[1:])]
    mean = math.fsum(diffs) / len(diffs)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / len(diffs)) / math.sqrt(2.0)
    return lvl._replace(sigma=max(lvl.sigma, sd))


def beyond_window(level: NoiseLevel, current: float, factor: float) -> bool:
    """Whether ``current`` exceeds everything the window holds by the factor (a single value that fires at once)."""
    top = level.maximum
    return current > (top * (1.0 + factor) if top > 0 else top + abs(top) * factor)


# --------------------------------------------------------------------------- advanced rules

def gradient_explosion(norm: float, step: int, threshold: float = GRADIENT_EXPLOSION) -> RuleResult:
    if not is_finite_number(norm) or not norm > threshold:
        return NOT_FIRED
    return _fire(Rule.GRADIENT_EXPLOSION, Category.GRADIENT, Severity.CRITICAL, step, norm, threshold,
                 f"Gradient explosion detected: norm={norm:.4f} > {threshold}")


def gradient_vanishing(norm: float, step: int, threshold: float = GRADIENT_VANISHING) -> RuleResult:
    if not is_finite_number(norm) or not norm < threshold:
        return NOT_FIRED
    return _fire(Rule.GRADIENT_VANISHING, Category.GRADIENT, Severity.HIGH, step, norm, threshold,
                 f"Gradient vanishing detected: norm={norm:.3e} < {threshold:g}")


def gradient_variance(norms: Sequence[float], step: int, factor: float = GRADIENT_VARIANCE_FACTOR,
                      min_samples: int = GRADIENT_VARIANCE_MIN_SAMPLES) -> RuleResult:
    """Fires when the standard deviation of the recent norms exceeds their mean × ``factor``."""
    if len(norms) < min_samples:
        return NOT_FIRED
    mean, std = _mean(norms), _std(norms)
    if not std > mean * factor:
        return NOT_FIRED
    return _fire(Rule.GRADIENT_VARIANCE, Category.GRADIENT, Severity.LOW, step, std, mean * factor,
                 f"High gradient variance: std {std:.4g} > mean {mean:.4g} × {factor:g}",
                 mean=mean, std=std, samples=len(norms))


def lr_out_of_range(lr: float, step: int, min_lr: float = LR_MIN, max_lr: float = LR_MAX,
                    previous: float | None = None) -> RuleResult:
    """``lr_too_high`` above ``max_lr``; ``lr_too_low`` below ``min_lr`` while not still falling.

    A schedule decaying to 0 passes below ``min_lr`` in its last steps on purpose, so ``lr_too_low``
    fires only when the rate is held there (``lr >= previous``, or no previous value). An exact 0 is
    not ``lr_too_low`` either: it is where warmup starts and decay ends (a training stuck at 0 shows up
    as a convergence plateau).
    """
    if not is_finite_number(lr):
        return NOT_FIRED
    if lr > max_lr:
        return _fire(Rule.LR_TOO_HIGH, Category.LEARNING_RATE, Severity.HIGH, step, lr, max_lr,
                     f"Learning rate {lr:.3e} is above the maximum {max_lr:.1e}")
    if 0 < lr < min_lr and (previous is None or lr >= previous):
        return _fire(Rule.LR_TOO_LOW, Category.LEARNING_RATE, Severity.MEDIUM, step, lr, min_lr,
                     f"Learning rate {lr:.3e} is below the minimum {min_lr:.1e}")
    return NOT_FIRED


def lr_sudden_change(points: Sequence[tuple[int, float]], step: int, lr: float,
                     threshold: float = LR_CHANGE_THRESHOLD) -> RuleResult:
    """Fires when the learning rate jumps above what its own schedule predicts.

    ``points`` are the previous ``(step, lr)`` observations (oldest first, at least two). The schedule
    is predicted two ways: constant (the last value) and the linear trend of the last two points
    (per step, so irregular logging works). The excess is how far ``lr`` rises above the larger of the
    two predictions, as a fraction of the schedule's recent peak; it fires above ``threshold``.

    Why this shape: warmup and linear decay follow their linear trend exactly, cosine bends slowly
    (error of order (π·Δstep/T)² of the peak), and a step decay or the end of warmup only *falls*
    below a prediction. So none of the usual schedules fires, while an LR multiplied ×100 exceeds
    any prediction by ~99 % of the new peak. A sudden *fall* never fires (step schedules do that on
    purpose; a fall to near zero is ``lr_too_low``); warm restarts (cosine with restarts) do fire.
    """
    if len(points) < 2 or not is_finite_number(lr):
        return NOT_FIRED
    (s0, l0), (s1, l1) = points[-2], points[-1]
    if not (is_finite_number(l0) and is_finite_number(l1)):
        return NOT_FIRED
    slope = (l1 - l0) / (s1 - s0) if s1 != s0 else 0.0
    predicted = max(l1, l1 + slope * (step - s1))
    peak = max([abs(v) for _, v in points])
    scale = peak if peak > 0 else abs(lr)
    if scale <= 0:
        return NOT_FIRED
    excess = (lr - predicted) / scale
    if not excess > threshold:
        return NOT_FIRED
    return _fire(Rule.LR_SUDDEN_CHANGE, Category.LEARNING_RATE, Severity.MEDIUM, step, lr, threshold,
                 f"Sudden learning-rate change: {l1:.3e} → {lr:.3e} (schedule predicted {predicted:.3e})",
                 previous_lr=l1, predicted_lr=predicted, relative_excess=excess)


def batch_size_impact(before: Sequence[float], after: Sequence[float], old_size: int, new_size: int, step: int,
                      threshold: float = BATCH_PERFORMANCE_THRESHOLD) -> RuleResult:
    """Fires when the mean loss after a batch-size change differs from before by more than ``threshold``
    (relative). A worse loss is ``medium`` severity, a better one ``low`` (worth knowing)."""
    if len(before) < BATCH_MIN_BEFORE or not after:
        return NOT_FIRED
    mb, ma = _mean(before), _mean(after)
    if mb == 0:
        return NOT_FIRED
    change = (ma - mb) / abs(mb)
    if not abs(change) > threshold:
        return NOT_FIRED
    sev = Severity.MEDIUM if change > 0 else Severity.LOW
    word = "worse" if change > 0 else "better"
    return _fire(Rule.BATCH_SIZE_IMPACT, Category.BATCH_SIZE, sev, step, change, threshold,
                 f"Batch size {old_size} → {new_size}: mean loss {mb:.4g} → {ma:.4g} ({change:+.1%}, {word})",
                 old_batch_size=old_size, new_batch_size=new_size, loss_before=mb, loss_after=ma)


def convergence_rate(window: Sequence[float]) -> float:
    """Relative improvement of the loss across ``window``: (mean of first half − mean of second half) / |first|.

    Positive while the loss falls, about 0 on a plateau, negative when it rises.
    """
    n = len(window)
    half = n // 2
    # islice, not slices: a deque (the engine's window) is read in place; fsum rounds once either way
    first, second = math.fsum(islice(window, 0, half)) / half, math.fsum(islice(window, half, n)) / (n - half)
    return (first - second) / abs(first) if first != 0 else 0.0


def convergence(window: Sequence[float], step: int, plateau_threshold: float = PLATEAU_THRESHOLD,
                size: int = PLATEAU_WINDOW, divergence_rate: float = CONVERGENCE_DIVERGENCE_RATE) -> RuleResult:
    """``convergence_divergence`` when the rate < ``divergence_rate`` (−0.1), ``convergence_plateau`` when
    it is below ``plateau_threshold`` (not improving) but not diverging. Needs ``size`` losses."""
    if len(window) < size:
        return NOT_FIRED
    rate = convergence_rate(window if len(window) == size else list(window)[-size:])  # the engine's: in place
    if rate < divergence_rate:
        return _fire(Rule.CONVERGENCE_DIVERGENCE, Category.CONVERGENCE, Severity.HIGH, step, rate, divergence_rate,
                     f"Loss increasing: convergence rate {rate:+.3f} over the last {size} values", window=size)
    if rate < plateau_threshold:
        return _fire(Rule.CONVERGENCE_PLATEAU, Category.CONVERGENCE, Severity.LOW, step, rate, plateau_threshold,
                     f"Training plateau: loss improved {rate:+.4%} over the last {size} values", window=size)
    return NOT_FIRED


def optimizer_stalled(unchanged_logs: int, unchanged_steps: int, step: int, learning_rate: float | None,
                      sampled: float | None = None, min_logs: int = STALL_LOGS,
                      min_steps: int = STALL_MIN_STEPS) -> RuleResult:
    """Fires when none of the sampled weights changed at ``unchanged_logs`` consecutive logged steps
    spanning ``unchanged_steps`` training steps, while the learning rate is not 0 (a schedule at 0 is
    expected to leave the weights alone). High: the training goes on and learns nothing."""
    if min_logs <= 0 or unchanged_logs < min_logs or unchanged_steps < min_steps:
        return NOT_FIRED
    if learning_rate is not None and not learning_rate > 0:
        return NOT_FIRED
    lr = "unknown" if learning_rate is None else f"{learning_rate:.3g}"
    return _fire(Rule.OPTIMIZER_STALLED, Category.CONVERGENCE, Severity.HIGH, step, 0.0, None,
                 f"Optimizer stalled: none of the sampled weights changed in the last {unchanged_steps} steps "
                 f"({unchanged_logs} logged steps) although the learning rate is {lr}: the updates are lost "
                 "(optimizer.step() skipped, a GradScaler skipping every step, frozen weights, or updates "
                 "below the weights' precision)", unchanged_logs=unchanged_logs, unchanged_steps=unchanged_steps,
                 learning_rate=learning_rate)


def calibration_score(predictions: Sequence[float], outcomes: Sequence[float], bins: int = CALIBRATION_BINS) -> float:
    """1 − expected calibration error of predicted probabilities against 0/1 outcomes (1.0 is perfect)."""
    n = len(predictions)
    if n == 0:
        return 1.0
    sums = [[0, 0.0, 0.0] for _ in range(bins)]
    for p, y in zip(predictions, outcomes):
        b = min(int(p * bins), bins - 1)
        s = sums[b]
        s[0] += 1
        s[1] += p
        s[2] += y
    ece = math.fsum(abs(s[1] - s[2]) for s in sums if s[0]) / n
    return 1.0 - ece


def to_probabilities(values: Iterable[float]) -> list[float]:
    """Predictions as probabilities: values already in [0, 1] stay, anything else is a logit (sigmoid)."""
    vals = [float(v) for v in values]
    if all(0.0 <= v <= 1.0 for v in vals):
        return vals
    return [1.0 / (1.0 + math.exp(-max(min(v, 60.0), -60.0))) for v in vals]


def to_outcomes(rewards: Iterable[float]) -> list[float]:
    """Rewards as 0/1 outcomes: 0/1 values stay, anything else is 1 when positive."""
    vals = [float(v) for v in rewards]
    if all(v in (0.0, 1.0) for v in vals):
        return vals
    return [1.0 if v > 0 else 0.0 for v in vals]


def calibration_poor(score: float, step: int, threshold: float = CALIBRATION_THRESHOLD, pairs: int = 0) -> RuleResult:
    if not score < threshold:
        return NOT_FIRED
    return _fire(Rule.CALIBRATION_POOR, Category.REWARD, Severity.MEDIUM, step, score, threshold,
                 f"Poor reward calibration: score {score:.3f} < {threshold}", pairs=pairs)


def calibration_drift(scores: Sequence[float], step: int, threshold: float = REWARD_DRIFT_THRESHOLD) -> RuleResult:
    """Fires when the latest calibration score moved more than ``threshold`` from the mean of the older half."""
    if len(scores) < 4:
        return NOT_FIRED
    older = scores[: len(scores) // 2]
    trend = scores[-1] - _mean(older)
    if not abs(trend) > threshold:
        return NOT_FIRED
    return _fire(Rule.CALIBRATION_DRIFT, Category.REWARD, Severity.MEDIUM, step, trend, threshold,
                 f"Calibration drift: score moved {trend:+.3f} (from {_mean(older):.3f} to {scores[-1]:.3f})")


def reward_distribution_drift(reference: Sequence[float], recent: Sequence[float], step: int,
                              threshold: float = REWARD_DRIFT_THRESHOLD, z_min: float = DRIFT_SIGNIFICANCE_Z) -> RuleResult:
    """Fires when the reward mean shifted by more than ``threshold`` reference standard deviations, and the
    shift is also ``z_min`` standard errors wide (so sampling noise of a small window never alerts)."""
    if len(reference) < 2 or len(recent) < 2:
        return NOT_FIRED
    m0, m1 = _mean(reference), _mean(recent)
    s0, s1 = _std(reference), _std(recent)
    scale = s0 if s0 > 0 else (abs(m0) if m0 != 0 else 1.0)
    change = abs(m1 - m0) / scale
    se = math.sqrt(s0 * s0 / len(reference) + s1 * s1 / len(recent))
    z = abs(m1 - m0) / se if se > 0 else math.inf
    if not (change > threshold and z > z_min):
        return NOT_FIRED
    return _fire(Rule.REWARD_DISTRIBUTION_DRIFT, Category.REWARD, Severity.MEDIUM, step, change, threshold,
                 f"Reward distribution drift: mean {m0:.4g} → {m1:.4g} ({change:.2f} reference std)",
                 mean_before=m0, mean_after=m1, std_before=s0, z=z if math.isfinite(z) else None)


# --------------------------------------------------------------------------- the engine

@dataclass
class Observation:
    """What is known at one step; any field may be missing."""

    step: int
    loss: float | None = None
    accuracy: float | None = None
    grad_norm: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    eval_loss: float | None = None
    rewards: Sequence[float] | None = None
    predictions: Sequence[float] | None = None
    weights_changed: float | None = None
    """Fraction of a sample of trainable weights that changed since the previous logged step (the
    collector's :class:`collectors.anomaly.updatewatch.UpdateWatch`; None where the weights are not seen)."""


def _is_outlier(result: RuleResult) -> bool:
    """Whether a gated rule fired on a single extreme value (kept out of the noise window)."""
    return result.fired and result.alert is not None and bool(result.alert.metadata.get("extreme"))


ACCURACY_KEYS = ("eval_accuracy", "accuracy", "eval_acc", "acc")
"""Metric names read as the accuracy of a record, in this order."""


def observation_from_record(record: Mapping[str, Any]) -> Observation | None:
    """The engine's input from one metrics record (pure): train records give loss, grad norm, learning
    rate (and batch size / accuracy when logged); eval records give accuracy and eval loss. Summaries
    give nothing. The in-training plugin and the Smart Monitor feed the engine through this alone."""
    kind = record.get("kind")
    step = record.get("step")
    if not isinstance(step, int):
        return None
    acc = next((record[k] for k in ACCURACY_KEYS if isinstance(record.get(k), (int, float))), None)
    if kind == rf.RecordKind.TRAIN.value:
        bs = record.get("batch_size")
        return Observation(step=step, loss=_num(record.get("loss")), accuracy=acc, grad_norm=_num(record.get("grad_norm")),
                           learning_rate=_num(record.get("learning_rate")), batch_size=bs if isinstance(bs, int) else None)
    if kind == rf.RecordKind.EVAL.value:
        eval_loss = _num(record.get("eval_loss"))
        if acc is not None or eval_loss is not None:
            return Observation(step=step, accuracy=acc, eval_loss=eval_loss)
    return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class RuleEngine:
    """Applies every rule to a stream of observations, keeping the bounded histories they read.

    Pure computation (no I/O, no torch): the collector plugin, the plain-loop detector and the
    standalone watcher all feed it. Level rules (see :data:`LEVEL_RULES`) are reported when their
    condition starts and then every :data:`ALERT_REPEAT_EVERY` observations while it lasts.

    Args:
        config: thresholds; swap it at any time with :meth:`set_config` (live sliders).

    Example:
        >>> eng = RuleEngine()
        >>> for s, l in enumerate([0.75] * 5, 1):
        ...     _ = eng.observe(Observation(step=s, loss=l))
        >>> [a.reason for a in eng.observe(Observation(step=6, loss=1.02))]
        ['loss_spike_36.0pct']
    """

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self.best_loss: float | None = None
        self.best_loss_step: int | None = None
        self.latest_loss: float | None = None
        self.latest_accuracy: float | None = None
        self.step = 0
        self.expect_eval = False
        """Set by a collector that knows the training evaluates (Trainer with an eval strategy)."""
        self.lr_restarts = False
        """Set by a collector that knows the schedule restarts (Trainer's ``cosine_with_restarts``): a rate that
        jumps back to at most the run's own peak is then the schedule, not a sudden change. A plain loop's
        ``CosineAnnealingWarmRestarts`` is not known to the engine; its restarts are ``lr_sudden_change``
        (medium), unless ``learning_rate.restarts`` is set."""
        self._lr_peak: float | None = None
        self.seen_eval = False
        self._alloc()
        self._active: dict[str, int] = {}
        self._stall_logs = 0
        self._stall_from = 0
        self._stall_fired = False
        self._long_age = 0
        self._loss_logs = 0
        self._last_spike_log: int | None = None
        self._quiet_max = 0
        self._seen_change = False
        self._last_train_step: int | None = None
        self._warm_prev_lr: float | None = None
        self._warm_rises = 0
        self._warm_after: int | None = None
        """Logs with a learning rate since the warm-up ended (None: not ended, or no rate logged yet)."""
        self._warm = False
        """Whether the training is judged as in a warm-up: its rate's (:meth:`_lr_warmup`) or, while it has
        logged no rate, its loss's early fall (:meth:`_early_fall`)."""
        self.held: list[Alert] = []
        """The firings of the latest :meth:`observe` that repeat suppression kept out of its result (a
        lasting condition between its every-``ALERT_REPEAT_EVERY`` repeats). The file stays short; the
        incident tracker still counts them, so a lasting incident does not resolve between repeats."""

    def _alloc(self, old: "RuleEngine | None" = None) -> None:
        c = self.config
        def dq(name: str, size: int) -> deque:
            prev = getattr(old, name, None) if old is not None else None
            return deque(prev or (), maxlen=size)
        self.losses = dq("losses", max(c.smart.loss_window, c.smart.divergence_window))
        self.accuracies = dq("accuracies", c.smart.loss_window)
        self.grad_norms = dq("grad_norms", c.gradient.window_size)
        self.lr_points = dq("lr_points", LR_TREND_POINTS)
        self.conv_losses = dq("conv_losses", c.convergence.plateau_window)
        self._conv_sums: list[float] | None = None
        self.batch_losses = dq("batch_losses", c.batch_size.window_size)
        self.rewards = dq("rewards", 2 * c.reward_drift.window_size)
        self.pairs = dq("pairs", c.reward_drift.window_size)
        self.cal_scores = dq("cal_scores", CALIBRATION_HISTORY)
        self.noise_losses = dq("noise_losses", c.noise.window)
        self.noise_grads = dq("noise_grads", c.noise.window)
        self.noise_accs = dq("noise_accs", c.noise.window)
        self._streak: dict[str, int] = dict(getattr(old, "_streak", None) or {})
        self._shifted: dict[str, bool] = {}
        self._over: dict[str, float] = {}
        """Per metric, the value of the last log when it was above its gate without firing (next log only)."""
        self._pair_tail: dict[str, int] = {}
        """Per metric, logs left in which a two-in-a-row spike's own values fill the lasting-rise tail."""
        self._gmoments: list[float] | None = None
        self._gmoments_age = 0
        self._gmoments_dropped = 0.0
        self._levels: dict[str, list[Any]] = {}
        self.batch_size: int | None = getattr(old, "batch_size", None)
        self.batch_change: dict[str, Any] | None = getattr(old, "batch_change", None)

    def set_config(self, config: AnomalyConfig) -> None:
        """Use new thresholds from the next observation on, keeping the histories (resized)."""
        old = RuleEngine.__new__(RuleEngine)
        old.__dict__.update(self.__dict__)
        self.config = config
        self._alloc(old)

    # ------------------------------------------------------------------ observe
    def observe(self, obs: Observation) -> list[Alert]:
        """Apply every rule that has the data it needs; returns the alerts (possibly none)."""
        c = self.config
        step = obs.step
        if step > self.step:  # eval records may arrive after later train steps
            self.step = step
        results: list[RuleResult] = []
        if obs.learning_rate is not None:
            self._warm = self._lr_warmup(obs.learning_rate)
        elif self._warm_prev_lr is None and obs.loss is not None:  # no rate logged yet: the loss says
            self._warm = self._early_fall()
        # each rule below is called only where it can fire: the engine runs at every log, and calls cost
        if obs.loss is not None and not (type(obs.loss) is float and math.isfinite(obs.loss)):
            results.append(non_finite("loss", obs.loss, step))
        if obs.grad_norm is not None and not (type(obs.grad_norm) is float and math.isfinite(obs.grad_norm)):
            results.append(non_finite("grad_norm", obs.grad_norm, step))
        loss = obs.loss if is_finite_number(obs.loss) else None
        if loss is not None:
            hist = list(self.losses)[-(c.smart.loss_window - 1):]
            spike = loss_spike(hist, loss, step, c.smart.loss_spike_threshold)
            if c.noise.enabled:
                spike = self._noise_gate("loss", spike, self.noise_losses, loss, c.smart.loss_spike_threshold,
                                         self._loss_spike_alert)
                self._loss_logs += 1
                if spike.fired:
                    self._last_spike_log = self._loss_logs  # the same rise must not alert again over the long tail
                elif c.noise.long_shift_logs:
                    spike = self._long_shift(loss)
            results.append(spike)
            if not self._best_on_eval(obs):
                results.append(self._best(loss, step, "loss"))
            self.losses.append(loss)
            if c.noise.enabled:
                results.append(self._noisy_divergence(loss, step))
            else:
                results.append(divergence(list(self.losses), step, c.smart.divergence_fraction,
                                          c.smart.divergence_window))
            if not _is_outlier(spike):  # one outlier must not hide the next, nor widen the spread
                self.noise_losses.append(loss)
            self._conv_slide()
            self.conv_losses.append(loss)
            conv = self._convergence(step)
            if c.noise.enabled and conv.fired and conv.alert is not None and conv.alert.rule == Rule.CONVERGENCE_DIVERGENCE.value:
                conv = self._significant_rise(conv)
            results.append(conv)
            self.latest_loss = loss
        if obs.eval_loss is not None and not (type(obs.eval_loss) is float and math.isfinite(obs.eval_loss)):
            results.append(non_finite("eval_loss", obs.eval_loss, step))
        if obs.eval_loss is not None and is_finite_number(obs.eval_loss) and self._best_on_eval(obs):
            results.append(self._best(float(obs.eval_loss), step, "eval_loss"))
        if obs.accuracy is not None and is_finite_number(obs.accuracy):  # most train logs have none
            acc = accuracy_percent(float(obs.accuracy))
            drop = accuracy_drop(list(self.accuracies)[-(c.smart.loss_window - 1):], acc, step,
                                 c.smart.accuracy_drop_threshold)
            if c.noise.enabled:
                drop = self._accuracy_gate(drop, acc)
                if not _is_outlier(drop):
                    self.noise_accs.append(acc)
            results.append(drop)
            self.accuracies.append(acc)
            self.latest_accuracy = acc
        if is_finite_number(obs.grad_norm):
            g = float(obs.grad_norm)
            boom = gradient_explosion(g, step, c.gradient.explosion_threshold)
            if c.noise.enabled:
                boom = self._noise_gate("grad_norm", boom, self.noise_grads, g, 0.0, self._explosion_alert)
                if not _is_outlier(boom):
                    self.noise_grads.append(g)
            results.append(boom)
            if not g >= c.gradient.vanishing_threshold:
                results.append(gradient_vanishing(g, step, c.gradient.vanishing_threshold))
            self._gmoments_dropped = self.grad_norms[0] if len(self.grad_norms) == self.grad_norms.maxlen else 0.0
            self.grad_norms.append(g)
            n_g = len(self.grad_norms)
            if n_g >= GRADIENT_VARIANCE_MIN_SAMPLES and self._variance_candidate(n_g, c.gradient.variance_factor):
                results.append(gradient_variance(list(self.grad_norms), step, c.gradient.variance_factor))
        if is_finite_number(obs.learning_rate):
            lr = float(obs.learning_rate)
            prev = self.lr_points[-1][1] if self.lr_points else None
            if not c.learning_rate.min_lr <= lr <= c.learning_rate.max_lr:
                results.append(lr_out_of_range(lr, step, c.learning_rate.min_lr, c.learning_rate.max_lr, prev))
            if len(self.lr_points) >= 2 and not lr > self.lr_points[-1][1]:
                pass  # not above the last rate: no prediction can be exceeded (the rule only fires on rises)
            elif ((self.lr_restarts or c.learning_rate.restarts) and self._lr_peak is not None
                  and lr <= self._lr_peak * (1.0 + 1e-6)):
                pass  # a restart of the schedule: back to its own peak, not beyond it
            else:
                results.append(lr_sudden_change(list(self.lr_points), step, lr, c.learning_rate.change_threshold))
            if not self.lr_points or self.lr_points[-1][0] != step:
                self.lr_points.append((step, lr))
            if self._lr_peak is None or lr > self._lr_peak:
                self._lr_peak = lr
        if obs.weights_changed is not None and c.convergence.stall_logs > 0:
            results.append(self._stalled(obs))
        if obs.loss is not None:
            self._last_train_step = step
        if obs.batch_size is not None:
            results.append(self._batch(int(obs.batch_size), loss, step))
        elif loss is not None:
            if self.batch_change is None:
                self.batch_losses.append(loss)  # what _batch does when no batch-size change is being judged
            else:
                results.append(self._batch(None, loss, step))
        if obs.rewards is not None:
            results.extend(self._rewards(obs.rewards, obs.predictions, step))
        return self._gate([r.alert for r in results if r.fired and r.alert is not None])

    def _stalled(self, obs: Observation) -> RuleResult:
        """Count the logged steps at which no sampled weight moved, from the last logged step they did.

        The run's own rhythm raises the bar: a loop that logs every micro-batch of a gradient
        accumulation sees the weights still for k − 1 logs in a row, every time. A stall must outlast
        twice the longest still stretch the run has come out of by itself (that did not alert), and
        before the weights were ever seen moving it must span ``5 × stall_min_steps`` steps."""
        cc = self.config.convergence
        lr = obs.learning_rate if is_finite_number(obs.learning_rate) else (
            self.lr_points[-1][1] if self.lr_points else None)
        if obs.weights_changed or (lr is not None and not lr > 0):
            if obs.weights_changed and self._stall_logs and not self._stall_fired:
                self._quiet_max = max(self._quiet_max, self._stall_logs)
            self._seen_change = self._seen_change or bool(obs.weights_changed)
            self._stall_logs = 0
            self._stall_fired = False
            return NOT_FIRED
        if self._stall_logs == 0:
            self._stall_from = self._last_train_step if self._last_train_step is not None else obs.step - 1
        self._stall_logs += 1
        result = optimizer_stalled(self._stall_logs, obs.step - self._stall_from, obs.step, lr,
                                   min_logs=max(cc.stall_logs, 2 * self._quiet_max + 1),
                                   min_steps=cc.stall_min_steps * (1 if self._seen_change else 5))
        self._stall_fired = self._stall_fired or result.fired
        return result

    def _conv_slide(self) -> None:
        """Before a loss enters the full convergence window: move the running half sums along (the oldest
        value leaves the first half, the middle one passes from the second half to the first)."""
        window = self.conv_losses
        if self._conv_sums is None or len(window) < window.maxlen:
            self._conv_sums = None
            return
        half = window.maxlen // 2
        first, second, age = self._conv_sums
        mid = window[half]
        self._conv_sums = [first - window[0] + mid, second - mid, age + 1]  # the new value is added after

    def _convergence(self, step: int) -> RuleResult:
        """:func:`convergence` on the window, judged first from running half sums (refreshed exactly every
        256 logs); the exact rule runs only when that rate is within a hair of a limit or past one, which
        few logs are. Summing 50 values twice per log was a tenth of the engine's cost."""
        cc = self.config.convergence
        window, size = self.conv_losses, cc.plateau_window
        n = len(window)
        if n < size:
            return NOT_FIRED
        half = size // 2
        sums = self._conv_sums
        if sums is None or sums[2] >= 256:
            sums = self._conv_sums = [math.fsum(islice(window, 0, half)), math.fsum(islice(window, half, n)), 0]
        else:
            sums[1] += window[-1]
        first = sums[0] / half
        if first != 0 and math.isfinite(first):
            rate = (first - sums[1] / (size - half)) / abs(first)
            if rate >= cc.plateau_threshold + 1e-9 and rate >= cc.divergence_rate + 1e-9:
                return NOT_FIRED  # clearly improving: no limit is near (the float error of the sums is ~1e-15)
        return convergence(window, step, cc.plateau_threshold, size, cc.divergence_rate)

    def _variance_candidate(self, n: int, factor: float) -> bool:
        """Cheap pre-check of :func:`gradient_variance` from a running sum and sum of squares, refreshed
        every 256 logs against drift; the exact rule (two passes over the window) runs only when this
        says the variance is within 5 % of its limit. The window is 100 norms by default: computing its
        standard deviation on every log was most of the engine's cost."""
        self._gmoments_age += 1
        if self._gmoments_age >= 256 or self._gmoments is None:
            self._gmoments = None
            self._gmoments_age = 0
        if self._gmoments is None:
            vals = self.grad_norms
            self._gmoments = [math.fsum(vals), math.fsum(v * v for v in vals), n]
        else:
            total, sq, prev_n = self._gmoments
            new = self.grad_norms[-1]
            if prev_n == n:  # full window: one value left as one came in
                old = self._gmoments_dropped
                total -= old
                sq -= old * old
            total += new
            sq += new * new
            self._gmoments = [total, sq, n]
        total, sq, _ = self._gmoments
        mean = total / n
        var = max(sq / n - mean * mean, 0.0)
        return var > (mean * factor) ** 2 * 0.9

    def _lr_warmup(self, lr: Any) -> bool:
        """Whether the training is in its learning-rate warm-up, or just after it: from the first logged rate
        while every rate rose above the one before, until the first that did not (flat or falling), and for
        as many logs after as the warm-up lasted, at most ``noise.warmup_logs`` (the loss settles for a while
        after the rate peaks; a 2-log warm-up gets 2). Never again after that, so a later rise (a spike, a
        divergence's growing rate) is judged in full. A run that never logs a rate, or whose rate starts
        flat, has no warm-up here (the first ``warmup_logs`` logs have their own grace)."""
        if is_finite_number(lr):
            lr = float(lr)
            if self._warm_after is not None:
                self._warm_after += 1
            else:
                prev, self._warm_prev_lr = self._warm_prev_lr, lr
                if prev is not None and lr > prev * (1.0 + 1e-9) and lr > prev:
                    self._warm_rises += 1
                elif prev is not None:
                    self._warm_after = 0
        return self._in_warmup()

    def _in_warmup(self) -> bool:
        """What :meth:`_lr_warmup` says, from its counters alone (a restored state derives it too)."""
        if not self._warm_rises:
            return False
        return self._warm_after is None or self._warm_after <= min(self.config.noise.warmup_logs, self._warm_rises)

    def _early_fall(self) -> bool:
        """Whether a training that has logged no learning rate is in its early training, as its loss tells:
        while its first ``noise.window`` losses last, the median of the window's first
        :data:`EARLY_FALL_LOGS` values is :data:`EARLY_FALL_FRACTION` above the median of its last ones.
        Why: a plain loop that logs only its loss has no schedule to say it warms up, yet its first steps
        (a rising rate, a model still near chance) jump just as far; the suite's healthy bs2 GPT-2 runs,
        replayed without their rate, logged losses 49-108 % above their recent average at steps 37-68. In
        the early fall a loss is judged as in a warm-up (single values only beyond twice anything the window
        holds, see :meth:`_lr_warmup`); a non-finite value, level shifts and divergence are judged as ever.
        A flat or slowly falling loss is judged in full from its first logs; a run that logs a rate is
        judged by its rate's warm-up instead."""
        w = self.noise_losses
        m = EARLY_FALL_LOGS
        if len(w) < 2 * m or self._loss_logs >= w.maxlen:  # only while the window holds the first logs
            return False
        first = sorted(islice(w, 0, m))
        last = sorted(_newest(w, m))
        recent = _median(last)
        return recent > 0 and _median(first) > recent * (1.0 + EARLY_FALL_FRACTION)

    # ------------------------------------------------------------------ the noise gate
    def _noise_gate(self, key: str, guide: RuleResult, window: Sequence[float], current: float,
                    rel_threshold: float, make: "Any") -> RuleResult:
        """The guide's rule, gated by the metric's own noise (see :class:`NoiseConfig`).

        ``guide`` is the guide's rule on this value (relative to the recent average, or the absolute
        gradient limit). Two ways to fire:

        * a single value, at once, when the guide's rule fired, it clears the gate (``rel_threshold``
          above the window's median and ``k`` robust standard deviations above it) and it is beyond
          anything the window holds (its maximum × (1 + ``extreme_factor``)) or ``2 k`` robust standard
          deviations above the median; this needs only the guide's 3 values of history, so a blow-up
          early in training is caught too;
        * after ``warmup_logs`` values, a level shift (label noise, a broken data pipeline, the aftermath of an LR spike): the mean of
          the last ``patience + 2`` values without their largest is ``rel_threshold`` above the median
          and ``shift_k`` standard errors of that mean above it. Dropping the largest value keeps one outlier
          batch of a small-batch training from faking a shift. Gradient norms take the median of those
          values instead: their isolated spikes come two in five logs now and then.

        A shift alerts once when it starts; the incident layer follows how long it lasts.
        """
        n = self.config.noise
        over_before = self._over.pop(key, None)
        if len(window) < MIN_HISTORY:
            return NOT_FIRED
        if key == "grad_norm" and len(window) < n.warmup_logs and not (guide.fired and beyond_window(
                NoiseLevel(0.0, 0.0, max(window)), current, EARLY_FACTOR - 1.0)):
            return NOT_FIRED  # early gradient norms jump several-fold in healthy runs: only a blow-up counts
        if guide.fired:  # rare (the guide's own threshold was crossed): judge on the exact level
            lvl = self._level(key, window, fresh=True)
            if len(window) < n.window:  # a spread from few values is uncertain: widen it accordingly
                lvl = lvl._replace(sigma=lvl.sigma * (1.0 + SMALL_SAMPLE_WIDEN / math.sqrt(len(window) - 1)))
            # centred where the guide centres: the recent average (the window's median lags a falling loss)
            centre = recent_average([window[-j] for j in range(min(RECENT_COUNT, len(window)), 0, -1)]) if key == "loss" else lvl.median
            limit = max(centre * (1.0 + rel_threshold) if centre > 0 else centre, centre + n.k * lvl.sigma)
            if key == "grad_norm" and guide.alert is not None and guide.alert.threshold is not None:
                limit = max(limit, guide.alert.threshold)
            if key == "grad_norm":  # heavy-tailed: judged by how many times the median, not in sigmas
                at_once = current > lvl.median * n.grad_extreme_ratio and (
                    not self._warm or beyond_window(lvl, current, EARLY_FACTOR - 1.0))
            else:  # in the warm-up, only beyond anything the window holds
                at_once = beyond_window(lvl, current, n.extreme_factor) or (
                    not self._warm and current > centre + 2.0 * n.k * lvl.sigma)
            if current > limit and at_once:
                self._shifted[key] = True
                return make(current, limit, lvl, 1, True, guide)
            # two logs in a row: one above half the gate, then one above the full gate (a corrupt batch
            # that Trainer's averaging spreads over two logs); not judged before a full window
            if (key == "loss" and not self._warm and len(window) >= n.window and not self._shifted.get(key)
                    and current > max(centre * (1.0 + rel_threshold) if centre > 0 else centre,
                                      centre + 0.5 * n.k * lvl.sigma)):
                if over_before is not None and current > limit:
                    self._shifted[key] = True
                    # the pair stays in the window: its tail must not read as a lasting rise of its own
                    self._pair_tail[key] = n.patience + 2
                    return self._pair_spike_alert(over_before, current, limit, lvl)
                self._over[key] = current
        if self._pair_tail.get(key):
            self._pair_tail[key] -= 1
            return NOT_FIRED
        if len(window) < max(n.warmup_logs, n.patience + 1):
            return NOT_FIRED
        if key == "grad_norm" and (self._warm or len(window) < n.window):  # an early training's norms are
            return NOT_FIRED  # turbulent for dozens of logs (with or without a warm-up): only a blow-up counts
        tail = _newest(window, n.patience + 1)
        tail.append(current)
        if key == "grad_norm":  # heavy-tailed: two isolated spikes in five logs are not a level
            mean = _median(sorted(tail))
        else:
            tail.remove(max(tail))
            mean = math.fsum(tail) / len(tail)
        if key == "grad_norm":
            absolute = (guide.alert.threshold if guide.alert is not None and guide.alert.threshold is not None
                        else self.config.gradient.explosion_threshold)
            if mean < 0.5 * absolute:  # under half the guide's limit, which the shift limit is at least: no
                self._shifted[key] = False  # level needed (re-armed, as below); the next level is taken fresh
                self._levels.pop(key, None)
                return NOT_FIRED
        lvl = self._level(key, window)
        shift_limit = self._shift_limit(key, lvl, rel_threshold, guide, len(tail))
        if not mean > shift_limit:  # on a level at most LEVEL_REFRESH logs old: the window moves slowly
            if mean < 0.5 * (shift_limit + lvl.median):  # hysteresis: a shift re-arms once clearly over
                self._shifted[key] = False
            return NOT_FIRED
        if self._levels.get(key, [None, 0])[1] != 0:  # judged on a cached level: confirm on the exact one
            lvl = self._level(key, window, fresh=True)
            shift_limit = self._shift_limit(key, lvl, rel_threshold, guide, len(tail))
            if not mean > shift_limit:
                self._shifted[key] = False
                return NOT_FIRED
        if self._shifted.get(key):
            return NOT_FIRED
        self._shifted[key] = True
        return make(mean, shift_limit, lvl, len(tail), False, guide)

    def _long_shift(self, loss: float) -> RuleResult:
        """A lasting rise too small against the noise to show in a few logs (label noise in a small-batch
        training that had learnt little: +35 % at a per-log noise of ±20 %): the trimmed mean of the last
        ``long_shift_logs`` losses, against the level of the window's values before them, must clear the
        guide's fraction and ``shift_k`` standard errors of that longer mean. Judged on cached levels;
        alerts once per rise. A slow check, so it runs every :data:`LONG_SHIFT_EVERY` logs (cost)."""
        n = self.config.noise
        m = n.long_shift_logs
        window = self.noise_losses
        self._long_age += 1
        if len(window) < max(n.warmup_logs, m) + m or self._long_age < LONG_SHIFT_EVERY:
            return NOT_FIRED
        self._long_age = 0
        cached = self._levels.get("loss_long")
        if cached is None or cached[1] >= LEVEL_REFRESH:
            cached = self._levels["loss_long"] = [noise_level(list(islice(window, 0, len(window) - (m - 1)))), 0]
        cached[1] += 1
        base = cached[0]
        tail = _newest(window, m - 1)
        tail.append(loss)
        tail.remove(max(tail))
        mean = math.fsum(tail) / len(tail)
        rel = self.config.smart.loss_spike_threshold
        limit = max(base.median * (1.0 + rel) if base.median > 0 else base.median,
                    base.median + n.shift_k * base.sigma / math.sqrt(len(tail)))
        if not mean > limit:
            return NOT_FIRED
        if self._last_spike_log is not None and self._loss_logs - self._last_spike_log <= 2 * m:
            return NOT_FIRED  # this rise alerted already (here, or as a short shift)
        self._last_spike_log = self._loss_logs
        return self._loss_spike_alert(mean, limit, base, len(tail), False, NOT_FIRED)

    def _shift_limit(self, key: str, lvl: NoiseLevel, rel_threshold: float, guide: RuleResult, n_tail: int) -> float:
        """What the trimmed recent mean must exceed to be a level shift: the guide's fraction above the
        median (for gradient norms, at least the guide's absolute limit) and ``shift_k`` standard errors."""
        rel = lvl.median * (1.0 + rel_threshold) if lvl.median > 0 else lvl.median
        if key == "grad_norm":
            rel = max(rel, guide.alert.threshold if guide.alert is not None and guide.alert.threshold is not None
                      else self.config.gradient.explosion_threshold, lvl.median * GRAD_SHIFT_RATIO)
        return max(rel, lvl.median + self.config.noise.shift_k * lvl.sigma / math.sqrt(n_tail))

    def _level(self, key: str, window: Sequence[float], fresh: bool = False) -> NoiseLevel:
        """The window's level, recomputed every :data:`LEVEL_REFRESH` logs (it moves slowly) or when a
        decision hangs on it (``fresh``); keeps the gate's cost a few microseconds per log."""
        cached = self._levels.get(key)
        if fresh or cached is None or cached[1] >= LEVEL_REFRESH:
            lvl = noise_level(window)
            self._levels[key] = [lvl, 0]
            return lvl
        cached[1] += 1
        return cached[0]

    def _loss_spike_alert(self, current: float, limit: float, lvl: NoiseLevel, streak: int, extreme: bool,
                          guide: RuleResult) -> RuleResult:
        if extreme and guide.alert is not None:  # the guide's message and reason (percent above the recent average)
            a = guide.alert
            a.threshold = limit
            a.message += f"; beyond the run's own noise (level {lvl.median:.4g} ± {lvl.sigma:.3g})"
            a.metadata.update(recent_level=lvl.median, noise_sigma=lvl.sigma, noise_k=self.config.noise.k,
                              consecutive=streak, extreme=True)
            return guide
        return self._gated_spike(current, limit, lvl, streak, f"the last {streak} logged losses average "
                                 f"{current:.4g} (the largest left out)")

    def _gated_spike(self, current: float, limit: float, lvl: NoiseLevel, streak: int, what: str,
                     **metadata: Any) -> RuleResult:
        """A loss spike the noise gate found by more than one log (``what`` says which logs)."""
        pct = (current / lvl.median - 1.0) * 100.0 if lvl.median > 0 else math.inf
        return _fire(Rule.LOSS_SPIKE, Category.LOSS, Severity.HIGH, self.step, current, limit,
                     f"Loss spike: {what}, {pct:.1f}% above the recent level {lvl.median:.4g} (noise "
                     f"±{lvl.sigma:.3g}; limit {limit:.4g})", f"loss_spike_{pct:.1f}pct", recent_level=lvl.median,
                     noise_sigma=lvl.sigma, threshold_fraction=self.config.smart.loss_spike_threshold,
                     noise_k=self.config.noise.k, consecutive=streak, extreme=False, **metadata)

    def _accuracy_gate(self, guide: RuleResult, current: float) -> RuleResult:
        """The guide's accuracy drop (``smart.accuracy_drop_threshold`` points below the recent average),
        gated by the accuracies' own noise as the loss is (see :class:`NoiseConfig`; accuracies in percent).

        A per-step batch accuracy at batch size 8 moves in steps of 12.5 points, and an eval accuracy on 64
        examples by ±6, so the guide's 10 points fire on healthy training. Two ways to fire:

        * a single value, when the guide's rule fired and it is also ``k`` robust standard deviations below
          the recent average (fewer than 3 earlier values judge nothing: there is no noise to learn yet);
        * after ``warmup_logs`` values, a lasting drop: the mean of the last ``patience + 2`` values without
          their smallest is the guide's points and ``shift_k`` standard errors below the window's median
          (a collapse that a noisy per-step accuracy hides from the first way). Alerted once per drop.
        """
        n = self.config.noise
        window = self.noise_accs
        if len(window) < MIN_HISTORY:
            return NOT_FIRED
        threshold = self.config.smart.accuracy_drop_threshold
        if guide.fired and guide.alert is not None:
            lvl = _bounded_level(window)
            if len(window) < n.window:
                lvl = lvl._replace(sigma=lvl.sigma * (1.0 + SMALL_SAMPLE_WIDEN / math.sqrt(len(window) - 1)))
            centre = recent_average(list(islice(window, max(0, len(window) - RECENT_COUNT), len(window))))
            limit = centre - max(threshold, n.k * lvl.sigma)
            if current < limit:
                self._shifted["accuracy"] = True
                a = guide.alert
                a.threshold = limit
                a.message += f"; beyond the run's own noise (level {lvl.median:.1f}% ± {lvl.sigma:.2g})"
                a.metadata.update(recent_level=lvl.median, noise_sigma=lvl.sigma, noise_k=n.k, extreme=True,
                                  consecutive=1)
                return guide
        if len(window) < max(n.warmup_logs, n.patience + 1):
            return NOT_FIRED
        tail = list(islice(window, len(window) - n.patience - 1, len(window)))
        tail.append(current)
        tail.remove(min(tail))
        mean = math.fsum(tail) / len(tail)
        lvl = self._level("accuracy", window)
        limit = lvl.median - max(threshold, n.shift_k * lvl.sigma / math.sqrt(len(tail)))
        if not mean < limit:
            if mean > 0.5 * (limit + lvl.median):  # hysteresis: re-armed once clearly back
                self._shifted["accuracy"] = False
            return NOT_FIRED
        if self._shifted.get("accuracy"):
            return NOT_FIRED
        lvl = _bounded_level(window)  # a candidate: confirmed on the spread a bounded metric really has
        limit = lvl.median - max(threshold, n.shift_k * lvl.sigma / math.sqrt(len(tail)))
        if not mean < limit:
            return NOT_FIRED
        self._shifted["accuracy"] = True
        drop = lvl.median - mean
        return _fire(Rule.ACCURACY_DROP, Category.ACCURACY, Severity.HIGH, self.step, mean, limit,
                     f"Accuracy drop: the last {len(tail)} logged accuracies average {mean:.1f}% (the smallest "
                     f"left out), {drop:.1f} points below the recent level {lvl.median:.1f}% (noise "
                     f"±{lvl.sigma:.2g}; limit {limit:.1f}%)", f"accuracy_drop_{drop:.1f}pct",
                     recent_level=lvl.median, noise_sigma=lvl.sigma, threshold_points=threshold, noise_k=n.k,
                     consecutive=len(tail), extreme=False)

    def _pair_spike_alert(self, before: float, current: float, limit: float, lvl: NoiseLevel) -> RuleResult:
        """Two logged losses in a row, the first above half the gate (the guide's fraction and k / 2 robust
        deviations), the second above the full gate: a corrupt batch that Trainer's averaging spreads over
        two logs (the suite's LM family at batch size 2, logging every 5 steps: +32-40 %, then +72-84 %,
        just below the 2 k deviations a single value needs). Under noise alone the pair is as rare as one
        value beyond 2 k."""
        return self._gated_spike(current, limit, lvl, 2, f"two logged losses in a row beyond the run's noise, "
                                 f"{before:.4g} then {current:.4g}", previous=before)

    def _explosion_alert(self, current: float, limit: float, lvl: NoiseLevel, streak: int, extreme: bool,
                         guide: RuleResult) -> RuleResult:
        return _fire(Rule.GRADIENT_EXPLOSION, Category.GRADIENT, Severity.CRITICAL, self.step, current, limit,
                     f"Gradient explosion detected: norm={current:.4g} > {limit:.4g} (recent level "
                     f"{lvl.median:.4g} ± {lvl.sigma:.3g})", recent_level=lvl.median, noise_sigma=lvl.sigma,
                     consecutive=streak, extreme=extreme)

    def _noisy_divergence(self, loss: float, step: int) -> RuleResult:
        """Divergence judged on levels, not on the sign of noisy changes: the median of the last 9 logged
        losses rose ``divergence_rise`` above the median of the older half of the noise window, and by
        ``k / 2`` robust standard deviations of the whole window's changes, for three logs in a row."""
        n = self.config.noise
        window = self.noise_losses
        if len(window) < max(n.warmup_logs, 2 * DIVERGENCE_RECENT):
            return NOT_FIRED
        last = _newest(window, DIVERGENCE_RECENT - 1)
        last.append(loss)
        last.sort()
        recent = _median(last)
        cached = self._levels.get("divergence")
        if cached is None or cached[1] >= LEVEL_REFRESH or recent > cached[0].median * (1.0 + n.divergence_rise):
            vals = list(window)
            # the level from the older half (the rise must not move its own baseline), the spread from the
            # changes of the whole window: a level shift moves one change, not their spread, and 31 changes
            # can read half the noise (a bs2 LM's bimodal batch losses read ±0.37 where 63 read ±0.83)
            older = sorted(vals[: len(vals) // 2])
            cached = self._levels["divergence"] = [NoiseLevel(_median(older), change_sigma(vals), older[-1]), 0]
        cached[1] += 1
        base = cached[0]
        limit = max(base.median * (1.0 + n.divergence_rise), base.median + 0.5 * n.k * base.sigma)
        if not recent > limit:
            self._streak["divergence"] = 0
            return NOT_FIRED
        self._streak["divergence"] = streak = self._streak.get("divergence", 0) + 1
        if streak != 3:
            return NOT_FIRED
        rise = recent / base.median - 1.0 if base.median > 0 else math.inf
        return _fire(Rule.DIVERGENCE, Category.LOSS, Severity.HIGH, step, recent, limit,
                     f"Divergence: the loss level {recent:.4g} rose {rise:.0%} above its earlier level "
                     f"{base.median:.4g} (noise ±{base.sigma:.3g})", "divergence_detected",
                     earlier_level=base.median, noise_sigma=base.sigma, recent_level=recent)

    def _significant_rise(self, conv: RuleResult) -> RuleResult:
        """``convergence_divergence`` only when the rise across its window (the median of its second half above
        the first half's) is ``k / 2`` robust standard deviations of the whole window's changes."""
        vals = list(self.conv_losses)[-self.config.convergence.plateau_window:]
        half = len(vals) // 2
        first, second = _median(sorted(vals[:half])), _median(sorted(vals[half:]))  # only the medians are read
        # the spread of the whole window's changes, not the first half's alone: 24 changes of a calm stretch
        # read ±0.19 on a clean bs2 LM whose 49 read ±0.43, and its noise then passed for a rise
        if second - first > 0.5 * self.config.noise.k * change_sigma(vals):
            return conv
        return NOT_FIRED

    def _best_on_eval(self, obs: Observation) -> bool:
        """Whether "best model" follows the eval loss now (see :data:`BEST_MODEL_METRICS`)."""
        metric = self.config.smart.best_model_metric
        if metric != "auto":
            return metric == "eval_loss"
        if obs.eval_loss is not None and not self.seen_eval:
            self.seen_eval = True
            if not self.expect_eval:  # switching from train to eval loss: the first eval sets the baseline
                self.best_loss = self.best_loss_step = None
        return self.expect_eval or self.seen_eval

    def _best(self, value: float, step: int, metric: str) -> RuleResult:
        result = best_model(self.best_loss, value, step, self.config.smart.best_model_improvement, metric)
        if self.best_loss is None or value < self.best_loss:
            self.best_loss, self.best_loss_step = value, step
        return result

    def _batch(self, size: int | None, loss: float | None, step: int) -> RuleResult:
        c = self.config.batch_size
        if size is not None and self.batch_size is not None and size != self.batch_size:
            self.batch_change = {"old": self.batch_size, "new": size, "before": list(self.batch_losses), "after": []}
        if size is not None:
            self.batch_size = size
        result = NOT_FIRED
        if self.batch_change is not None and loss is not None:
            self.batch_change["after"].append(loss)
            if len(self.batch_change["after"]) >= c.window_size:
                ch = self.batch_change
                self.batch_change = None
                result = batch_size_impact(ch["before"], ch["after"], ch["old"], ch["new"], step, c.performance_threshold)
        if loss is not None:
            self.batch_losses.append(loss)
        return result

    def _rewards(self, rewards: Sequence[float], predictions: Sequence[float] | None, step: int) -> list[RuleResult]:
        c = self.config.reward_drift
        vals = [float(v) for v in rewards if is_finite_number(float(v))]
        out: list[RuleResult] = []
        if predictions is not None and len(predictions) == len(rewards) and vals:
            for p, y in zip(to_probabilities(predictions), to_outcomes(rewards)):
                self.pairs.append((p, y))
            if len(self.pairs) >= CALIBRATION_MIN_PAIRS:
                ps, ys = zip(*self.pairs)
                score = calibration_score(ps, ys)
                self.cal_scores.append(score)
                out.append(calibration_poor(score, step, c.calibration_threshold, len(self.pairs)))
                out.append(calibration_drift(list(self.cal_scores), step, c.drift_threshold))
        self.rewards.extend(vals)
        w = c.window_size
        if len(self.rewards) >= 2 * w:
            allr = list(self.rewards)
            out.append(reward_distribution_drift(allr[:w], allr[w:], step, c.drift_threshold))
        return out

    def _gate(self, alerts: list[Alert]) -> list[Alert]:
        """Drop repeats of lasting conditions (see :data:`LEVEL_RULES`)."""
        self.held = []
        if not alerts and not self._active:  # most logs: nothing fired and nothing lasting to forget
            return alerts
        fired = {a.rule for a in alerts}
        for rule in list(self._active):
            if rule not in fired:
                del self._active[rule]
        out = []
        for a in alerts:
            if a.rule in LEVEL_RULES:
                seen = self._active.get(a.rule)
                self._active[a.rule] = 1 if seen is None else seen + 1
                if seen is not None and seen % ALERT_REPEAT_EVERY != 0:
                    self.held.append(a)
                    continue
                if seen is not None:
                    a.metadata["repeated_for"] = seen
            out.append(a)
        return out

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss, "best_loss_step": self.best_loss_step, "latest_loss": self.latest_loss,
            "latest_accuracy": self.latest_accuracy, "step": self.step, "losses": list(self.losses),
            "accuracies": list(self.accuracies), "grad_norms": list(self.grad_norms),
            "lr_points": [list(p) for p in self.lr_points], "conv_losses": list(self.conv_losses),
            "batch_losses": list(self.batch_losses), "batch_size": self.batch_size,
            "active": dict(self._active), "seen_eval": self.seen_eval,
            "noise_losses": list(self.noise_losses), "noise_grads": list(self.noise_grads),
            "noise_accs": list(self.noise_accs),
            "streak": dict(self._streak),
            "lr_peak": self._lr_peak,
            "lr_warmup": {"prev_lr": self._warm_prev_lr, "rises": self._warm_rises, "after": self._warm_after},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_loss = state.get("best_loss")
        self.best_loss_step = state.get("best_loss_step")
        self.seen_eval = bool(state.get("seen_eval", False))
        self.latest_loss = state.get("latest_loss")
        self.latest_accuracy = state.get("latest_accuracy")
        self.step = int(state.get("step") or 0)
        self._streak = {str(k): int(v) for k, v in (state.get("streak") or {}).items()}
        self._gmoments = None  # recomputed from the restored norms
        self._conv_sums = None  # and the convergence window's half sums from the restored losses
        self._levels = {}
        for name in ("losses", "accuracies", "grad_norms", "conv_losses", "batch_losses", "noise_losses",
                     "noise_grads", "noise_accs"):
            d: deque = getattr(self, name)
            d.clear()
            d.extend(float(v) for v in state.get(name) or ())
        # the early fall (no rate logged) is judged only while the first window lasts: as many logs are behind
        self._loss_logs = max(self._loss_logs, len(self.noise_losses))
        self.lr_points.clear()
        self.lr_points.extend((int(s), float(v)) for s, v in state.get("lr_points") or ())
        self.batch_size = state.get("batch_size")
        self._active = {str(k): int(v) for k, v in (state.get("active") or {}).items()}
        peak = state.get("lr_peak")
        self._lr_peak = float(peak) if is_finite_number(peak) else None
        warm = state.get("lr_warmup")
        if isinstance(warm, Mapping):  # older states have none: the warm-up is then learnt again from the rates
            prev, rises, after = warm.get("prev_lr"), warm.get("rises"), warm.get("after")
            self._warm_prev_lr = float(prev) if is_finite_number(prev) else None
            self._warm_rises = int(rises) if isinstance(rises, int) and not isinstance(rises, bool) else 0
            self._warm_after = int(after) if isinstance(after, int) and not isinstance(after, bool) else None
            self._warm = self._in_warmup()

    def loss_history(self) -> list[float]:
        """The losses of the Smart Monitor window, oldest first (``metadata.json``'s ``loss_history``)."""
        return list(self.losses)[-self.config.smart.loss_window:]


# --------------------------------------------------------------------------- snapshot policy

NAN_SNAPSHOT_RULES = frozenset({Rule.NON_FINITE_LOSS.value, Rule.NON_FINITE_GRAD_NORM.value,
                                Rule.NON_FINITE_EVAL_LOSS.value})
"""Non-finite loss, gradient norm or eval loss: a snapshot of the last good state only (the live weights
are NaN or about to be; issue 11)."""
SNAPSHOT_PRIORITY = (Rule.NON_FINITE_LOSS.value, Rule.NON_FINITE_GRAD_NORM.value, Rule.NON_FINITE_EVAL_LOSS.value,
                     Rule.LOSS_SPIKE.value, Rule.DIVERGENCE.value, Rule.ACCURACY_DROP.value)


@dataclass(frozen=True)
class SnapshotPlan:
    """One snapshot to save now: its reason (``loss_spike_37.8pct``), every trigger's reason, pinned or not;
    ``live_weights`` False for a NaN event (only the last good state is worth saving); ``alerts`` the
    triggering alerts (their steps and patience give the fault's onset)."""

    reason: str
    triggers: tuple[str, ...]
    pinned: bool
    best_model: bool
    live_weights: bool = True
    alerts: tuple[Alert, ...] = ()


def plan_snapshots(alerts: Sequence[Alert], step: int, last_anomaly_save_step: int | None,
                   min_steps_between_saves: int) -> list[SnapshotPlan]:
    """Which snapshots the alerts of one step call for (pure).

    Anomaly triggers (loss spike, divergence, accuracy drop) give at most one snapshot, named after the
    highest-priority trigger and listing all of them, and only ``min_steps_between_saves`` after the
    previous anomaly snapshot; a non-finite loss or gradient norm gives a last-good-only snapshot. A new
    best model always gives its own snapshot (kept by ``keep_best``).
    """
    plans: list[SnapshotPlan] = []
    triggers = sorted((a for a in alerts if a.rule in SNAPSHOT_TRIGGER_RULES or a.rule in NAN_SNAPSHOT_RULES),
                      key=lambda a: SNAPSHOT_PRIORITY.index(a.rule))
    if triggers and (last_anomaly_save_step is None or step - last_anomaly_save_step >= min_steps_between_saves):
        nan = any(a.rule in NAN_SNAPSHOT_RULES for a in triggers)
        plans.append(SnapshotPlan(triggers[0].reason, tuple(a.reason for a in triggers), False, False,
                                  live_weights=not nan, alerts=tuple(triggers)))
    for a in alerts:
        if a.rule == BEST_MODEL_RULE:  # ranked by keep_best, not pinned (issue 11)
            plans.append(SnapshotPlan(a.reason, (a.reason,), False, True, alerts=(a,)))
    return plans
