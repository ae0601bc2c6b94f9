"""Spectral (SVD) metrics of a training's layers, one package like :mod:`collectors.anomaly` (docs/spectral.md).

* :mod:`~collectors.spectral.metrics`: the metric functions on tensors (``measure``, ``decompose``...);
* :mod:`~collectors.spectral.decisions`: thresholds, measurements and the switch rules (pure);
* :mod:`~collectors.spectral.tracker`: :class:`SVDMonitor`, each layer's history, alerts and summary;
* :mod:`~collectors.spectral.text`: the collector's log line, its parser and the CLI's text blocks;
* :mod:`~collectors.spectral.plugin`: :class:`SpectralPlugin` / :class:`SpectralConfig` inside a training;
* :mod:`~collectors.spectral.monitor`: the command line, ``python -m collectors.spectral.monitor``
  (or ``python -m collectors.spectral``).

The public names are re-exported here (``from collectors.spectral import SVDMonitor, measure``). Importing
the package does not import torch: the metric functions import it when called.
"""
from __future__ import annotations

from collectors.alerts import Severity
from collectors.spectral.decisions import (ALERT_CATEGORY, DEFAULT_ANGLE_STABLE, DEFAULT_MINOR_SAFE,
                                           DEFAULT_PRINCIPAL_DANGER, DEFAULT_RECON_SAFE, DEFAULT_WARN_MARGIN,
                                           METRIC_NAMES, TREND_MAX_POINTS, TREND_MIN_POINTS, Criterion, Mode,
                                           SpectralAlert, SVDMetrics, SwitchThresholds, Trend, criteria, evaluate,
                                           fit_line, parse_mode, recommend_mode, trend_toward)
from collectors.spectral.metrics import (DEFAULT_RECON_TARGET, DEFAULT_TOP_K_FRACTION, FULL_SVD_MAX_DIM, METHODS,
                                         LayerSpectrum, decompose, measure, minor_alignment, principal_alignment,
                                         rank_for_target, reconstruction_error, subspace_angle, tail_errors, top_k_for)
from collectors.spectral.plugin import (DEFAULT_LAYER_PATTERN, DEFAULT_SVD_INTERVAL, SpectralConfig, SpectralPlugin,
                                        find_layers, make_spectral_plugin)
from collectors.spectral.text import LINE_PREFIX, compile_pattern, format_alert, format_block, format_line, parse_line
from collectors.spectral.tracker import SVDMonitor

__all__ = ["ALERT_CATEGORY", "DEFAULT_ANGLE_STABLE", "DEFAULT_LAYER_PATTERN", "DEFAULT_MINOR_SAFE",
           "DEFAULT_PRINCIPAL_DANGER", "DEFAULT_RECON_SAFE", "DEFAULT_RECON_TARGET", "DEFAULT_SVD_INTERVAL",
           "DEFAULT_TOP_K_FRACTION", "DEFAULT_WARN_MARGIN", "FULL_SVD_MAX_DIM", "LINE_PREFIX", "METHODS", "METRIC_NAMES",
           "TREND_MAX_POINTS", "TREND_MIN_POINTS", "Criterion", "LayerSpectrum", "Mode", "SVDMetrics", "SVDMonitor",
           "Severity", "SpectralAlert", "SpectralConfig", "SpectralPlugin", "SwitchThresholds", "Trend",
           "compile_pattern", "criteria", "decompose", "evaluate", "find_layers", "fit_line", "format_alert",
           "format_block", "format_line", "make_spectral_plugin", "measure", "minor_alignment", "parse_line",
           "parse_mode", "principal_alignment", "rank_for_target", "recommend_mode", "reconstruction_error",
           "subspace_angle", "tail_errors", "top_k_for", "trend_toward"]
