"""Synthetic spectral runs for the SVD page tests (written with the collector's own record format)."""
from __future__ import annotations

import math
import time
from pathlib import Path

from collectors import runformat as rf
from collectors.spectral import SVDMetrics, SVDMonitor, SwitchThresholds

LAYERS = ("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_attn",
          "transformer.h.1.attn.c_proj")


def layer_values(i: int, step: int) -> dict[str, float]:
    """Layer 0 stabilises linearly (angle falls toward 0.1), layer 1 clobbers, 2 is quiet, 3 switches at 120."""
    k = step / 20
    if i == 0:
        return dict(principal_alignment=0.25, minor_alignment=0.40 + 0.015 * k, subspace_angle=max(0.05, 0.40 - 0.02 * k),
                    reconstruction_error=0.004)
    if i == 1:
        return dict(principal_alignment=0.30 + 0.012 * k, minor_alignment=0.3, subspace_angle=0.6, reconstruction_error=0.008)
    if i == 2:
        return dict(principal_alignment=0.2, minor_alignment=0.35, subspace_angle=0.9 + 0.05 * math.sin(k),
                    reconstruction_error=0.006)
    return dict(principal_alignment=0.22, minor_alignment=0.65, subspace_angle=0.08, reconstruction_error=0.003)


def write_spectral_run(run: Path, first: int, last: int, interval: int = 20,
                       thresholds: SwitchThresholds | None = None, monitor: SVDMonitor | None = None) -> SVDMonitor:
    """Append measurements for steps first..last (every ``interval``) and their alerts, like the collector."""
    t = thresholds or SwitchThresholds()
    mon = monitor or SVDMonitor(t)
    paths = rf.RunPaths.of(run)
    with rf.JsonlWriter(paths.spectral) as sw, rf.JsonlWriter(paths.alerts) as aw, rf.JsonlWriter(paths.metrics) as mw:
        for step in range(first, last + 1, interval):
            mw.append(rf.make_record("train", step=step, time=time.time(), loss=3.0 / (1 + step / 100)))
            for i, name in enumerate(LAYERS):
                vals = layer_values(i, step)
                mode = "LOW-RANK" if i == 3 and step >= 120 else "FULL"
                r = 40 if mode == "LOW-RANK" else 60
                if i == 2 and step == 40:
                    vals["subspace_angle"] = math.nan
                m = SVDMetrics(step, name, mode, r, **vals)
                alerts = mon.add_metrics(m)
                sw.append(rf.make_record(rf.RecordKind.SPECTRAL, step=step, time=time.time(), layer=name,
                                         mode=mode, mode_source="reported", r=r, r_is_lower_bound=False, k=7,
                                         shape=[192, 64], method="full", seconds=0.0012, svd_seconds=0.001,
                                         interval=interval, thresholds=t.to_dict(), alerts=[a.rule for a in alerts],
                                         **vals))
                for a in alerts:
                    aw.append(rf.make_record(rf.RecordKind.ALERT, time=time.time(), **a.to_fields()))
    return mon
