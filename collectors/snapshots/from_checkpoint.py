"""Snapshots whose ``model/`` is a copy of a Trainer ``checkpoint-*`` (the Smart Monitor, "Snapshot now").

A training watched from outside has no live weights to save, so an anomaly snapshot copies the checkpoint
at (or just before) the event, hard-linking its files (instant, no extra disk). Which directories hold a
run's checkpoints and which checkpoint to copy are decided here; the ``checkpoint-*`` layout itself is
:mod:`collectors.runformat`'s.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from collectors import runformat as rf
from collectors.snapshots.store import KIND_MANUAL, SnapshotResult, build_metadata, create_snapshot, format_ts


def pick_checkpoint(checkpoints: Sequence[tuple[int, Path]], step: int | None = None) -> tuple[int, Path] | None:
    """Pure: the latest checkpoint, or with ``step`` the newest at or before it (the weights just before
    the event), else the earliest after it."""
    if not checkpoints:
        return None
    if step is None:
        return checkpoints[-1]
    before = [c for c in checkpoints if c[0] <= step]
    return before[-1] if before else checkpoints[0]


def copy_tree_linked(src: Path, dst: Path) -> None:
    """Copy ``src``'s contents into the existing ``dst``, hard-linking files where possible (instant, no
    extra disk; checkpoint files are never rewritten in place), copying otherwise."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        target_dir = dst / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            s, d = Path(root) / f, target_dir / f
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)


def checkpoint_dirs_for(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Where a run's ``checkpoint-*`` live: the Trainer output dir recorded in the status, and the dir itself."""
    root = Path(run_dir)
    out = []
    status, _ = rf.read_json(rf.RunPaths.of(root).status)
    cfg = status.get("config") if isinstance(status, dict) else None
    od = cfg.get("output_dir") if isinstance(cfg, dict) else None
    if isinstance(od, str) and od:
        p = Path(od)
        out.append(p if p.is_absolute() else (Path.cwd() / p))
    out.append(root)
    return out


def latest_checkpoint(run_dir: str | os.PathLike[str], step: int | None = None) -> tuple[int, Path] | None:
    found: list[tuple[int, Path]] = []
    for d in checkpoint_dirs_for(run_dir):
        found.extend(rf.find_checkpoints(d))
    return pick_checkpoint(sorted(found), step)


def snapshot_from_checkpoint(run_dir: str | os.PathLike[str], *, kind: str = KIND_MANUAL, reason: str | None = None,
                             step: int | None = None, metadata: Mapping[str, Any] | None = None,
                             min_free_gb: float = 0.0, now: float | None = None, source_dirs: Sequence[Path] | None = None,
                             pinned: bool = False) -> SnapshotResult:
    """A snapshot whose ``model/`` is a copy of the run's latest ``checkpoint-*`` (or the newest at/before
    ``step``); skipped, with the reason, when there is no checkpoint yet."""
    now = time.time() if now is None else now
    if source_dirs is None:
        found = latest_checkpoint(run_dir, step)
    else:
        cps: list[tuple[int, Path]] = []
        for d in source_dirs:
            cps.extend(rf.find_checkpoints(d))
        found = pick_checkpoint(sorted(cps), step)
    if found is None:
        where = ", ".join(str(d) for d in (source_dirs or checkpoint_dirs_for(run_dir)))
        return SnapshotResult(False, skipped=True, error=f"no checkpoint-* directory to copy yet (looked in {where})")
    cp_step, cp_path = found
    status, _ = rf.read_json(rf.RunPaths.of(run_dir).status)
    status = dict(status) if isinstance(status, dict) else {}
    status["snapshot_source"] = {"kind": "checkpoint", "path": str(cp_path), "checkpoint_step": cp_step}
    if metadata is None:
        latest = status.get("latest") if isinstance(status.get("latest"), dict) else {}
        metadata = build_metadata(timestamp=format_ts(now), reason=reason or kind, step=status.get("step", cp_step),
                                  loss=status.get("train_loss"), accuracy=latest.get("eval_accuracy"),
                                  triggers=[reason or kind], loss_history=[], best_loss=None, best_loss_step=None)
    return create_snapshot(run_dir, kind=kind, reason=reason, metadata=metadata, status=status,
                           write_model=lambda d: copy_tree_linked(cp_path, d), pinned=pinned, min_free_gb=min_free_gb,
                           now=now)
