"""Snapshot now: a manual snapshot of a run, taken by whoever can (used by the dashboard's button).

A live training whose collector answers requests, or a standalone Smart Monitor, gets a request through
:mod:`collectors.control` and saves at its next step/poll; when neither runs (or answers in time) the
request is taken back and the latest ``checkpoint-*`` is copied here.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from collectors import control
from collectors import runformat as rf
from collectors.snapshots.from_checkpoint import snapshot_from_checkpoint

SNAPSHOT_NOW_WAIT_S = 60.0
"""How long "Snapshot now" waits for a live training (or the standalone monitor) to answer its request."""


def snapshot_now(run_dir: str | os.PathLike[str], *, wait_s: float = SNAPSHOT_NOW_WAIT_S,
                 progress: Callable[[str], Any] = lambda _msg: None, poll_s: float = 0.25) -> dict[str, Any]:
    """Take a manual snapshot of a run, by whoever can: used by the dashboard's "Snapshot now".

    A live training whose collector runs the anomaly plugin, or a standalone Smart Monitor, gets a
    request in ``control/`` and answers at its next step/poll (live weights / checkpoint copy). When
    neither is running — or neither answers within ``wait_s`` — the request is taken back and the
    latest ``checkpoint-*`` is copied here. Returns the result document (``ok``, ``name``, ``error``,
    ``handled_by``); never raises for an expected failure (no checkpoint, disk full).
    """
    root = Path(run_dir)
    status, _ = rf.read_json(rf.RunPaths.of(root).status)
    collector = control.live_collector_takes_requests(status, time.time())
    watcher = control.monitor_running(root)
    if collector or watcher is not None:
        req = control.request_snapshot(root)
        who = "the training" if collector else f"the Smart Monitor (pid {watcher})"
        progress(f"Requested; waiting for {who} to save at its next step...")
        res = control.wait_for_result(root, req["id"], wait_s, poll_s)
        if res is not None:
            return res
        if control.claim_request(root) is None:  # taken by the other side just now: give it a little longer
            progress(f"{who} took the request; waiting for it to finish...")
            res = control.wait_for_result(root, req["id"], wait_s, poll_s)
            if res is not None:
                return res
            return {"id": req["id"], "ok": False, "name": "", "skipped": False, "handled_by": "dashboard",
                    "error": f"{who} took the request but gave no result within {2 * wait_s:.0f} s"}
        progress(f"{who} did not answer within {wait_s:.0f} s; copying the latest checkpoint instead...")
    else:
        req = {"id": secrets.token_hex(8)}
        progress("No live training or Smart Monitor: copying the latest checkpoint...")
    res = snapshot_from_checkpoint(root)
    return control.write_result(root, req, res, handled_by="dashboard")
