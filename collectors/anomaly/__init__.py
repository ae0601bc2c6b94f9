"""Anomaly detection for Trainboard: pure rules, the plain-loop detector, the in-training plugin and the
standalone Smart Monitor.

``rules`` needs only the standard library; ``detector`` touches torch only through the objects passed
in; ``actions`` writes alerts and saves snapshots for both ``plugin`` (inside
:class:`collectors.monitor.Monitor` / ``MonitorCallback``) and ``smart_monitor``
(``python -m collectors.anomaly.smart_monitor``, beside a training you cannot modify).
"""
from __future__ import annotations

from collectors.anomaly.detector import AdvancedAnomalyDetector, AnomalyDetectionHook, ProfilerRegistry, profiler_registry
from collectors.anomaly.rules import Alert, AnomalyConfig, Category, Rule, RuleEngine, Severity

__all__ = ["AdvancedAnomalyDetector", "AnomalyDetectionHook", "ProfilerRegistry", "profiler_registry", "Alert",
           "AnomalyConfig", "Category", "Rule", "RuleEngine", "Severity"]
