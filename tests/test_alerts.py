"""One Severity, one alert record shape, one writer: every producer's lines in logs/alerts.jsonl look alike."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors.alerts import (ALERT_FIELDS, SOURCE_COLLECTOR, SOURCE_SMART_MONITOR, Alert, AlertLog, Severity,
                               normalize_alert)
from collectors.anomaly.actions import AlertActions
from collectors.anomaly.rules import Observation, RuleEngine
from collectors.runtime import Guard
from collectors.spectral import SVDMetrics, SVDMonitor


@pytest.mark.parametrize("text,expected", [
    ("critical", Severity.CRITICAL), ("HIGH", Severity.HIGH), (" medium ", Severity.MEDIUM), ("low", Severity.LOW),
    ("CRITICAL", Severity.CRITICAL), ("WARNING", Severity.HIGH), ("Info", Severity.LOW), (Severity.INFO, Severity.LOW),
], ids=["critical", "upper-high", "padded", "low", "spectral-critical", "spectral-warning", "spectral-info", "member"])
def test_severity_parse_accepts_both_vocabularies(text, expected) -> None:
    assert Severity.parse(text) is expected


def test_severity_is_one_scale_of_four_levels() -> None:
    assert [s.value for s in Severity] == ["critical", "high", "medium", "low"]
    assert Severity.WARNING is Severity.HIGH and Severity.INFO is Severity.LOW
    with pytest.raises(ValueError, match="unknown severity 'severe'"):
        Severity.parse("severe")


def test_dashboard_severity_is_the_collectors() -> None:
    from components.severity import SEVERITY_STYLES, Severity as DashboardSeverity, style_of

    assert DashboardSeverity is Severity
    assert set(SEVERITY_STYLES) == set(Severity)
    assert style_of("WARNING") == SEVERITY_STYLES[Severity.HIGH] and style_of("nonsense") == SEVERITY_STYLES[Severity.LOW]


def _spectral_alerts() -> list[Alert]:
    mon = SVDMonitor()
    alerts = mon.add_metrics(SVDMetrics(step=9, layer_name="h.0.attn.c_attn", mode="FULL", r=10, principal_alignment=0.45,
                                        minor_alignment=0.2, subspace_angle=0.5, reconstruction_error=0.005))
    assert [a.label for a in alerts] == ["CRITICAL"]
    return [a.to_alert() for a in alerts]


def test_anomaly_and_spectral_alerts_are_written_in_one_shape(tmp_path: Path) -> None:
    engine = RuleEngine()
    actions = AlertActions(tmp_path, engine, source=SOURCE_SMART_MONITOR, guard=Guard())
    actions.write_alerts(engine.observe(Observation(step=3, loss=float("nan"))))
    spectral_log = AlertLog(rf.RunPaths.of(tmp_path).alerts, source=SOURCE_COLLECTOR)
    assert spectral_log.write(_spectral_alerts(), now=123.0) == 1
    actions.close()
    spectral_log.close()
    lines = rf.RunPaths.of(tmp_path).alerts.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [list(r) for r in records] == [["v", "kind", *ALERT_FIELDS]] * 2  # same fields, same order
    nan, clobber = records
    assert (nan["rule"], nan["severity"], nan["source"], nan["value"]) == ("non_finite_loss", "critical", "smart_monitor", "NaN")
    # Trainboard's scale: clobbering is advice to an adaptive-rank training (medium); the monitor's word is kept
    assert (clobber["category"], clobber["severity"], clobber["source"]) == ("spectral", "medium", "collector")
    assert clobber["metadata"]["spectral_level"] == "CRITICAL"
    assert clobber["metadata"]["layer"] == "h.0.attn.c_attn" and clobber["reason"] == "clobbering" and clobber["time"] == 123.0


def test_old_spectral_records_read_in_todays_shape() -> None:
    old = {"v": 1, "kind": "alert", "time": 5.0, "rule": "approaching_clobbering", "category": "spectral",
           "severity": "WARNING", "step": 40, "value": 0.37, "threshold": 0.4, "message": "Approaching",
           "metadata": {"layer": "a"}}
    new = normalize_alert(old)
    assert new["severity"] == "high" and new["source"] == "collector" and new["reason"] == "approaching_clobbering"
    assert {k: new[k] for k in old if k != "severity"} == {k: v for k, v in old.items() if k != "severity"}
    assert normalize_alert({"rule": "x", "severity": "bogus", "metadata": "oops"})["severity"] == "low"
    assert normalize_alert({"rule": "x", "severity": "bogus", "metadata": "oops"})["metadata"] == {}


def test_alert_log_on_an_unwritable_place_reports_once_and_never_raises(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    guard = Guard()
    log = AlertLog(blocker / "logs" / "alerts.jsonl", source=SOURCE_COLLECTOR, guard=guard)
    for _ in range(3):
        assert log.write(_spectral_alerts()) == 0
    assert guard.failures["opening alerts.jsonl"] == 3 and list(guard.reported) == ["opening alerts.jsonl"]


def test_to_dict_copies_as_asdict_does_without_its_deepcopy_of_scalars():
    import collections
    import dataclasses
    import math as _math

    import numpy as np

    Pair = collections.namedtuple("Pair", "a b")

    @dataclasses.dataclass
    class Inner:
        x: float
        tags: list

    meta = {"window": [1.0, 2.5, float("nan")], "pair": Pair(1, [2, 3]), "inner": Inner(0.5, ["a"]),
            "nested": {"k": (1, 2), "arr": np.float64(3.0), "sev": Severity.HIGH}, "none": None, 7: "int key"}
    alert = Alert("loss_spike", "loss", "high", 12, float("inf"), 0.3, "m", meta, "r")
    got, want = alert.to_dict(), dataclasses.asdict(alert)
    assert list(got) == list(want) == [f.name for f in dataclasses.fields(Alert)]
    assert json.dumps(got, default=str) == json.dumps(want, default=str)  # the same values (NaN, inf too)
    assert type(got["metadata"]["pair"]) is Pair and got["metadata"]["inner"] == {"x": 0.5, "tags": ["a"]}
    assert type(got["metadata"]["nested"]["k"]) is tuple and got["metadata"]["nested"]["sev"] is Severity.HIGH
    got["metadata"]["window"].append(9.0)  # a copy, as asdict gives: the alert itself is unchanged
    got["metadata"]["nested"]["k"] = None
    assert len(alert.metadata["window"]) == 3 and alert.metadata["nested"]["k"] == (1, 2)
    assert _math.isinf(got["value"]) and got["metadata"]["none"] is None
