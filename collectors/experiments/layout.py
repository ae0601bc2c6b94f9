"""Experiment identifiers and the directory tree of one experiment (issue 6).

Used by training scripts (``generate_experiment_id``, ``create_experiment_directory``) and by the
other experiment classes, which derive every path from :class:`collectors.runformat.RunPaths`.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from collectors import runformat as rf

ID_TIME_FORMAT = "%Y%m%d_%H%M%S"
MAX_NAME_CHARS = 80
SUFFIX_HEX_BYTES = 2
"""Random hex suffix so two experiments started in the same second get different ids."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """``name`` reduced to characters safe in a file name on every OS (letters, digits, ``._-``).

    Raises:
        ValueError: when nothing usable is left (empty, only separators, ``.`` or ``..``).
    """
    if not isinstance(name, str):
        raise ValueError(f"experiment name must be a string; got {type(name).__name__}")
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._-")[:MAX_NAME_CHARS]
    if not cleaned:
        raise ValueError(f"experiment name {name!r} has no letters or digits; use e.g. 'baseline_lr1e-3'")
    return cleaned


def generate_experiment_id(name: str, *, now: float | None = None) -> str:
    """A timestamped, filesystem-safe experiment id: ``<name>_<YYYYMMDD_HHMMSS>_<4 hex>``.

    Args:
        name: a descriptive name (``"wave_rgd_qfe_lr0.001_bs32"``); unsafe characters become ``_``.
        now: the timestamp to use (default: the current time), for reproducible tests.

    Raises:
        ValueError: when ``name`` has no usable characters.
    """
    stamp = time.strftime(ID_TIME_FORMAT, time.localtime(time.time() if now is None else now))
    return f"{safe_name(name)}_{stamp}_{secrets.token_hex(SUFFIX_HEX_BYTES)}"


def create_experiment_directory(root: str | os.PathLike[str], experiment_id: str) -> dict[str, Path]:
    """Create ``<root>/<experiment_id>/`` with ``checkpoints/``, ``logs/`` and ``visualizations/``.

    Args:
        root: the directory holding all experiments (created).
        experiment_id: one path component, as made by :func:`generate_experiment_id`.

    Returns:
        ``{'root', 'checkpoints', 'logs', 'visualizations'}`` mapped to the created directories.

    Raises:
        ValueError: when ``experiment_id`` is not a single safe path component, or ``root`` is a file.
    """
    if not isinstance(experiment_id, str) or not experiment_id or experiment_id in (".", "..") \
            or safe_name(experiment_id) != experiment_id:
        raise ValueError(f"experiment_id {experiment_id!r} must be one file-name-safe component "
                         "(letters, digits, '._-'); make one with generate_experiment_id(name)")
    base = Path(root).expanduser()
    if base.exists() and not base.is_dir():
        raise ValueError(f"experiments root {str(base)!r} exists and is not a directory")
    paths = rf.RunPaths.of(base / experiment_id)
    dirs = {"root": paths.root, "checkpoints": paths.checkpoints_dir, "logs": paths.logs_dir,
            "visualizations": paths.visualizations_dir}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def run_root_of(directory: str | os.PathLike[str], subdir: str) -> Path:
    """The run root for a directory given as either the run itself or its ``subdir`` (``logs``...).

    ``MetricsLogger(dirs['logs'])`` and ``MetricsLogger(dirs['root'])`` both write ``<root>/logs/``.
    """
    d = Path(directory).expanduser()
    return d.parent if d.name == subdir else d
