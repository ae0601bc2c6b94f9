"""Trainboard's collectors: everything that runs inside or beside a training.

Importing this package needs neither dash nor torch/transformers: names that need them are loaded on
first use (PEP 562 ``__getattr__``), so ``from collectors import Monitor`` works in any training script.
"""
from __future__ import annotations

import importlib
from typing import Any

from collectors.monitor import Monitor, MonitorPlugin

# name -> module that defines it; imported on first access so heavy dependencies load only when used.
_LAZY: dict[str, str] = {
    "MonitorCallback": "collectors.callback",
    # issue 3: anomaly detection and snapshots
    "AdvancedAnomalyDetector": "collectors.anomaly.detector",
    "AnomalyDetectionHook": "collectors.anomaly.detector",
    "profiler_registry": "collectors.anomaly.detector",
    "Alert": "collectors.anomaly.rules",
    "AnomalyConfig": "collectors.anomaly.rules",
    "AnomalyPlugin": "collectors.anomaly.plugin",
}

__all__ = ["Monitor", "MonitorPlugin", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collectors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
