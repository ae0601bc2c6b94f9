"""Spectral (SVD) metrics of one layer: pure functions on tensors, used by the spectral collector and tests.

For a layer weight ``W`` (out × in, the ``nn.Linear`` convention) with singular values σ₁ ≥ σ₂ ≥ … and
left singular vectors ``U``, and its current gradient ``G`` (same shape), this module computes the four
numbers adaptive full-rank/low-rank trainings watch (formulas in docs/spectral.md):

- ``r`` and ``reconstruction_error``: the smallest rank whose relative tail energy
  ``sqrt(Σ_{i>r} σᵢ²) / ‖W‖_F`` is below the target, and that ratio at ``r``;
- ``principal_alignment``: ``‖U_kᵀ G‖_F / ‖G‖_F``, the gradient's share in the top-k left directions;
- ``minor_alignment``: the gradient's share in the left directions beyond ``r`` (the orthogonal complement
  of ``U_r`` in R^out), computed exactly from ``U_r`` alone as ``sqrt(1 − (‖U_rᵀ G‖_F / ‖G‖_F)²)``;
- ``subspace_angle``: the largest principal angle (radians) between two top-k left singular subspaces.

Small layers get an exact ``torch.linalg.svd``; layers whose smaller side exceeds
:data:`FULL_SVD_MAX_DIM` get ``torch.svd_lowrank`` with ``q`` columns. The tail energy stays exact on that
path because ``‖W‖_F² = Σ σᵢ²``: the energy beyond the computed ``q`` values is ``‖W‖_F² − Σ_{i≤q} σᵢ²``.
When even ``q`` values do not reach the target, ``r`` is reported as ``q`` and flagged as a lower bound.

torch is imported inside the functions so ``import collectors.spectral`` stays cheap.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

FULL_SVD_MAX_DIM = 512
"""Largest min(out, in) that gets an exact ``torch.linalg.svd``; above it ``torch.svd_lowrank`` is used.

Measured on this project's 2-core CPU (bench/bench_spectral.py prints the table): a full SVD takes
~6 ms at 256², ~31 ms at 512², ~80 ms at 768², ~230 ms at 1024² and grows cubically (seconds at 4096²),
while ``svd_lowrank`` with q = 25% of the side is 3-4× faster from 512 up. Below 512 a full SVD costs
only milliseconds and is exact, so there is no reason to approximate.
"""
LOWRANK_Q_FRACTION = 0.25
"""Columns computed by ``svd_lowrank``, as a fraction of min(out, in) (at least k + oversampling)."""
LOWRANK_OVERSAMPLE = 10
"""Extra columns beyond what is needed (k or a reported r), for the randomized method's accuracy."""
LOWRANK_NITER = 4
"""Power iterations of ``svd_lowrank`` (torch's default is 2; 4 makes the top-k subspace accurate on the
slowly decaying spectra of trained weights at a modest cost, see tests/test_spectral_metrics.py)."""
DEFAULT_TOP_K_FRACTION = 0.10
"""k for principal_alignment and subspace_angle, as a fraction of min(out, in) (at least 1)."""
DEFAULT_RECON_TARGET = 0.01
"""Relative tail energy that defines ``r`` (the reconstruction target)."""

METHOD_FULL = "full"
METHOD_LOWRANK = "lowrank"
METHODS = (METHOD_FULL, METHOD_LOWRANK, "auto")


# --------------------------------------------------------------------------- scalar formulas

def top_k_for(shape: tuple[int, int], fraction: float = DEFAULT_TOP_K_FRACTION) -> int:
    """k for a weight of ``shape``: ``ceil(fraction × min(out, in))``, at least 1 and at most min(out, in).

    Raises:
        ValueError: when ``fraction`` is not in (0, 1].
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"top-k fraction must be in (0, 1]; got {fraction!r}")
    side = min(int(shape[0]), int(shape[1]))
    return max(1, min(side, math.ceil(fraction * side)))


def tail_errors(singular_values: Any, frobenius_sq: float | None = None) -> Any:
    """Relative tail error for every rank 0..q: ``e[j] = sqrt(Σ_{i>j} σᵢ²) / ‖W‖_F``.

    The known part of each tail is summed from the small end (no cancellation, so a tail that is truly
    zero comes out zero); when only the top q values are known, the energy of the unknown rest,
    ``max(‖W‖_F² − Σ_{i≤q} σᵢ², 0)``, is added to every tail (exact up to rounding since ‖W‖_F² = Σ σᵢ²).

    Args:
        singular_values: the top q singular values (1-D tensor), descending.
        frobenius_sq: ``‖W‖_F²``; default ``None`` means the values are the complete spectrum.

    Returns:
        a float64 tensor of length q + 1 (``e[0] = 1``), all zeros for a zero matrix.
    """
    import torch

    s2 = singular_values.detach().to(torch.float64) ** 2
    known = float(s2.sum())
    total = known if frobenius_sq is None else float(frobenius_sq)
    rest = 0.0 if frobenius_sq is None else max(total - known, 0.0)
    suffix = torch.flip(torch.cumsum(torch.flip(s2, (0,)), 0), (0,))  # suffix[j] = Σ_{i≥j} (0-based)
    tails = torch.cat([suffix, torch.zeros(1, dtype=torch.float64, device=s2.device)]) + rest
    if total <= 0.0:
        return torch.zeros_like(tails)
    return torch.sqrt(torch.clamp(tails / total, min=0.0))


def rank_for_target(singular_values: Any, target: float = DEFAULT_RECON_TARGET,
                    frobenius_sq: float | None = None) -> tuple[int, float, bool]:
    """The smallest rank whose relative tail error is below ``target``.

    Args:
        singular_values: top q singular values, descending (the full spectrum when ``frobenius_sq`` is None).
        target: the reconstruction target (relative Frobenius error), default 0.01.
        frobenius_sq: ``‖W‖_F²`` when only the top q values are known.

    Returns:
        ``(r, error_at_r, is_lower_bound)``. ``is_lower_bound`` is True when even all q known values
        leave an error ≥ target: then ``r = q`` and the error is the exact error at q.

    Raises:
        ValueError: when ``target`` is not in (0, 1).
    """
    if not (isinstance(target, (int, float)) and 0 < target < 1):
        raise ValueError(f"reconstruction target must be in (0, 1); got {target!r}")
    errors = tail_errors(singular_values, frobenius_sq)
    below = (errors < target).nonzero()
    if below.numel() == 0:
        q = errors.numel() - 1
        return q, float(errors[q]), True
    r = int(below[0, 0])
    return r, float(errors[r]), False


def reconstruction_error(singular_values: Any, r: int, frobenius_sq: float | None = None) -> float:
    """Relative tail error at rank ``r``: ``sqrt(Σ_{i>r} σᵢ²) / ‖W‖_F`` (0 for a zero matrix).

    Raises:
        ValueError: when ``r`` is negative or beyond the known values.
    """
    errors = tail_errors(singular_values, frobenius_sq)
    if not 0 <= r < errors.numel():
        raise ValueError(f"rank r={r} is outside 0..{errors.numel() - 1} (the singular values known)")
    return float(errors[r])


def _norm(x: Any) -> float:
    import torch

    return float(torch.linalg.matrix_norm(x.to(torch.float64) if x.dtype in (torch.float16, torch.bfloat16) else x))


def principal_alignment(u_k: Any, grad: Any) -> float:
    """``‖U_kᵀ G‖_F / ‖G‖_F``: the share of the gradient in span(U_k) (NaN when G is zero).

    Products run in the wider of the two dtypes (float32 for a training's tensors): the ratio needs no
    more, and float64 products cost several times more on CPU.

    Args:
        u_k: out × k matrix with orthonormal columns.
        grad: out × in gradient.
    """
    import torch

    dtype = torch.promote_types(torch.promote_types(u_k.dtype, grad.dtype), torch.float32)
    g = grad.to(dtype)
    gn = _norm(g)
    if gn == 0.0 or not math.isfinite(gn):
        return math.nan
    return min(1.0, _norm(u_k.to(dtype).T @ g) / gn)


def minor_alignment(u_r: Any, grad: Any) -> float:
    """The share of the gradient outside span(U_r): ``‖G − U_r U_rᵀ G‖_F / ‖G‖_F`` (NaN when G is zero).

    The complement of span(U_r) in R^out holds the left singular directions r+1..min(out, in) and, for
    tall weights, the null directions of Wᵀ (σ = 0), so only ``U_r`` is needed; with ``r = 0`` it is 1.
    It equals ``sqrt(1 − a²)`` with ``a`` the alignment to U_r, but is computed from the residual so that
    small values keep their precision.
    """
    import torch

    dtype = torch.promote_types(torch.promote_types(u_r.dtype, grad.dtype), torch.float32)
    g = grad.to(dtype)
    gn = _norm(g)
    if gn == 0.0 or not math.isfinite(gn):
        return math.nan
    if u_r.shape[1] == 0:
        return 1.0
    u = u_r.to(dtype)
    return min(1.0, _norm(g - u @ (u.T @ g)) / gn)


def subspace_angle(u_a: Any, u_b: Any) -> float:
    """Largest principal angle (radians, 0..π/2) between span(U_a) and span(U_b), both out × k orthonormal.

    Computed as ``atan2(‖(I − U_a U_aᵀ) U_b‖₂, σ_min(U_aᵀ U_b))``: the sine is accurate for small angles and
    the cosine for angles near π/2, so the result is accurate over the whole range.

    Raises:
        ValueError: when the two bases do not have the same shape.
    """
    import torch

    if tuple(u_a.shape) != tuple(u_b.shape):
        raise ValueError(f"subspace bases must have the same shape; got {tuple(u_a.shape)} and {tuple(u_b.shape)}")
    a = u_a.to(torch.float64)
    b = u_b.to(torch.float64)
    cross = a.T @ b
    cos_min = float(torch.linalg.svdvals(cross).min())
    residual = b - a @ cross
    sin_max = float(torch.linalg.matrix_norm(residual, ord=2))
    return math.atan2(min(max(sin_max, 0.0), 1.0), min(max(cos_min, 0.0), 1.0))


# --------------------------------------------------------------------------- decomposition

@dataclass
class Decomposition:
    """The part of a weight's SVD the metrics need.

    Attributes:
        u: out × q left singular vectors (q = min(out, in) for the full method).
        s: the q singular values, descending.
        frobenius_sq: ``‖W‖_F²`` (exact on both paths).
        method: ``"full"`` or ``"lowrank"``.
        seconds: wall time of the decomposition.
    """

    u: Any
    s: Any
    frobenius_sq: float
    method: str
    seconds: float


def choose_method(shape: tuple[int, int], max_full_dim: int = FULL_SVD_MAX_DIM) -> str:
    """``"full"`` when min(out, in) ≤ ``max_full_dim``, else ``"lowrank"``."""
    return METHOD_FULL if min(shape) <= max_full_dim else METHOD_LOWRANK


def lowrank_q(shape: tuple[int, int], need: int, fraction: float = LOWRANK_Q_FRACTION) -> int:
    """Columns to compute on the low-rank path: max(fraction × side, need + oversampling), capped at the side."""
    side = min(shape)
    return int(min(side, max(math.ceil(fraction * side), need + LOWRANK_OVERSAMPLE)))


def decompose(weight: Any, *, method: str = "auto", need: int = 1, max_full_dim: int = FULL_SVD_MAX_DIM,
              q_fraction: float = LOWRANK_Q_FRACTION, niter: int = LOWRANK_NITER, seed: int = 0) -> Decomposition:
    """SVD of a 2-D weight (out × in) by the exact or the randomized method, in float32 on its device.

    Args:
        weight: the weight, out × in.
        method: ``"full"``, ``"lowrank"`` or ``"auto"`` (default: by :func:`choose_method`).
        need: the number of leading singular vectors the caller needs at least (k, or a reported r).
        max_full_dim: the size threshold for ``"auto"``.
        q_fraction: columns of the low-rank path as a fraction of min(out, in).
        niter: power iterations of the low-rank path.
        seed: seed of the low-rank path's random test matrix (reproducible measurements).

    Raises:
        ValueError: when ``weight`` is not 2-D or ``method`` is unknown.
    """
    import torch

    if weight.dim() != 2:
        raise ValueError(f"spectral metrics need a 2-D weight; got shape {tuple(weight.shape)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    w = weight.detach().to(torch.float32)
    shape = (int(w.shape[0]), int(w.shape[1]))
    chosen = choose_method(shape, max_full_dim) if method == "auto" else method
    t0 = time.perf_counter()
    frob = float(torch.linalg.matrix_norm(w).double() ** 2)
    if chosen == METHOD_FULL:
        u, s, _ = torch.linalg.svd(w, full_matrices=False)
    else:
        q = lowrank_q(shape, need, q_fraction)
        # A fixed random test matrix makes measurements reproducible, and forking the RNG leaves the
        # training's own random stream (dropout, sampling) exactly as it would be without monitoring.
        devices = [w.device] if w.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            u, s, _ = torch.svd_lowrank(w, q=q, niter=niter)
    if w.device.type == "cuda":
        torch.cuda.synchronize(w.device)
    return Decomposition(u=u, s=s, frobenius_sq=frob, method=chosen, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- one layer

@dataclass
class LayerSpectrum:
    """The metrics of one layer at one measurement (the output of :func:`measure`).

    Attributes:
        r: the rank (reported by the training, or the smallest meeting the reconstruction target).
        r_is_lower_bound: True when the low-rank path could not reach the target within its q values.
        reconstruction_error: relative tail error at ``r``.
        principal_alignment: gradient share in the top-k left directions (NaN without a gradient).
        minor_alignment: gradient share beyond ``r`` (NaN without a gradient).
        subspace_angle: largest principal angle to the previous top-k subspace (NaN at the first one).
        k: the top-k size used.
        u_k: the top-k left singular vectors (kept for the next angle).
        method: ``"full"`` or ``"lowrank"``.
        svd_seconds: time of the decomposition; ``seconds``: time of the whole measurement.
    """

    r: int
    r_is_lower_bound: bool
    reconstruction_error: float
    principal_alignment: float
    minor_alignment: float
    subspace_angle: float
    k: int
    u_k: Any
    method: str
    svd_seconds: float
    seconds: float


def measure(weight: Any, grad: Any | None = None, previous_u_k: Any | None = None, *, k: int | None = None,
            top_k_fraction: float = DEFAULT_TOP_K_FRACTION, recon_target: float = DEFAULT_RECON_TARGET,
            reported_r: int | None = None, method: str = "auto", max_full_dim: int = FULL_SVD_MAX_DIM,
            q_fraction: float = LOWRANK_Q_FRACTION, niter: int = LOWRANK_NITER) -> LayerSpectrum:
    """All metrics of one layer: ``weight`` and ``grad`` are out × in (transpose Conv1D weights first).

    Args:
        weight: the layer weight, out × in.
        grad: its gradient (same shape) or ``None`` (the alignments are then NaN).
        previous_u_k: top-k left singular vectors of the previous measurement, for the angle.
        k: top-k size; default ``None`` uses ``top_k_fraction`` of min(out, in).
        recon_target: the reconstruction target that defines ``r`` (default 0.01).
        reported_r: the rank a training reports it uses; the error and minor alignment are taken at it.
        method, max_full_dim, q_fraction, niter: see :func:`decompose`.

    Raises:
        ValueError: on a non-2-D weight, a gradient of another shape, or k / reported_r out of range.
    """
    t0 = time.perf_counter()
    shape = (int(weight.shape[0]), int(weight.shape[1])) if weight.dim() == 2 else tuple(weight.shape)
    if weight.dim() != 2:
        raise ValueError(f"spectral metrics need a 2-D weight; got shape {shape}")
    side = min(shape)
    if grad is not None and tuple(grad.shape) != tuple(weight.shape):
        raise ValueError(f"gradient shape {tuple(grad.shape)} differs from weight shape {shape}")
    kk = top_k_for(shape, top_k_fraction) if k is None else int(k)
    if not 1 <= kk <= side:
        raise ValueError(f"k must be in 1..{side} for a {shape[0]}×{shape[1]} weight; got {k}")
    if reported_r is not None and not 0 <= int(reported_r) <= side:
        raise ValueError(f"reported r must be in 0..{side} for a {shape[0]}×{shape[1]} weight; got {reported_r}")
    need = max(kk, int(reported_r) if reported_r is not None else 0)
    dec = decompose(weight, method=method, need=need, max_full_dim=max_full_dim, q_fraction=q_fraction, niter=niter)
    q = int(dec.s.numel())
    frob = None if dec.method == METHOD_FULL else dec.frobenius_sq  # the full spectrum needs no ‖W‖_F
    if reported_r is not None:
        r = int(reported_r)
        lower = r > q
        err = reconstruction_error(dec.s, min(r, q), frob)
    else:
        r, err, lower = rank_for_target(dec.s, recon_target, frob)
        lower = lower and q < side
    u_k = dec.u[:, :kk]
    if grad is not None:
        g = grad.detach().to(dec.u.dtype).to(dec.u.device)
        pa = principal_alignment(u_k, g)
        ma = minor_alignment(dec.u[:, :min(r, q)], g)
    else:
        pa = ma = math.nan
    angle = math.nan
    if previous_u_k is not None and tuple(previous_u_k.shape) == tuple(u_k.shape):
        angle = subspace_angle(previous_u_k.to(u_k.device), u_k)
    return LayerSpectrum(r=r, r_is_lower_bound=lower, reconstruction_error=err, principal_alignment=pa,
                         minor_alignment=ma, subspace_angle=angle, k=kk, u_k=u_k.detach().clone(),
                         method=dec.method, svd_seconds=dec.seconds, seconds=time.perf_counter() - t0)
