"""Snapshots of a model at interesting moments, one package like :mod:`collectors.anomaly`.

* :mod:`~collectors.snapshots.store`: names, metadata, create, list, pin, delete, prune (the layout of
  ``<run>/snapshots/``);
* :mod:`~collectors.snapshots.from_checkpoint`: snapshots copied from a Trainer ``checkpoint-*``;
* :mod:`~collectors.snapshots.now`: "Snapshot now", taken by whoever can;
* :mod:`~collectors.snapshots.last_good`: the last good state from before a fault (checkpoint link,
  rolling CPU copy of the weights).
* :mod:`~collectors.snapshots.repeat_save`: later copies of one model's weights written as its first
  ``save_pretrained`` wrote them (byte-identical, without its Python).

The request/claim/result files behind "Snapshot now" are :mod:`collectors.control`'s. The names below
are re-exported so ``from collectors.snapshots import list_snapshots`` (and ``snapshots as snap``) work.
"""
from __future__ import annotations

from collectors.snapshots.from_checkpoint import (checkpoint_dirs_for, copy_tree_linked, latest_checkpoint,
                                                  pick_checkpoint, snapshot_from_checkpoint)
from collectors.snapshots.now import SNAPSHOT_NOW_WAIT_S, snapshot_now
from collectors.snapshots.store import (BUDGET_CAP_GB, BUDGET_FRACTION_OF_FREE, KEEP_BEST, LAST_GOOD_DIR, META_DATA_POSITION,
                                        META_LAST_GOOD, META_LAST_GOOD_MISSING, META_ONSET_STEP, META_OPTIMIZER_STATE,
                                        META_RNG_STATE, META_ROLE, META_SUSPECT_STEPS, META_WEIGHTS_STEP,
                                        RECOVERY_FIELDS, RETENTION_FILE, RetentionPlan, RetentionPolicy, budget_problem,
                                        floor_problem, plan_retention, read_retention, resolve_budget, write_retention)
from collectors.snapshots.store import (BYTES_PER_GB, KIND_ANOMALY, KIND_MANUAL, MAX_NAME_CHARS, MAX_REASON_CHARS,
                                        METADATA_FIELDS, STALE_TEMP_SECONDS, TMP_DELETE, TMP_SNAPSHOT, TS_FORMAT,
                                        SnapshotError, SnapshotInfo, SnapshotResult, build_metadata, clean_stale_temps,
                                        create_snapshot, delete_snapshot, dir_size, format_ts, free_gb, list_snapshots,
                                        order_key, parse_snapshot_name, plan_prune, prune_snapshots, read_snapshot,
                                        resolve_snapshot, sanitize_reason, set_pinned, snapshot_name,
                                        validate_snapshot_name)

__all__ = ["BUDGET_CAP_GB", "BUDGET_FRACTION_OF_FREE", "KEEP_BEST", "LAST_GOOD_DIR", "META_DATA_POSITION",
           "META_LAST_GOOD", "META_LAST_GOOD_MISSING", "META_ONSET_STEP", "META_OPTIMIZER_STATE", "META_RNG_STATE",
           "META_ROLE", "META_SUSPECT_STEPS", "META_WEIGHTS_STEP", "RECOVERY_FIELDS", "RETENTION_FILE", "RetentionPlan",
           "RetentionPolicy", "budget_problem", "floor_problem", "plan_retention", "read_retention", "resolve_budget",
           "write_retention", "BYTES_PER_GB", "KIND_ANOMALY", "KIND_MANUAL", "MAX_NAME_CHARS", "MAX_REASON_CHARS", "METADATA_FIELDS",
           "SNAPSHOT_NOW_WAIT_S", "STALE_TEMP_SECONDS", "TMP_DELETE", "TMP_SNAPSHOT", "TS_FORMAT", "SnapshotError",
           "SnapshotInfo", "SnapshotResult", "build_metadata", "checkpoint_dirs_for", "clean_stale_temps",
           "copy_tree_linked", "create_snapshot", "delete_snapshot", "dir_size", "format_ts", "free_gb",
           "latest_checkpoint", "list_snapshots", "order_key", "parse_snapshot_name", "pick_checkpoint", "plan_prune",
           "prune_snapshots", "read_snapshot", "resolve_snapshot", "sanitize_reason", "set_pinned",
           "snapshot_from_checkpoint", "snapshot_name", "snapshot_now", "validate_snapshot_name"]
