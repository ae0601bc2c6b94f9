"""Units of the spectral metrics on constructed matrices, and the accuracy of the low-rank SVD path."""
from __future__ import annotations

import math

import pytest
import torch

from collectors.spectral import metrics as sp


def orthonormal(n: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
    return q


def weight_with_spectrum(s: torch.Tensor, out: int, inp: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W = U diag(s) Vᵀ with known U (returned) and s descending."""
    u = orthonormal(out, len(s), seed)
    v = orthonormal(inp, len(s), seed + 1)
    return (u * s.to(torch.float64)) @ v.T, u


DISTINCT = torch.linspace(10.0, 1.0, 40, dtype=torch.float64)  # well separated: top-k subspaces are well defined


# --------------------------------------------------------------------------- alignments

@pytest.mark.parametrize("out,inp", [(60, 40), (40, 60), (48, 48)], ids=["tall", "wide", "square"])
def test_gradient_inside_top_k_span_gives_principal_alignment_one(out: int, inp: int) -> None:
    side = min(out, inp)
    w, u = weight_with_spectrum(DISTINCT[:side], out, inp)
    k = 5
    grad = u[:, :k] @ torch.randn(k, inp, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    m = sp.measure(w.float(), grad.float(), k=k)
    assert m.principal_alignment == pytest.approx(1.0, abs=1e-5)
    assert m.r >= k  # the minor directions lie beyond r ≥ k, so the gradient has none of it
    assert m.minor_alignment == pytest.approx(0.0, abs=1e-5)


def test_gradient_orthogonal_to_top_k_gives_zero_and_is_all_minor_beyond_k() -> None:
    w, u = weight_with_spectrum(DISTINCT, 64, 48)
    k = 4
    rest = u[:, k:]
    grad = rest @ torch.randn(rest.shape[1], 48, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    m = sp.measure(w.float(), grad.float(), k=k, reported_r=k)
    assert m.principal_alignment == pytest.approx(0.0, abs=1e-5)
    assert m.minor_alignment == pytest.approx(1.0, abs=1e-5)


def test_gradient_in_null_directions_of_tall_weight_counts_as_minor() -> None:
    # out > in: directions outside the column space have σ = 0, the most minor of all
    w, u = weight_with_spectrum(DISTINCT[:20], 50, 20)
    full_u = torch.linalg.qr(torch.cat([u, torch.randn(50, 30, dtype=torch.float64)], 1))[0]
    null = full_u[:, 20:]
    grad = null @ torch.randn(30, 20, dtype=torch.float64)
    assert sp.minor_alignment(u[:, :5].float(), grad.float()) == pytest.approx(1.0, abs=1e-5)
    assert sp.principal_alignment(u[:, :5].float(), grad.float()) == pytest.approx(0.0, abs=1e-5)


def test_half_and_half_gradient_gives_known_shares() -> None:
    w, u = weight_with_spectrum(DISTINCT, 40, 40)
    a = u[:, 0:1] @ torch.ones(1, 40, dtype=torch.float64)      # energy 40 inside top-1
    b = u[:, 30:31] @ torch.ones(1, 40, dtype=torch.float64) * math.sqrt(3)  # energy 120 outside
    pa = sp.principal_alignment(u[:, :1], a + b)
    assert pa == pytest.approx(0.5, abs=1e-9)  # sqrt(40 / 160)
    assert sp.minor_alignment(u[:, :1], a + b) == pytest.approx(math.sqrt(0.75), abs=1e-9)


def test_zero_or_missing_gradient_gives_nan_alignments() -> None:
    w, _ = weight_with_spectrum(DISTINCT, 40, 40)
    m = sp.measure(w.float(), torch.zeros(40, 40))
    assert math.isnan(m.principal_alignment) and math.isnan(m.minor_alignment)
    m = sp.measure(w.float(), None)
    assert math.isnan(m.principal_alignment) and math.isnan(m.minor_alignment)
    assert math.isnan(m.subspace_angle)  # no previous measurement


# --------------------------------------------------------------------------- rank and reconstruction

@pytest.mark.parametrize("rank", [1, 3, 17], ids=["r1", "r3", "r17"])
def test_rank_r_weight_has_zero_reconstruction_error_at_r(rank: int) -> None:
    g = torch.Generator().manual_seed(rank)
    w = torch.randn(64, rank, generator=g) @ torch.randn(rank, 48, generator=g)
    m = sp.measure(w, None)
    assert m.r == rank
    assert m.reconstruction_error == pytest.approx(0.0, abs=1e-5)
    s = torch.linalg.svdvals(w)
    assert sp.reconstruction_error(s, rank - 1) > 0.01  # one fewer is not enough
    assert not m.r_is_lower_bound


def test_rank_for_target_on_known_spectrum() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.1, 0.01])
    total = float((s**2).sum())
    r, err, lower = sp.rank_for_target(s, 0.05)
    assert r == 3 and not lower
    assert err == pytest.approx(math.sqrt((0.1**2 + 0.01**2) / total), rel=1e-6)
    # only the top 2 known, plus ‖W‖_F²: the tail beyond q is still exact
    errs = sp.tail_errors(s[:2], frobenius_sq=total)
    assert float(errs[2]) == pytest.approx(math.sqrt((1 + 0.01 + 1e-4) / total), rel=1e-6)
    r, err, lower = sp.rank_for_target(s[:2], 0.05, frobenius_sq=total)
    assert (r, lower) == (2, True) and err > 0.05


def test_reported_r_sets_error_and_minor_alignment_at_that_rank() -> None:
    w, u = weight_with_spectrum(DISTINCT, 40, 40)
    grad = u[:, 10:11] @ torch.ones(1, 40, dtype=torch.float64)
    at_20 = sp.measure(w.float(), grad.float(), reported_r=20)
    at_5 = sp.measure(w.float(), grad.float(), reported_r=5)
    assert at_20.r == 20 and at_5.r == 5
    assert at_20.minor_alignment == pytest.approx(0.0, abs=1e-4)  # direction 11 is inside U_20
    assert at_5.minor_alignment == pytest.approx(1.0, abs=1e-4)
    expect = math.sqrt(float((DISTINCT[20:] ** 2).sum() / (DISTINCT**2).sum()))
    assert at_20.reconstruction_error == pytest.approx(expect, rel=1e-4)


# --------------------------------------------------------------------------- subspace angle

@pytest.mark.parametrize("theta", [1e-4, 0.05, 0.3, 1.0, math.pi / 2 - 1e-3], ids=["tiny", "small", "mid", "large", "right"])
def test_subspace_rotated_by_known_angle(theta: float) -> None:
    q = orthonormal(30, 12, 7)
    k = 5
    a = q[:, :k].clone()
    b = a.clone()
    b[:, 2] = math.cos(theta) * q[:, 2] + math.sin(theta) * q[:, k + 3]
    assert sp.subspace_angle(a, b) == pytest.approx(theta, abs=1e-9, rel=1e-6)


def test_rotation_inside_the_subspace_is_angle_zero() -> None:
    q = orthonormal(30, 6, 8)
    rot = orthonormal(6, 6, 9)
    assert sp.subspace_angle(q, q @ rot) == pytest.approx(0.0, abs=1e-7)


def test_weight_with_rotated_singular_vector_gives_that_angle_through_measure() -> None:
    theta = 0.2
    out, inp, k = 50, 40, 4
    s = torch.linspace(10.0, 1.0, inp, dtype=torch.float64)
    u = orthonormal(out, out, 11)
    v = orthonormal(inp, inp, 12)
    u2 = u.clone()
    u2[:, 1] = math.cos(theta) * u[:, 1] + math.sin(theta) * u[:, 45]  # still orthonormal: 45 ≥ inp unused
    w1 = (u[:, :inp] * s) @ v.T
    w2 = (u2[:, :inp] * s) @ v.T
    first = sp.measure(w1.float(), None, k=k)
    second = sp.measure(w2.float(), None, previous_u_k=first.u_k, k=k)
    assert second.subspace_angle == pytest.approx(theta, abs=1e-4)


# --------------------------------------------------------------------------- low-rank path

def test_lowrank_path_matches_full_svd_on_decaying_spectrum() -> None:
    out, inp = 700, 600
    idx = torch.arange(inp, dtype=torch.float64)
    s = torch.exp(-idx / 25.0) + 1e-4  # trained-weight-like decay: r(1%) ≈ 115 < q = 150
    w, u = weight_with_spectrum(s, out, inp, seed=21)
    w = w.float()
    grad = torch.randn(out, inp, generator=torch.Generator().manual_seed(2))
    grad += 3 * (u[:, :20].float() @ torch.randn(20, inp, generator=torch.Generator().manual_seed(4)))
    full = sp.measure(w, grad, method="full")
    low = sp.measure(w, grad, method="lowrank")
    assert (full.method, low.method) == ("full", "lowrank")
    assert not low.r_is_lower_bound
    assert abs(low.r - full.r) <= 1
    assert low.reconstruction_error == pytest.approx(full.reconstruction_error, abs=5e-4)
    assert low.principal_alignment == pytest.approx(full.principal_alignment, abs=1e-3)
    assert low.minor_alignment == pytest.approx(full.minor_alignment, abs=1e-3)
    assert sp.subspace_angle(full.u_k, low.u_k) < 1e-2
    dec_full = sp.decompose(w, method="full")
    dec_low = sp.decompose(w, method="lowrank", need=full.k)
    k = full.k
    rel = (dec_low.s[:k] - dec_full.s[:k]).abs() / dec_full.s[:k]
    assert float(rel.max()) < 1e-3


def test_lowrank_path_flags_r_as_lower_bound_when_q_is_not_enough() -> None:
    out, inp = 640, 600
    s = torch.exp(-torch.arange(inp, dtype=torch.float64) / 80.0)  # r(1%) ≈ 368 > q = 150
    w, _ = weight_with_spectrum(s, out, inp, seed=31)
    low = sp.measure(w.float(), None, method="lowrank")
    full = sp.measure(w.float(), None, method="full")
    assert low.r_is_lower_bound and low.r == sp.lowrank_q((out, inp), low.k)
    assert low.r < full.r
    exact_at_q = sp.reconstruction_error(torch.linalg.svdvals(w), low.r)
    # σ̂ of the randomized method are those of a projection of W, so never larger than the true σ: the
    # tail from ‖W‖_F² − Σσ̂² can only over-estimate (conservative), and only slightly
    assert exact_at_q - 1e-6 <= low.reconstruction_error <= exact_at_q * 1.03


def test_auto_method_follows_the_size_threshold() -> None:
    assert sp.choose_method((512, 4096)) == "full"
    assert sp.choose_method((513, 600)) == "lowrank"
    assert sp.choose_method((100, 100), max_full_dim=64) == "lowrank"


def test_lowrank_leaves_the_training_rng_untouched() -> None:
    w = torch.randn(700, 600)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sp.decompose(w, method="lowrank", need=10)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,match", [
    ({"weight": torch.zeros(3)}, "2-D"),
    ({"weight": torch.zeros(4, 5), "grad": torch.zeros(5, 4)}, "gradient shape"),
    ({"weight": torch.zeros(4, 5), "k": 0}, "k must be"),
    ({"weight": torch.zeros(4, 5), "k": 5}, "k must be"),
    ({"weight": torch.zeros(4, 5), "reported_r": 9}, "reported r"),
    ({"weight": torch.zeros(4, 5), "method": "qr"}, "method must be one of"),
    ({"weight": torch.zeros(4, 5), "top_k_fraction": 0}, "fraction"),
    ({"weight": torch.zeros(4, 5), "recon_target": 1.5}, "target"),
], ids=["1d", "grad-shape", "k0", "k-big", "r-big", "method", "fraction", "target"])
def test_bad_input_is_a_clear_value_error(kwargs: dict, match: str) -> None:
    weight = kwargs.pop("weight")
    grad = kwargs.pop("grad", None)
    with pytest.raises(ValueError, match=match):
        sp.measure(weight, grad, **kwargs)


def test_zero_weight_is_handled() -> None:
    m = sp.measure(torch.zeros(8, 6), torch.ones(8, 6))
    assert m.r == 0 and m.reconstruction_error == 0.0
    assert m.minor_alignment == pytest.approx(1.0)
