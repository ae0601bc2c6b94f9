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
from collectors.snapshots.store import (KIND_MANUAL, META_LAST_GOOD_MISSING, META_WEIGHTS_STEP, SnapshotResult,
                                        build_metadata, create_snapshot, format_ts)


def pick_checkpoint(checkpoints: Sequence[tuple[int, Path]], step: int | None = None, *,
                    strict: bool = False) -> tuple[int, Path] | None:
    """Pure: the latest checkpoint, or with ``step`` the newest at or before it (the weights just before
    the event), else (not ``strict``) the earliest after it. An event's snapshot is ``strict``: later
    weights are never presented as the event's."""
    if not checkpoints:
        return None
    if step is None:
        return checkpoints[-1]
    before = [c for c in checkpoints if c[0] <= step]
    if before:
        return before[-1]
    return None if strict else checkpoints[0]


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
                             pinned: bool = False, strict: bool = False, write_extra: Any = None,
                             size_estimate: int | None = None) -> SnapshotResult:
    """A snapshot whose ``model/`` is a copy of the run's latest ``checkpoint-*`` (or the newest at/before
    ``step``); ``weights_step`` in its metadata says which. Skipped, with the reason, when there is no
    checkpoint yet; with ``strict`` (an event's snapshot) and no checkpoint at or before ``step``, it
    holds metadata only and says so (``last_good_missing``), never later weights."""
    now = time.time() if now is None else now
    dirs = list(source_dirs) if source_dirs is not None else checkpoint_dirs_for(run_dir)
    cps: list[tuple[int, Path]] = []
    for d in dirs:
        cps.extend(rf.find_checkpoints(d))
    found = pick_checkpoint(sorted(cps), step, strict=strict)
    where = ", ".join(str(d) for d in dirs)
    if found is None and not (strict and metadata is not None):
        return SnapshotResult(False, skipped=True, error=f"no checkpoint-* directory to copy yet (looked in {where})")
    if found is None:
        meta = dict(metadata or {})
        meta[META_WEIGHTS_STEP] = None
        if not meta.get(META_LAST_GOOD_MISSING):
            meta[META_LAST_GOOD_MISSING] = (f"no checkpoint-* at or before step {step} (looked in {where}): "
                                            "this snapshot holds metadata only")
        status, _ = rf.read_json(rf.RunPaths.of(run_dir).status)
        status = dict(status) if isinstance(status, dict) else {}
        status["snapshot_source"] = {"kind": "none", "reason": meta[META_LAST_GOOD_MISSING]}
        return create_snapshot(run_dir, kind=kind, reason=reason, metadata=meta, status=status, write_model=None,
                               pinned=pinned, min_free_gb=min_free_gb, now=now, write_extra=write_extra,
                               size_estimate=size_estimate)
    cp_step, cp_path = found
    status, _ = rf.read_json(rf.RunPaths.of(run_dir).status)
    status = dict(status) if isinstance(status, dict) else {}
    status["snapshot_source"] = {"kind": "checkpoint", "path": str(cp_path), "checkpoint_step": cp_step}
    if metadata is None:
        latest = status.get("latest") if isinstance(status.get("latest"), dict) else {}
        metadata = build_metadata(timestamp=format_ts(now), reason=reason or kind, step=status.get("step", cp_step),
                                  loss=status.get("train_loss"), accuracy=latest.get("eval_accuracy"),
                                  triggers=[reason or kind], loss_history=[], best_loss=None, best_loss_step=None)
    metadata = dict(metadata)
    metadata[META_WEIGHTS_STEP] = cp_step
    return create_snapshot(run_dir, kind=kind, reason=reason, metadata=metadata, status=status,
                           write_model=lambda d: copy_tree_linked(cp_path, d), pinned=pinned, min_free_gb=min_free_gb,
                           now=now, write_extra=write_extra, size_estimate=size_estimate)
