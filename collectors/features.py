"""The one place that turns the ``anomaly=``, ``samples=``, ``spectral=`` and ``ranks=`` options into plugins.

:class:`collectors.monitor.Monitor` and :class:`collectors.callback.MonitorCallback` take the same feature
options; both hand them here, so what each option accepts, its defaults and the order in which the
plugins run are written once. The Monitor itself knows only the plugin protocol
(:mod:`collectors.plugin`), never a feature.

Order of the assembled plugins: the caller's own plugins, then samples, anomaly rules, spectral metrics,
per-rank health (``ranks=``, on by default).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from collectors.anomaly.plugin import AnomalyPlugin
from collectors.anomaly.rules import coerce_config
from collectors.plugin import MonitorPlugin
from collectors.ranks import RanksPlugin, coerce_ranks
from collectors.samples.plugin import SamplesPlugin, as_config
from collectors.spectral.plugin import SpectralPlugin, make_spectral_plugin


@dataclass
class Features:
    """The plugins to run, in order, and the spectral plugin among them (``None`` when off)."""

    plugins: list[MonitorPlugin] = field(default_factory=list)
    spectral: SpectralPlugin | None = None
    ranks: RanksPlugin | None = None


def enabled(option: Any) -> bool:
    """An option turns its feature on unless it is ``None`` or ``False``."""
    return option is not None and option is not False


def check_anomaly(option: Any) -> None:
    """Validate an ``anomaly=`` option now, so a bad value fails at construction.

    Raises:
        ValueError: naming the bad key and the allowed values.
    """
    coerce_config(option)


def assemble(plugins: Sequence[MonitorPlugin] = (), *, anomaly: Any = False, samples: Any = None,
             spectral: Any = None, ranks: Any = False) -> Features:
    """The plugins for these options, after the caller's ``plugins``.

    Args:
        plugins: the caller's plugins, kept first and in order.
        anomaly: ``True``/``None`` (the guides' thresholds), an ``AnomalyConfig`` or a dict of thresholds adds
            an :class:`AnomalyPlugin`, unless ``plugins`` holds one already; ``False`` (the default here)
            adds none.
        samples: ``True``, a ``SamplesConfig`` or a list/dataset of samples adds a :class:`SamplesPlugin`;
            ``None``/``False`` adds none.
        spectral: ``True``, a ``SpectralConfig``, a dict of its fields or a :class:`SpectralPlugin` adds the
            spectral plugin (once, even when it is also in ``plugins``); ``None``/``False`` adds none.
        ranks: ``True``/``None``, a ``RanksConfig`` or a dict of its fields adds a :class:`RanksPlugin`
            (per-rank health and the stall watchdog, docs/ranks.md) unless ``plugins`` holds one; ``False``
            (the default here) adds none.

    Raises:
        ValueError: for an invalid option (the message names it and what is accepted).
    """
    out = Features(list(plugins))
    if enabled(samples):
        out.plugins.append(SamplesPlugin(as_config(samples)))
    if anomaly is not False and not any(isinstance(p, AnomalyPlugin) for p in out.plugins):
        out.plugins.append(AnomalyPlugin(anomaly))
    if enabled(spectral):
        out.spectral = make_spectral_plugin(spectral)
        if out.spectral not in out.plugins:
            out.plugins.append(out.spectral)
    if ranks is not False:
        out.ranks = next((p for p in out.plugins if isinstance(p, RanksPlugin)), None)
        if out.ranks is None:
            out.ranks = RanksPlugin(coerce_ranks(ranks))
            out.plugins.append(out.ranks)
    return out
