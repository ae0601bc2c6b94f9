"""Report problems inside a training once per kind and never raise them.

The collector runs inside someone's training: a full disk, a permission error or a bug of ours must
never stop it. Every collector entry point runs its work through :class:`Guard`, which logs the first
failure of each kind with its cause and swallows the rest.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, TypeVar

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
