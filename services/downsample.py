"""Downsampling of long series for charts, keeping spikes visible (MinMaxLTTB from tsdownsample).

Plotting 200,000 points per trace makes browsers crawl; a few thousand chosen by MinMaxLTTB look the
same, spikes included, because each bucket keeps its extremes before LTTB picks the shape.
"""
from __future__ import annotations

import numpy as np

MAX_POINTS = 2000
"""Most points sent per trace; above this the series is downsampled on the server."""


def select_range(x: np.ndarray, lo: float | None, hi: float | None) -> slice:
    """Index slice of sorted ``x`` within ``[lo, hi]`` plus one point either side (so lines reach the edges)."""
    start = 0 if lo is None else max(int(np.searchsorted(x, lo, side="left")) - 1, 0)
    stop = len(x) if hi is None else min(int(np.searchsorted(x, hi, side="right")) + 1, len(x))
    return slice(start, stop)


def downsample_indices(x: np.ndarray, y: np.ndarray, n_out: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``n_out`` points of (x, y) that keep its shape and extremes.

    ``x`` must be sorted ascending. Non-finite ``y`` values are always kept (they are the events a
    person looks for) and the finite rest is downsampled with MinMaxLTTB.
    """
    n = len(x)
    if n <= n_out:
        return np.arange(n)
    finite = np.isfinite(y)
    special = np.flatnonzero(~finite)
    idx_f = np.flatnonzero(finite)
    budget = max(n_out - len(special), 4)
    if len(idx_f) > budget:
        from tsdownsample import MinMaxLTTBDownsampler

        xf = np.ascontiguousarray(x[idx_f], dtype=np.float64)
        yf = np.ascontiguousarray(y[idx_f], dtype=np.float64)
        budget -= budget % 2  # MinMaxLTTB wants an even n_out
        chosen = idx_f[MinMaxLTTBDownsampler().downsample(xf, yf, n_out=budget)]
    else:
        chosen = idx_f
    return np.union1d(chosen, special[:n_out])
