"""Decision logic of the SVD monitor on scripted sequences: each level fires where it should and nowhere else."""
from __future__ import annotations

import io
import math
import random
import re

import pytest

from collectors.spectral import (Mode, SVDMetrics, SVDMonitor, Severity, SwitchThresholds, compile_pattern,
                                    fit_line, format_line, parse_line, parse_mode, trend_toward)

LAYER = "block0.attn.c_q"
QUIET = dict(principal_alignment=0.20, minor_alignment=0.30, subspace_angle=0.50, reconstruction_error=0.005)


def metrics(step: int, layer: str = LAYER, mode: str = "FULL", r: int | None = 246, **over: float) -> SVDMetrics:
    return SVDMetrics(step=step, layer_name=layer, mode=mode, r=r, **{**QUIET, **over})


def rules(alerts) -> list[tuple[str, str]]:
    return [(a.label, a.rule) for a in alerts]  # the spectral monitor's words for the one Severity scale


# --------------------------------------------------------------------------- single measurements

@pytest.mark.parametrize("over,expected", [
    ({}, []),
    ({"principal_alignment": 0.45}, [("CRITICAL", "clobbering")]),
    ({"principal_alignment": 0.40}, [("WARNING", "approaching_clobbering")]),     # equal is not above
    ({"principal_alignment": 0.37}, [("WARNING", "approaching_clobbering")]),
    ({"principal_alignment": 0.34}, []),                                          # outside the margin
    ({"subspace_angle": 0.05, "minor_alignment": 0.7}, [("CRITICAL", "optimal_conditions")]),
    ({"subspace_angle": 0.12, "minor_alignment": 0.58}, [("WARNING", "approaching_optimal")]),
    ({"subspace_angle": 0.05, "minor_alignment": 0.58}, [("WARNING", "approaching_optimal")]),
    ({"subspace_angle": 0.20, "minor_alignment": 0.7}, []),                       # angle not near
    ({"subspace_angle": 0.05, "minor_alignment": 0.7, "reconstruction_error": 0.02}, [("WARNING", "approaching_optimal")]),
    ({"subspace_angle": 0.05, "minor_alignment": 0.7, "reconstruction_error": 0.2}, []),
    ({"subspace_angle": math.nan, "minor_alignment": 0.7}, []),                  # first measurement: unknown angle
    ({"principal_alignment": 0.5, "subspace_angle": 0.05, "minor_alignment": 0.7},
     [("CRITICAL", "clobbering"), ("CRITICAL", "optimal_conditions")]),
], ids=["quiet", "clobber", "at-danger", "near-danger", "below-margin", "optimal", "near-optimal-1of3",
        "near-optimal-2of3", "angle-far", "recon-near", "recon-far", "nan-angle", "both-critical"])
def test_single_measurement_levels(over: dict, expected: list) -> None:
    assert rules(SVDMonitor().add_metrics(metrics(100, **over))) == expected


def test_messages_name_values_distances_and_what_is_met() -> None:
    mon = SVDMonitor()
    (warn,) = mon.add_metrics(metrics(450, subspace_angle=0.12, minor_alignment=0.58, reconstruction_error=0.0045))
    assert warn.message.startswith("Approaching optimal conditions: 1/3 criteria met")
    assert "✓ Safe reconstruction" in warn.message
    assert "subspace_angle=0.1200 (within 0.0200 of 0.1)" in warn.message
    assert "minor_alignment=0.5800 (within 0.0200 of 0.6)" in warn.message
    (crit,) = SVDMonitor().add_metrics(metrics(1, subspace_angle=0.01, minor_alignment=0.9))
    assert crit.message == "OPTIMAL CONDITIONS MET! All criteria satisfied → SWITCH IMMINENT"
    fields = crit.to_fields()
    assert set(fields) == {"rule", "category", "severity", "step", "value", "threshold", "message", "metadata"}
    assert fields["category"] == "spectral" and fields["metadata"]["layer"] == LAYER


def test_custom_margin_and_thresholds_change_where_levels_fire() -> None:
    t = SwitchThresholds(warn_margin=0.10, principal_danger=0.35)
    assert rules(SVDMonitor(t).add_metrics(metrics(1, principal_alignment=0.30))) == [("WARNING", "approaching_clobbering")]
    assert rules(SVDMonitor(t).add_metrics(metrics(1, principal_alignment=0.36))) == [("CRITICAL", "clobbering")]
    assert rules(SVDMonitor(SwitchThresholds(warn_margin=0.0)).add_metrics(metrics(1, principal_alignment=0.39))) == []


# --------------------------------------------------------------------------- sequences

def test_scripted_run_quiet_then_warning_then_critical_then_switch() -> None:
    mon = SVDMonitor()
    seen: dict[int, list] = {}
    script = [(20, {}), (40, {}), (60, {"subspace_angle": 0.14, "minor_alignment": 0.57}),
              (80, {"subspace_angle": 0.08, "minor_alignment": 0.65}), (100, {"subspace_angle": 0.07, "minor_alignment": 0.7})]
    for step, over in script:
        seen[step] = rules(mon.add_metrics(metrics(step, **over)))
    assert seen[20] == [] and seen[40] == []
    assert seen[60] == [("WARNING", "approaching_optimal")]
    assert seen[80] == [("CRITICAL", "optimal_conditions")]
    assert seen[100] == [("CRITICAL", "optimal_conditions")]
    switched = mon.add_metrics(metrics(120, mode="LOW-RANK", r=220, subspace_angle=0.07, minor_alignment=0.7))
    assert [a.message for a in switched] == [f"[{LAYER}] SWITCHED TO LOW-RANK (r=220)"]  # switch rules silent now
    assert mon.add_metrics(metrics(140, mode="LOW-RANK", r=220, principal_alignment=0.9)) == []
    back = mon.add_metrics(metrics(160, mode=0.0, r=246))
    assert [a.message for a in back] == [f"[{LAYER}] SWITCHED TO FULL (r=246)"]


def test_layers_are_independent_and_repeated_step_is_ignored() -> None:
    mon = SVDMonitor()
    assert rules(mon.add_metrics(metrics(20, layer="a", principal_alignment=0.5))) == [("CRITICAL", "clobbering")]
    assert mon.add_metrics(metrics(20, layer="b")) == []
    assert mon.add_metrics(metrics(20, layer="a", principal_alignment=0.5)) == []  # duplicate
    assert mon.add_metrics(metrics(40, layer="b", mode="LOW-RANK")) != []  # b switched, a did not
    assert mon.layers() == ["a", "b"]


def test_linear_angle_sequence_estimates_steps_within_20_percent() -> None:
    # angle falls 0.004 per 20 steps: from 0.16 at step 20 to 0.124 at step 200; crossing 0.1 at step 320
    mon = SVDMonitor()
    infos = []
    for i in range(10):
        step = 20 * (i + 1)
        out = mon.add_metrics(metrics(step, subspace_angle=0.16 - 0.004 * i))
        infos.append([a for a in out if a.rule == "subspace_stabilizing"])
    assert all(not x for x in infos[:4])  # fewer than 5 points: no trend yet
    est = infos[-1][0]
    true_remaining = 320 - 200
    assert est.metadata["steps_to_threshold"] == pytest.approx(true_remaining, rel=0.2)
    assert est.severity == Severity.INFO
    assert re.fullmatch(r"Subspace stabilizing: 0\.124 → ~\d+ steps to threshold", est.message)


def test_minor_alignment_rising_gives_gradients_safer_estimate() -> None:
    mon = SVDMonitor()
    out = []
    for i in range(8):  # 0.30 + 0.02 per 10 steps; at step 80: 0.44; reaches 0.6 at step 160
        out = mon.add_metrics(metrics(10 * (i + 1), minor_alignment=0.30 + 0.02 * i))
    (info,) = [a for a in out if a.rule == "gradients_safer"]
    assert info.message.startswith("Gradients becoming safer: 0.440 → ~")
    assert info.metadata["steps_to_threshold"] == pytest.approx(80, rel=0.2)


def test_noisy_flat_sequence_gives_no_estimate() -> None:
    rng = random.Random(7)
    mon = SVDMonitor()
    for i in range(20):
        out = mon.add_metrics(metrics(20 * (i + 1), subspace_angle=0.3 + rng.uniform(-0.03, 0.03),
                                      minor_alignment=0.3 + rng.uniform(-0.03, 0.03)))
        assert [a for a in out if a.severity == Severity.INFO] == [], f"trend at point {i}"


def test_exactly_flat_and_wrong_direction_give_no_trend() -> None:
    steps = list(range(0, 200, 20))
    assert trend_toward(steps, [0.3] * 10, 0.1, decreasing=True) is None
    assert trend_toward(steps, [0.2 + 0.01 * i for i in range(10)], 0.1, decreasing=True) is None  # rising
    # consistent but so slow the crossing is > 10 windows away: flat
    assert trend_toward(steps, [0.3 - 1e-5 * i for i in range(10)], 0.1, decreasing=True) is None


def test_restart_from_earlier_step_resets_the_layer_history() -> None:
    mon = SVDMonitor()
    for i in range(6):
        mon.add_metrics(metrics(100 + 20 * i, subspace_angle=0.3 - 0.01 * i))
    out = mon.add_metrics(metrics(40, subspace_angle=0.25))
    assert [a for a in out if a.rule == "subspace_stabilizing"] == []
    assert len(mon.history[LAYER]) == 1


def test_fit_line_exact() -> None:
    slope, intercept, r2 = fit_line([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    assert (slope, intercept, r2) == pytest.approx((2.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="two or more"):
        fit_line([1], [1])


# --------------------------------------------------------------------------- summary

def test_summary_shows_distance_safe_danger_and_criteria() -> None:
    mon = SVDMonitor()
    mon.add_metrics(metrics(800, layer="block0.attn.c_q", mode="LOW-RANK", r=195, principal_alignment=0.35,
                            minor_alignment=0.68, subspace_angle=0.065, reconstruction_error=0.0032))
    mon.add_metrics(metrics(800, layer="block1.attn.c_k", principal_alignment=0.52, subspace_angle=0.3))
    buf = io.StringIO()
    mon.print_summary(file=buf)
    text = buf.getvalue()
    assert "SVD MONITORING SUMMARY" in text
    q = text[text.index("block0.attn.c_q"):text.index("block1.attn.c_k")]
    assert "Latest step: 800" in q and "Mode: LOW-RANK" in q and "Rank: 195" in q
    assert "Clobbering threshold: +0.0500 🟢 SAFE" in q
    assert "Optimal conditions: 3/3 met" in q
    assert "Stable subspace:" in q and "✓ (angle=0.0650 vs <0.1)" in q
    k = text[text.index("block1.attn.c_k"):]
    assert "Clobbering threshold: -0.1200 🔴 DANGER" in k
    assert "Optimal conditions: 1/3 met" in k and "✗ (angle=0.3000 vs <0.1)" in k
    assert "No metrics collected yet." in SVDMonitor().summary_text()


def test_state_dict_round_trip_keeps_trends() -> None:
    mon = SVDMonitor()
    for i in range(6):
        mon.add_metrics(metrics(20 * (i + 1), subspace_angle=0.3 - 0.01 * i))
    other = SVDMonitor()
    other.load_state_dict(mon.state_dict())
    a = [x.rule for x in mon.add_metrics(metrics(140, subspace_angle=0.24))]
    b = [x.rule for x in other.add_metrics(metrics(140, subspace_angle=0.24))]
    assert a == b and "subspace_stabilizing" in a


# --------------------------------------------------------------------------- records, lines, bad input

def test_line_round_trip_and_other_output_is_ignored() -> None:
    m = metrics(450, r=None, subspace_angle=math.nan)
    line = "2025-01-01 INFO " + format_line(m, seconds=0.0021)
    back = parse_line(line)
    assert back is not None and back.step == 450 and back.layer_name == LAYER and back.r is None
    assert back.principal_alignment == pytest.approx(0.2) and math.isnan(back.subspace_angle)
    assert parse_line("{'loss': 1.23, 'epoch': 0.1}") is None
    assert parse_line("[trainboard-svd] step=oops layer=x") is None


def test_custom_pattern_reads_another_format() -> None:
    pat = compile_pattern(r"it (?P<step>\d+) (?P<layer>\S+): pa=(?P<principal_alignment>[\d.]+) "
                          r"ma=(?P<minor_alignment>[\d.]+) ang=(?P<subspace_angle>[\d.]+) "
                          r"rec=(?P<reconstruction_error>[\d.e-]+)(?: mode=(?P<mode>\S+))?")
    m = parse_line("it 30 h.1.q: pa=0.41 ma=0.2 ang=0.3 rec=1e-3 mode=1.0", pat)
    assert m is not None and m.step == 30 and m.mode == Mode.LOW_RANK and m.reconstruction_error == 0.001
    with pytest.raises(ValueError, match=r"lacks the named group\(s\) \(\?P<layer>"):
        compile_pattern(r"(?P<step>\d+) (?P<principal_alignment>\S+) (?P<minor_alignment>\S+) "
                        r"(?P<subspace_angle>\S+) (?P<reconstruction_error>\S+)")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_pattern("(?P<step>")


@pytest.mark.parametrize("kwargs,match", [
    ({"warn_margin": -0.1}, "warn_margin must be in"),
    ({"principal_danger": 0.0}, "principal_danger must be in"),
    ({"minor_safe": 1.5}, "minor_safe must be in"),
    ({"angle_stable": math.nan}, "angle_stable must be a finite number"),
    ({"recon_safe": "0.01"}, "recon_safe must be a finite number"),
], ids=["margin", "danger", "minor", "angle", "recon-type"])
def test_bad_thresholds_are_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SwitchThresholds(**kwargs)


def test_bad_metrics_and_modes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="mode must be FULL or LOW-RANK"):
        metrics(1, mode="half")
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        metrics(-1)
    with pytest.raises(ValueError, match="principal_alignment must be a number"):
        metrics(1, principal_alignment="high")
    with pytest.raises(ValueError, match="needs an SVDMetrics"):
        SVDMonitor().add_metrics({"step": 1})  # type: ignore[arg-type]
    assert parse_mode(0.0) == Mode.FULL and parse_mode("1.0") == Mode.LOW_RANK and parse_mode("lowrank") == Mode.LOW_RANK


def test_the_guides_custom_monitoring_example_runs_with_our_import_path(capsys: pytest.CaptureFixture[str]) -> None:
    from collectors import SVDMetrics as M, SVDMonitor as Mon, SwitchThresholds as T

    thresholds = T(warn_margin=0.05)
    monitor = Mon(thresholds)
    metrics = M(step=100, layer_name="block0.attn.c_q", mode=0.0, r=246, principal_alignment=0.32,
                minor_alignment=0.48, subspace_angle=0.15, reconstruction_error=0.008)
    assert monitor.add_metrics(metrics) == []  # 0.32 is 0.08 below danger: outside the 0.05 margin
    monitor.print_summary()
    out = capsys.readouterr().out
    assert "block0.attn.c_q" in out and "Mode: FULL" in out and "Clobbering threshold: +0.0800 🟢 SAFE" in out
