"""Trainboard's one installed import name: ``from trainboard import MonitorCallback, Monitor, ...``.

The public names are exactly those of ``collectors`` (its ``__all__``), delegated on first use, so
``import trainboard`` stays as light as ``import collectors`` (no dash, no torch until a name needs it)
and a name added to ``collectors/__init__.py`` is exported here without a second list to keep in step.

In a checkout this package sits beside ``collectors/`` and imports it by its top-level name; in an
installed wheel the build step (setup.py) rewrites that import to ``trainboard.collectors``, the only
place the collector lives there.
"""
from __future__ import annotations

from typing import Any

import collectors as _collectors
from collectors import Monitor, MonitorPlugin

__version__ = "0.1.0"
__all__ = list(_collectors.__all__)


def __getattr__(name: str) -> Any:
    if name in _collectors.__all__:
        value = getattr(_collectors, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trainboard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
