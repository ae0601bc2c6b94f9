"""What every collector feature needs from the process it runs in: rank, memory, clock, numbers, warn-once.

The collector runs inside someone's training, so these helpers never raise and never import torch
themselves (they look at ``sys.modules`` for it). They sit at the bottom of the collector's import chain,
just above :mod:`collectors.runformat`: the Monitor, every feature package, the experiments helpers and
the standalone watchers import them from here, and this module imports nothing of the collector.

:class:`Guard` reports problems inside a training once per kind and never raises them: a full disk, a
permission error or a bug of ours must never stop the training. Every collector entry point runs its work
through it, which logs the first failure of each kind with its cause and swallows the rest.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

BYTES_PER_GB = 1024**3
RANK_ENV_VARS = ("RANK", "SLURM_PROCID")
"""Launcher variables holding the global rank when torch.distributed is not initialised (yet)."""

logger = logging.getLogger("trainboard")
T = TypeVar("T")


class Guard:
    """Runs callables, reporting each kind of failure once and returning a default instead of raising.

    Attributes:
        reported: the kinds already reported, with the first message of each.
        failures: how many failures of each kind happened (reported or not).
    """

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.log = log or logger
        self.reported: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn_once(self, kind: str, message: str) -> None:
        """Log ``message`` at WARNING the first time ``kind`` is seen; count every time."""
        with self._lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if kind in self.reported:
                return
            self.reported[kind] = message
        self.log.warning("Trainboard: %s (reported once; training goes on)", message)

    def run(self, kind: str, fn: Callable[..., T], *args: object, default: T | None = None, **kwargs: object) -> T | None:
        """Call ``fn``; on any Exception report it once under ``kind`` and return ``default``."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the whole point: nothing escapes into the training
            self.warn_once(kind, f"{kind} failed: {type(exc).__name__}: {exc}")
            return default


def now() -> float:
    """Wall-clock seconds since the epoch: the one clock every record's ``time`` field is taken from."""
    return time.time()


def iso_now(ts: float | None = None) -> str:
    """UTC ISO-8601 timestamp with seconds, the form every file of ours uses for humans."""
    return datetime.fromtimestamp(now() if ts is None else ts, tz=timezone.utc).isoformat(timespec="seconds")


def world_rank() -> int:
    """The process's global rank: torch.distributed when initialised, else the launcher's RANK, else 0."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # noqa: BLE001 - a half-initialised process group counts as rank from env
        pass
    for var in RANK_ENV_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def is_main_process(main_process: bool | None = None) -> bool:
    """Whether this process writes files: ``main_process`` when given, else "the world rank is 0"."""
    return world_rank() == 0 if main_process is None else bool(main_process)


def process_memory() -> dict[str, float]:
    """Memory in GB: process RSS always, CUDA allocated and peak when torch has CUDA in use."""
    out: dict[str, float] = {}
    try:
        import psutil

        out["rss_gb"] = psutil.Process().memory_info().rss / BYTES_PER_GB
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: fall back below
        try:
            with open("/proc/self/statm") as fh:
                out["rss_gb"] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / BYTES_PER_GB
        except (OSError, ValueError, IndexError):
            pass
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_allocated_gb"] = torch.cuda.memory_allocated() / BYTES_PER_GB
            out["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / BYTES_PER_GB
    except Exception:  # noqa: BLE001
        pass
    return out


def as_number(value: Any) -> Any:
    """Numbers (and 0-d tensors/arrays) as Python floats/ints; anything else unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value
