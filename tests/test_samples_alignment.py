"""Unit tests of collectors.samples.alignment: states, stats, minimality and the stats line."""
from __future__ import annotations

import random

import pytest

from collectors.samples.alignment import (METHOD_ALIGNMENT, METHOD_ALIGNMENT_APPROX, METHOD_POSITIONAL, AlignmentStats,
                                  Column, TokenState, align, align_with_method, compare, compute_stats,
                                  format_stats_line, positional)

M, X, MI, E = TokenState.MATCH, TokenState.MISMATCH, TokenState.MISSING, TokenState.EXTRA


def states(cols: list[Column]) -> list[TokenState]:
    return [c.state for c in cols]


def levenshtein(a: list, b: list) -> int:
    """Independent reference (recursive with memo) for the minimality check."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def check_consistent(golden: list, predicted: list, cols: list[Column]) -> None:
    """Columns must walk both sequences in order, exactly once each, with states that fit the tokens."""
    assert [c.golden for c in cols if c.golden is not None] == list(range(len(golden)))
    assert [c.predicted for c in cols if c.predicted is not None] == list(range(len(predicted)))
    for c in cols:
        if c.state is M:
            assert golden[c.golden] == predicted[c.predicted]
        elif c.state is X:
            assert golden[c.golden] != predicted[c.predicted]
        elif c.state is MI:
            assert c.predicted is None and c.golden is not None
        else:
            assert c.golden is None and c.predicted is not None


CASES = [
    pytest.param("the quick brown fox".split(), "the quick brown fox".split(), [M, M, M, M], id="identical"),
    pytest.param("a b c d".split(), "a x b c d".split(), [M, E, M, M, M], id="one-insertion-keeps-rest-green"),
    pytest.param("a b c d".split(), "x y a b c d".split(), [E, E, M, M, M, M], id="insertions-at-start"),
    pytest.param("a b c d".split(), "a b c d z".split(), [M, M, M, M, E], id="insertion-at-end"),
    pytest.param("a b c d".split(), "a c d".split(), [M, MI, M, M], id="one-deletion"),
    pytest.param("a b c d".split(), "d".split(), [MI, MI, MI, M], id="many-deletions"),
    pytest.param("a b c d".split(), "a z c d".split(), [M, X, M, M], id="one-substitution"),
    pytest.param("a b c".split(), "x y z".split(), [X, X, X], id="all-substituted"),
    pytest.param([], "a b".split(), [E, E], id="empty-golden"),
    pytest.param("a b".split(), [], [MI, MI], id="empty-predicted"),
    pytest.param([], [], [], id="both-empty"),
    pytest.param(["日本", "語", "🙂", "e\u0301", " ", "\n"], ["日本", "語", "🙃", "e\u0301", " ", "\n"],
                 [M, M, X, M, M, M], id="unicode-substitution"),
    pytest.param(["ß", "Ω", "\t"], ["ß", "Ω", "Ω", "\t"], [M, M, E, M], id="unicode-insertion"),
]


@pytest.mark.parametrize(("golden", "predicted", "expected"), CASES)
def test_align_states(golden: list, predicted: list, expected: list[TokenState]) -> None:
    cols = align(golden, predicted)
    assert states(cols) == expected
    check_consistent(golden, predicted, cols)
    assert compute_stats(cols).diff == levenshtein(golden, predicted)


@pytest.mark.parametrize("seed", range(30), ids=lambda s: f"random-{s}")
def test_align_is_minimal_and_consistent_on_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    golden = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
    predicted = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
    cols = align(golden, predicted)
    check_consistent(golden, predicted, cols)
    assert compute_stats(cols).diff == levenshtein(golden, predicted)


def test_align_over_cell_limit_uses_block_fallback_and_stays_consistent() -> None:
    golden = list("abcdefgh" * 20)
    predicted = list("abcdXfgh" * 20)
    cols, method = align_with_method(golden, predicted, max_cells=10)
    assert method == METHOD_ALIGNMENT_APPROX
    check_consistent(golden, predicted, cols)
    assert compute_stats(cols).mismatches == 20
    exact, method2 = align_with_method(golden, predicted)
    assert method2 == METHOD_ALIGNMENT and compute_stats(exact).diff == 20


@pytest.mark.parametrize(("golden", "predicted", "expected"), [
    pytest.param("a b c".split(), "a b c".split(), [M, M, M], id="identical"),
    pytest.param("a b c d".split(), "x a b c".split(), [X, X, X, X], id="shifted-copy-is-all-wrong"),
    pytest.param("a b".split(), "a b c".split(), [M, M, E], id="longer-prediction"),
    pytest.param("a b c".split(), "a".split(), [M, MI, MI], id="shorter-prediction"),
    pytest.param([], [], [], id="both-empty"),
])
def test_positional(golden: list, predicted: list, expected: list[TokenState]) -> None:
    cols = positional(golden, predicted)
    assert states(cols) == expected
    check_consistent(golden, predicted, cols)


@pytest.mark.parametrize(("stats", "line"), [
    pytest.param(AlignmentStats(matches=6, mismatches=1), "Accuracy: 85.7% | Matches: 6/7 | Diff: 1", id="issue-example"),
    pytest.param(AlignmentStats(matches=3, extra=1), "Accuracy: 75.0% | Matches: 3/4 | Diff: 1", id="extra-counts"),
    pytest.param(AlignmentStats(matches=2, missing=2, mismatches=1), "Accuracy: 40.0% | Matches: 2/5 | Diff: 3", id="mixed"),
    pytest.param(AlignmentStats(), "Accuracy: n/a | Matches: 0/0 | Diff: 0", id="nothing-compared"),
    pytest.param(AlignmentStats(mismatches=4), "Accuracy: 0.0% | Matches: 0/4 | Diff: 4", id="all-wrong"),
])
def test_stats_line(stats: AlignmentStats, line: str) -> None:
    assert stats.line() == line
    assert stats.total == stats.matches + stats.diff


def test_format_stats_line_rounds() -> None:
    assert format_stats_line(2 / 3, 2, 3, 1) == "Accuracy: 66.7% | Matches: 2/3 | Diff: 1"


def test_compare_to_dict_uses_keys_and_display_strings() -> None:
    comp = compare(["Ġthe", "Ġcat"], ["Ġthe", "Ġdog", "!"], golden_keys=[5, 9], predicted_keys=[5, 11, 2])
    d = comp.to_dict()
    assert d["method"] == METHOD_ALIGNMENT
    assert d["tokens"] == [{"state": "match", "golden": "Ġthe", "predicted": "Ġthe"},
                           {"state": "mismatch", "golden": "Ġcat", "predicted": "Ġdog"},
                           {"state": "extra", "golden": None, "predicted": "!"}]
    assert (d["matches"], d["total"], d["diff"], d["accuracy"]) == (1, 3, 2, pytest.approx(1 / 3))
    assert d["summary"] == "Accuracy: 33.3% | Matches: 1/3 | Diff: 2"


def test_compare_same_strings_different_ids_are_mismatches() -> None:
    comp = compare(["a"], ["a"], golden_keys=[1], predicted_keys=[2])
    assert comp.stats.mismatches == 1


def test_compare_positional_method() -> None:
    assert compare(list("abc"), list("xab"), method=METHOD_POSITIONAL).stats.matches == 0
    assert compare(list("abc"), list("xab")).stats.matches == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"method": "fuzzy"}, "must be one of alignment, positional", id="bad-method"),
    pytest.param({"golden_keys": [1, 2, 3]}, "one key per token", id="bad-keys"),
])
def test_compare_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare(["a"], ["a"], **kwargs)
