"""Token-by-token comparison of a golden answer and a model's prediction (pure, no I/O, no torch).

Used by the samples collector (:mod:`collectors.samples`) to record the comparison and by the dashboard's
Samples page to colour it. Every aligned column is in one of four states:

* ``match``: golden token and predicted token are the same;
* ``mismatch``: a golden token faces a different predicted token (a substitution);
* ``missing``: a golden token the prediction lacks (a deletion);
* ``extra``: a predicted token with no golden counterpart (an insertion).

Two ways to pair tokens:

* :func:`align` (``"alignment"``): a minimum-edit-distance (Levenshtein / Needleman-Wunsch with unit
  costs) alignment with a backtrace, so one inserted token does not turn the rest of the answer red.
  We do not use ``difflib.SequenceMatcher`` as the primary method: it finds longest common blocks
  greedily, is not minimal (its "Diff" would overstate the edit count), reports ``replace`` blocks of
  unequal length that still have to be split, and its ``autojunk`` heuristic silently ignores frequent
  tokens in sequences of 200+ items. The dynamic programme is exact and deterministic; its cost
  (``len(golden) * len(predicted)`` cells after stripping the common prefix and suffix) is bounded by
  :data:`MAX_DP_CELLS`, above which the difflib block matcher (``autojunk=False``) is the documented
  fallback (``method == "alignment-approx"``).
* :func:`positional` (``"positional"``): column *i* pairs golden token *i* with predicted token *i*.
  This is the right pairing for teacher-forced predictions: the prediction at position *i* is
  conditioned on the golden prefix, so it can only be right or wrong about golden token *i*; an
  alignment would wrongly credit a model that predicts the previous token (a shifted copy).

Statistics (:class:`AlignmentStats`), defined on the columns of the comparison:

* ``total`` = number of columns = matches + mismatches + missing + extra;
* ``matches`` = columns in state ``match``;
* ``diff`` = total - matches (every column that is not a match; for :func:`align` it equals the edit
  distance between the two token sequences);
* ``accuracy`` = matches / total, in [0, 1]; ``None`` when both sequences are empty (nothing compared).

So extra tokens lower the accuracy (a prediction that rambles past the golden answer is not 100% right)
and "Matches: 6/7 | Diff: 1" always adds up. :meth:`AlignmentStats.line` gives the display form
``"Accuracy: 85.7% | Matches: 6/7 | Diff: 1"``.

Example:
    >>> cols = align(["a", "b", "c"], ["a", "x", "b", "c"])
    >>> [c.state.value for c in cols]
    ['match', 'extra', 'match', 'match']
    >>> compute_stats(cols).line()
    'Accuracy: 75.0% | Matches: 3/4 | Diff: 1'
"""
from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

MAX_DP_CELLS = 1_000_000
"""Largest ``n * m`` (after stripping the common prefix/suffix) aligned exactly; bigger uses difflib."""

METHOD_ALIGNMENT = "alignment"
METHOD_ALIGNMENT_APPROX = "alignment-approx"
METHOD_POSITIONAL = "positional"
METHODS = (METHOD_ALIGNMENT, METHOD_POSITIONAL)


class TokenState(str, enum.Enum):
    """State of one aligned column (the dashboard maps each to a CSS class ``token--<value>``)."""

    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING = "missing"
    EXTRA = "extra"


@dataclass(frozen=True)
class Column:
    """One aligned column: indices into the golden and predicted sequences (``None`` for a gap)."""

    state: TokenState
    golden: int | None
    predicted: int | None


@dataclass(frozen=True)
class AlignmentStats:
    """Counts of one comparison; see the module docstring for the exact definitions."""

    matches: int = 0
    mismatches: int = 0
    missing: int = 0
    extra: int = 0

    @property
    def total(self) -> int:
        return self.matches + self.mismatches + self.missing + self.extra

    @property
    def diff(self) -> int:
        return self.total - self.matches

    @property
    def accuracy(self) -> float | None:
        return self.matches / self.total if self.total else None

    def line(self) -> str:
        """``"Accuracy: 85.7% | Matches: 6/7 | Diff: 1"`` (``n/a`` accuracy when nothing was compared)."""
        return format_stats_line(self.accuracy, self.matches, self.total, self.diff)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "matches": self.matches, "total": self.total, "diff": self.diff,
                "mismatches": self.mismatches, "missing": self.missing, "extra": self.extra}


def format_stats_line(accuracy: float | None, matches: int, total: int, diff: int) -> str:
    """The stats line shown under a comparison, e.g. ``"Accuracy: 85.7% | Matches: 6/7 | Diff: 1"``."""
    acc = "n/a" if accuracy is None else f"{accuracy * 100:.1f}%"
    return f"Accuracy: {acc} | Matches: {matches}/{total} | Diff: {diff}"


def compute_stats(columns: Sequence[Column]) -> AlignmentStats:
    """Count the states of ``columns``."""
    counts = {s: 0 for s in TokenState}
    for col in columns:
        counts[col.state] += 1
    return AlignmentStats(counts[TokenState.MATCH], counts[TokenState.MISMATCH], counts[TokenState.MISSING],
                          counts[TokenState.EXTRA])


def positional(golden: Sequence[Hashable], predicted: Sequence[Hashable]) -> list[Column]:
    """Pair position *i* with position *i*; the longer side's tail is ``missing`` or ``extra``."""
    cols: list[Column] = []
    for i in range(max(len(golden), len(predicted))):
        if i >= len(predicted):
            cols.append(Column(TokenState.MISSING, i, None))
        elif i >= len(golden):
            cols.append(Column(TokenState.EXTRA, None, i))
        else:
            state = TokenState.MATCH if golden[i] == predicted[i] else TokenState.MISMATCH
            cols.append(Column(state, i, i))
    return cols


def align(golden: Sequence[Hashable], predicted: Sequence[Hashable], *, max_cells: int = MAX_DP_CELLS) -> list[Column]:
    """Minimum-edit-distance alignment of two token sequences (ids or strings).

    Substitution, insertion and deletion each cost 1. Among equally cheap alignments the one
    with pairs (match/mismatch) earliest is chosen, then ``missing`` before ``extra``, so the result is
    deterministic and reads naturally left to right.

    Args:
        golden: the reference tokens.
        predicted: the predicted tokens.
        max_cells: above this many DP cells (after stripping the common prefix and suffix) the
            difflib block matcher is used instead (see :func:`align_with_method`).
    """
    return align_with_method(golden, predicted, max_cells=max_cells)[0]


def align_with_method(golden: Sequence[Hashable], predicted: Sequence[Hashable], *,
                      max_cells: int = MAX_DP_CELLS) -> tuple[list[Column], str]:
    """:func:`align` plus the method actually used (``"alignment"`` or ``"alignment-approx"``)."""
    g, p = list(golden), list(predicted)
    n, m = len(g), len(p)
    pre = 0
    while pre < n and pre < m and g[pre] == p[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and suf < m - pre and g[n - 1 - suf] == p[m - 1 - suf]:
        suf += 1
    head = [Column(TokenState.MATCH, i, i) for i in range(pre)]
    tail = [Column(TokenState.MATCH, n - suf + i, m - suf + i) for i in range(suf)]
    gm, pm = g[pre:n - suf], p[pre:m - suf]
    method = METHOD_ALIGNMENT
    if len(gm) * len(pm) > max_cells:
        middle = _align_blocks(gm, pm)
        method = METHOD_ALIGNMENT_APPROX
    else:
        middle = _align_dp(gm, pm)
    shifted = [Column(c.state, None if c.golden is None else c.golden + pre,
                      None if c.predicted is None else c.predicted + pre) for c in middle]
    return head + shifted + tail, method


def _align_dp(g: Sequence[Hashable], p: Sequence[Hashable]) -> list[Column]:
    """Exact alignment. The DP runs on the reversed sequences so that, among equally cheap alignments,
    the backtrace's preference for the diagonal applies from the *start*: mismatches come first and the
    gaps of a length difference go to the end ("a b" vs "a x y" is match, mismatch, extra)."""
    n, m = len(g), len(p)
    rev = _align_dp_core(g[::-1], p[::-1])
    return [Column(c.state, None if c.golden is None else n - 1 - c.golden,
                   None if c.predicted is None else m - 1 - c.predicted) for c in reversed(rev)]


def _align_dp_core(g: Sequence[Hashable], p: Sequence[Hashable]) -> list[Column]:
    n, m = len(g), len(p)
    if n == 0:
        return [Column(TokenState.EXTRA, None, j) for j in range(m)]
    if m == 0:
        return [Column(TokenState.MISSING, i, None) for i in range(n)]
    # dist[i][j]: edit distance between g[:i] and p[:j]; rows as lists of ints (fast enough in CPython
    # for a few hundred tokens a side, and the sample step runs every 50 training steps).
    prev = list(range(m + 1))
    rows = [prev]
    for i in range(1, n + 1):
        gi = g[i - 1]
        cur = [i] + [0] * m
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if gi == p[j - 1] else 1)
            up = prev[j] + 1
            left = cur[j - 1] + 1
            cur[j] = diag if diag <= up and diag <= left else (up if up <= left else left)
        rows.append(cur)
        prev = cur
    out: list[Column] = []
    i, j = n, m
    while i > 0 or j > 0:
        d = rows[i][j]
        if i > 0 and j > 0:
            same = g[i - 1] == p[j - 1]
            if d == rows[i - 1][j - 1] + (0 if same else 1):
                out.append(Column(TokenState.MATCH if same else TokenState.MISMATCH, i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and d == rows[i - 1][j] + 1:
            out.append(Column(TokenState.MISSING, i - 1, None))
            i -= 1
        else:
            out.append(Column(TokenState.EXTRA, None, j - 1))
            j -= 1
    out.reverse()
    return out


def _align_blocks(g: Sequence[Hashable], p: Sequence[Hashable]) -> list[Column]:
    """Fallback for huge inputs: difflib opcodes, each ``replace`` split into mismatches plus a gap tail."""
    out: list[Column] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, g, p, autojunk=False).get_opcodes():
        if tag == "equal":
            out.extend(Column(TokenState.MATCH, i1 + k, j1 + k) for k in range(i2 - i1))
        elif tag == "delete":
            out.extend(Column(TokenState.MISSING, i, None) for i in range(i1, i2))
        elif tag == "insert":
            out.extend(Column(TokenState.EXTRA, None, j) for j in range(j1, j2))
        else:
            common = min(i2 - i1, j2 - j1)
            out.extend(Column(TokenState.MISMATCH, i1 + k, j1 + k) for k in range(common))
            out.extend(Column(TokenState.MISSING, i, None) for i in range(i1 + common, i2))
            out.extend(Column(TokenState.EXTRA, None, j) for j in range(j1 + common, j2))
    return out


@dataclass
class TokenComparison:
    """A comparison ready to store and display: one entry per column plus the stats.

    Attributes:
        method: ``"alignment"``, ``"alignment-approx"`` or ``"positional"``.
        columns: the aligned columns (indices).
        golden_tokens / predicted_tokens: the display strings of each side's tokens.
    """

    method: str
    columns: list[Column]
    golden_tokens: list[str]
    predicted_tokens: list[str]
    stats: AlignmentStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = compute_stats(self.columns)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``comparison`` of a sample record (see docs/samples.md)."""
        tokens = [{"state": c.state.value,
                   "golden": None if c.golden is None else self.golden_tokens[c.golden],
                   "predicted": None if c.predicted is None else self.predicted_tokens[c.predicted]}
                  for c in self.columns]
        return {"method": self.method, "tokens": tokens, **self.stats.to_dict(), "summary": self.stats.line()}


def compare(golden_tokens: Sequence[str], predicted_tokens: Sequence[str], *,
            golden_keys: Sequence[Hashable] | None = None, predicted_keys: Sequence[Hashable] | None = None,
            method: str = METHOD_ALIGNMENT) -> TokenComparison:
    """Compare two tokenised texts.

    Args:
        golden_tokens: display strings of the golden tokens.
        predicted_tokens: display strings of the predicted tokens.
        golden_keys / predicted_keys: what is compared (e.g. token ids); default the strings themselves.
            Must have the same length as the matching token list.
        method: ``"alignment"`` (default) or ``"positional"``.

    Raises:
        ValueError: for an unknown ``method`` or keys whose length differs from their tokens.
    """
    gk = list(golden_tokens) if golden_keys is None else list(golden_keys)
    pk = list(predicted_tokens) if predicted_keys is None else list(predicted_keys)
    if len(gk) != len(golden_tokens) or len(pk) != len(predicted_tokens):
        raise ValueError("compare(): golden_keys/predicted_keys must have one key per token")
    if method == METHOD_ALIGNMENT:
        cols, used = align_with_method(gk, pk)
    elif method == METHOD_POSITIONAL:
        cols, used = positional(gk, pk), METHOD_POSITIONAL
    else:
        raise ValueError(f"compare(method=...) must be one of {', '.join(METHODS)}; got {method!r}")
    return TokenComparison(used, cols, list(golden_tokens), list(predicted_tokens))
