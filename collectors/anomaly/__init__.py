"""Anomaly detection for Trainboard: pure rules, the plain-loop detector, and the in-training plugin.

``rules`` needs only the standard library; ``detector`` touches torch only through the objects passed
in; ``plugin`` runs inside :class:`collectors.monitor.Monitor` / ``MonitorCallback``.
"""
from __future__ import annotations

from collectors.anomaly.detector import AdvancedAnomalyDetector, AnomalyDetectionHook, ProfilerRegistry, profiler_registry
from collectors.anomaly.rules import Alert, AnomalyConfig, Category, Rule, RuleEngine, Severity

__all__ = ["AdvancedAnomalyDetector", "AnomalyDetectionHook", "ProfilerRegistry", "profiler_registry", "Alert",
           "AnomalyConfig", "Category", "Rule", "RuleEngine", "Severity"]
