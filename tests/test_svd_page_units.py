"""The SVD page's pure parts: spectral data reading, the view model, and the figure/feed builders."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from callbacks.svd import distances, svd_view, trend_chart
from collectors import runformat as rf
from collectors.spectral import SwitchThresholds
from components.svd import HeatCell, HeatClass, MetricGauge, build_alert_feed, build_gauge_figure, \
    build_heatmap_figure, build_trend_figure, gauge_bands, FeedItem
from services.spectral_store import SpectralRunData
from tests.svd_fixtures import LAYERS, write_spectral_run

T = SwitchThresholds()


def data_for(run: Path) -> SpectralRunData:
    d = SpectralRunData(rf.RunPaths.of(run))
    d.refresh()
    return d


@pytest.mark.parametrize("values,expected", [
    (dict(principal_alignment=0.45, minor_alignment=0.3, subspace_angle=0.5, reconstruction_error=0.005),
     {"principal_alignment": HeatClass.CLOBBERING, "minor_alignment": HeatClass.FAR,
      "subspace_angle": HeatClass.FAR, "reconstruction_error": HeatClass.MET}),
    (dict(principal_alignment=0.37, minor_alignment=0.58, subspace_angle=0.12, reconstruction_error=0.02),
     {"principal_alignment": HeatClass.NEAR, "minor_alignment": HeatClass.NEAR,
      "subspace_angle": HeatClass.NEAR, "reconstruction_error": HeatClass.NEAR}),
    (dict(principal_alignment=math.nan, minor_alignment=0.7, subspace_angle=0.05, reconstruction_error=0.2),
     {"principal_alignment": None, "minor_alignment": HeatClass.MET,
      "subspace_angle": HeatClass.MET, "reconstruction_error": HeatClass.FAR}),
], ids=["clobber", "near", "met-and-unknown"])
def test_distance_classes(values: dict, expected: dict) -> None:
    d = distances(values, T)
    got = {m: HeatCell(values[m], d[m], m != "principal_alignment").heat_class for m in values}
    assert got == expected


def test_view_of_a_run_orders_layers_by_urgency_and_builds_trends(tmp_path: Path) -> None:
    write_spectral_run(tmp_path / "run", 20, 240)
    view = svd_view(data_for(tmp_path / "run"), [])
    assert view.layers == sorted(LAYERS)
    assert view.shown[0] == "transformer.h.0.attn.c_proj"  # clobbering: the most urgent
    assert view.shown[-1] == "transformer.h.1.attn.c_proj"  # already LOW-RANK: last
    assert "4 layers · step 240 · 1 LOW-RANK" in view.summary
    angle_layer = next(c for c in view.trends if c.layer == "transformer.h.0.attn.c_attn")
    angle = next(line for line in angle_layer.lines if line.metric == "subspace_angle")
    # angle falls 0.02 per 20 steps, 0.16 at step 240: it reaches 0.1 at step 300
    assert angle.projection is not None and angle.projection[2] == pytest.approx(300, abs=12)
    assert angle.estimate is not None and angle.estimate.startswith("angle < 0.1 in ~")
    switched = next(c for c in view.trends if c.layer == "transformer.h.1.attn.c_proj")
    assert switched.switches == [(120.0, "LOW-RANK", 40.0)]
    quiet = trend_chart("transformer.h.1.attn.c_attn", data_for(tmp_path / "run").layers["transformer.h.1.attn.c_attn"], T)
    assert quiet.notes == ["no consistent trend toward a threshold (flat, noisy or fewer than 5 points)"]
    assert view.feed[0].step == 240 and len(view.feed) <= 50
    assert any("SWITCHED TO LOW-RANK (r=40)" in f.message for f in view.feed)


def test_layer_filter_restricts_gauges_heatmap_and_feed(tmp_path: Path) -> None:
    write_spectral_run(tmp_path / "run", 20, 200)
    view = svd_view(data_for(tmp_path / "run"), ["transformer.h.0.attn.c_attn", "not-a-layer"])
    assert view.shown == ["transformer.h.0.attn.c_attn"] == view.heat_layers
    assert view.feed and {f.layer for f in view.feed} == {"transformer.h.0.attn.c_attn"}


def test_spectral_data_counts_bad_lines_ignores_other_alerts_and_follows_truncation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_spectral_run(run, 20, 60)
    paths = rf.RunPaths.of(run)
    with open(paths.spectral, "ab") as fh:
        fh.write(b'{"v":1,"kind":"spectral","step":80,"layer":"x"}\n{broken\n')
    with rf.JsonlWriter(paths.alerts) as w:
        w.append(rf.make_record(rf.RecordKind.ALERT, rule="loss_spike", category="loss", severity="high", step=3,
                                message="spike", metadata={}))
    d = data_for(run)
    assert d.bad_lines == 1 and d.invalid_records == 1
    assert all(a["category"] == "spectral" for a in d.alerts)
    assert "1 malformed line skipped in spectral.jsonl" in svd_view(d, []).skipped
    v = d.version
    assert not d.refresh() and d.version == v  # nothing new: no new version
    paths.spectral.write_bytes(b"")  # truncated (a new training in the same dir)
    assert d.refresh() and d.layers == {}


def test_gauges_have_threshold_bands_and_survive_nan() -> None:
    g = MetricGauge("principal_alignment", math.nan, 0.4, True, False, 1.0)
    bands = gauge_bands(g, 0.05)
    assert [b["range"] for b in bands] == [[0, 0.35000000000000003], [0.35000000000000003, 0.4], [0.4, 1.0]]
    assert bands[-1]["color"] == "#d62728"  # the shared CRITICAL colour
    angle = MetricGauge("subspace_angle", 0.08, 0.1, False, True, math.pi / 2)
    assert gauge_bands(angle, 0.05)[0] == {"range": [0, 0.1], "color": "#b7e4b0"}
    fig = build_gauge_figure("l", [g, angle], 0.05)
    assert [t["type"] for t in fig["data"]] == ["indicator", "indicator"]
    assert fig["data"][0].get("value") is None and fig["data"][1]["value"] == 0.08
    assert fig["data"][0]["gauge"]["threshold"]["value"] == 0.4


def test_heatmap_trend_and_feed_builders() -> None:
    cells = [[HeatCell(0.45, -1.0, False), HeatCell(0.7, -2.0), HeatCell(math.nan, math.nan), HeatCell(0.2, 3.0)]]
    fig = build_heatmap_figure(["a"], ["principal_alignment", "minor_alignment", "subspace_angle",
                                       "reconstruction_error"], cells, 0.05)
    assert fig["data"][0]["z"] == [[0, 3, None, 2]] and fig["data"][0]["text"][0][2] == "—"
    from components.svd import TrendChart, TrendLine
    chart = TrendChart("a", [TrendLine("subspace_angle", [20, 40], [0.3, 0.2], 0.1, (40, 0.2, 80, 0.1), "x")],
                       [(40.0, "LOW-RANK", 12.0)], ["angle < 0.1 in ~40 steps"])
    tf = build_trend_figure(chart)
    assert [d["name"] for d in tf["data"]] == ["subspace angle (rad)", "subspace angle (rad) trend"]
    assert any(a["text"] == "→ LOW-RANK r=12" for a in tf["layout"]["annotations"])
    assert any(s.get("x0") == 40.0 for s in tf["layout"]["shapes"])  # the switch marker
    feed = build_alert_feed([FeedItem("CRITICAL", 5, "a", "boom"), FeedItem("INFO", 4, "a", "trend")])
    assert feed[0].children[0].style == {"backgroundColor": "#d62728"} and feed[0].children[3].children == "boom"
    assert build_alert_feed([])[0].children == "No spectral alerts yet."


def test_rolled_back_spectral_alerts_are_superseded(tmp_path: Path) -> None:
    from services.model import ResumePoint

    write_spectral_run(tmp_path / "run", 20, 240)
    with rf.JsonlWriter(rf.RunPaths.of(tmp_path / "run").alerts) as w:
        for step in (200, 220):
            w.append(rf.make_record("alert", rule="clobbering", category="spectral", severity="medium", step=step,
                                    value=0.5, threshold=0.4, message=f"clobbering at {step}", time=100.0 + step,
                                    metadata={"layer": "transformer.h.0.attn.c_proj"}))
    data = data_for(tmp_path / "run")
    assert data.alerts, "the fixture run has spectral alerts"
    t_after = max(a["time"] for a in data.alerts) + 1.0
    first = min(a["step"] for a in data.alerts)
    # a resume before every alert, written after them: every later-step alert was rolled back
    view = svd_view(data, [], [ResumePoint(step=first - 1, time=t_after)])
    assert view.feed == []
    assert len(svd_view(data, [], [ResumePoint(step=first - 1, time=0.0)]).feed) == len(svd_view(data, []).feed)
