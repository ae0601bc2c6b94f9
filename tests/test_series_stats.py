"""The runs table's three numbers from the raw series equal the merged view's, without building it."""
from __future__ import annotations

import math
from array import array

from services.model import Series, best_eval_loss, compare_series, last_step, series_stats, wall_span


def _series(steps, values, times=None) -> Series:
    s = Series()
    s.steps, s.values = array("d", steps), array("d", values)
    s.times = array("d", times if times is not None else [math.nan] * len(steps))
    return s


def test_stats_match_the_merged_view_with_nan_values_and_missing_times() -> None:
    series = {"train/loss": _series([1, 2, 3], [2.0, 1.5, math.nan], [10.0, math.nan, 12.0]),
              "eval/eval_loss": _series([2, 4], [math.nan, 1.25], [math.nan, 9.5]),
              "train/learning_rate": _series([1, 2, 3, 7], [1e-3] * 4)}
    cs = compare_series(series)
    assert series_stats(series) == (last_step(cs), best_eval_loss(cs), wall_span(cs)[0]) == (7, 1.25, 9.5)


def test_no_finite_eval_loss_and_no_times() -> None:
    series = {"eval/eval_loss": _series([5], [math.nan]), "train/loss": _series([5], [1.0])}
    cs = compare_series(series)
    assert series_stats(series) == (last_step(cs), best_eval_loss(cs), wall_span(cs)[0]) == (5, None, None)
    assert series_stats({}) == (None, None, None)


def test_two_raw_series_of_one_curve_defer_to_the_merged_view() -> None:
    # eval_loss and val_loss both normalise to eval/loss: which value wins a shared step is the merge's business
    series = {"eval/eval_loss": _series([1], [2.0]), "eval/val_loss": _series([1], [1.0])}
    assert series_stats(series) is None
