"""Trainboard's collectors: everything that runs inside or beside a training.

Importing this package needs neither dash nor torch/transformers: names that need them are loaded on
first use (PEP 562 ``__getattr__``), so ``from collectors import Monitor`` works in any training script.

The modules form a downward chain (each imports only from the lines above it; tests/test_structure.py
checks it, function-level imports included, and that nothing here imports the dashboard side):

1. ``runformat`` - the on-disk contract: paths, records, JSONL writer/tailer, atomic writes, HF layout;
2. ``runtime`` - rank, memory, clock, numbers, the warn-once ``Guard``;
3. ``alerts`` (one ``Severity``, one record shape, one writer), ``control`` (thresholds, snapshot
   request/claim/result, the Smart Monitor's lock), ``plugin`` (the plugin protocol);
4. ``snapshots/``, ``experiments/``; then the features ``anomaly/`` (with ``anomaly.smart_monitor``),
   ``samples/``, ``spectral/``;
5. ``features`` - the one place that turns ``anomaly=``/``samples=``/``spectral=`` into plugins;
6. ``monitor`` (``Monitor``), then ``callback`` (``MonitorCallback``) and ``skip_batches``
   (``SkipBatches``, over the stdlib ``recovery`` at rank 1), then the demo and ``enable``.
"""
from __future__ import annotations

import importlib
from typing import Any

from collectors.monitor import Monitor, MonitorPlugin

# name -> module that defines it; imported on first access so heavy dependencies load only when used.
_LAZY: dict[str, str] = {
    "MonitorCallback": "collectors.callback",
    # issue 11: recovery (skip a range of batches when resuming a Trainer run)
    "SkipBatches": "collectors.skip_batches",
    # experiments (issue 6)
    "CheckpointManager": "collectors.experiments.checkpoints",
    "capture_rng_state": "collectors.experiments.checkpoints",
    "restore_rng_state": "collectors.experiments.checkpoints",
    "MetricsLogger": "collectors.experiments.metrics_logger",
    "VisualizationManager": "collectors.experiments.visualization",
    "ConfigTracker": "collectors.experiments.config_tracker",
    "generate_experiment_id": "collectors.experiments.layout",
    "create_experiment_directory": "collectors.experiments.layout",
    "ResultsParser": "collectors.experiments.results",
    "ResultsAggregator": "collectors.experiments.results",
    # samples (issue 4)
    "SamplesConfig": "collectors.samples.plugin",
    "SamplesPlugin": "collectors.samples.plugin",
    # issue 3: anomaly detection and snapshots
    "AdvancedAnomalyDetector": "collectors.anomaly.detector",
    "AnomalyDetectionHook": "collectors.anomaly.detector",
    "profiler_registry": "collectors.anomaly.detector",
    "Alert": "collectors.alerts",
    "Severity": "collectors.alerts",
    "AnomalyConfig": "collectors.anomaly.rules",
    "AnomalyPlugin": "collectors.anomaly.plugin",
    # issue 5: spectral (SVD) monitor
    "SVDMonitor": "collectors.spectral.tracker",
    "SVDMetrics": "collectors.spectral.decisions",
    "SwitchThresholds": "collectors.spectral.decisions",
    "SpectralPlugin": "collectors.spectral.plugin",
    "SpectralConfig": "collectors.spectral.plugin",
    # issue 10: notifications (apprise is imported only when a Notifier is built)
    "Notifier": "collectors.notify",
    "notifier_from_settings": "collectors.notify",
}

__all__ = ["Monitor", "MonitorPlugin", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collectors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
