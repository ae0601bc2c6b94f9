"""The standalone Smart Monitor: watches a training you cannot modify and snapshots it on anomalies.

``python -m collectors.anomaly.smart_monitor --base-dir DIR`` follows either a Trainboard run directory
(``logs/metrics.jsonl``) or a plain Hugging Face output directory (``trainer_state.json``'s
``log_history`` and ``checkpoint-*``), runs the same rules as the in-training collector, appends alerts
to ``logs/alerts.jsonl``, saves ``snapshots/anomaly_*`` as copies of the checkpoint at (or just before)
the event, honours "Snapshot now" requests and live thresholds from ``control/``, and logs to
``logs/smart_monitor_YYYYMMDD.log`` (``ALERT`` lines and periodic ``Monitoring: Step N`` lines).

One instance per directory (a lock in ``control/``); SIGTERM/SIGINT stop it cleanly; its state is saved
after every poll so a restarted monitor continues where it stopped. ``--once`` replays what exists and exits.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from collectors import control
from collectors import runformat as rf
from collectors import snapshots as snap
from collectors.alerts import SOURCE_SMART_MONITOR
from collectors.anomaly.actions import AlertActions
from collectors.anomaly.rules import AnomalyConfig, RuleEngine, SmartConfig, SnapshotConfig, observation_from_record
from collectors.control import AlreadyRunning, DirLock
from collectors.notify import notifier_from_settings
from collectors.runtime import Guard

PROG = "python -m collectors.anomaly.smart_monitor"
DEFAULT_POLL_INTERVAL = 10.0
SOURCE_NAME = SOURCE_SMART_MONITOR
STATE_VERSION = 1
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
EXIT_OK, EXIT_LOCKED, EXIT_NOTHING = 0, 3, 4

log = logging.getLogger("trainboard.smart_monitor")


# --------------------------------------------------------------------------- sources

@dataclass
class Cursor:
    """Where the monitor is in its source (saved in the state file)."""

    kind: str = ""
    dev: int = -1
    inode: int = -1
    offset: int = 0
    after_train: int = -1
    after_eval: int = -1


class Source:
    """New metrics records from a Trainboard run dir or an HF output dir, whichever ``base`` is.

    Attributes:
        problems: why the HF output dir's ``trainer_state.json`` files could not be read at the last poll
            (empty when they were, or when there are none).
        bad_entries: ``log_history`` entries without an integer step, counted at the last poll.
    """

    def __init__(self, base: Path, cursor: Cursor) -> None:
        self.base = base
        self.cursor = cursor
        self.tailer: rf.JsonlTailer | None = None
        self.state_path: Path | None = None
        self.problems: list[str] = []
        self.bad_entries = 0

    def describe(self) -> str:
        if self.cursor.kind == "hf" and self.state_path is not None:
            return f"Hugging Face output ({self.state_path})"
        return {"trainboard": "Trainboard run (logs/metrics.jsonl)", "hf": "Hugging Face output (trainer_state.json)"}.get(
            self.cursor.kind, "nothing yet (waiting for logs/metrics.jsonl or trainer_state.json)")

    def nothing_found(self) -> str:
        """Why nothing could be replayed, in words: unreadable files named with their problem, or what is absent."""
        if self.problems:
            return "; ".join(self.problems)
        return (f"no {rf.METRICS_LOG} and no {rf.HF_TRAINER_STATE} (looked in {self.base} and its newest "
                f"{rf.HF_CHECKPOINT_PREFIX}* directories)")

    def poll(self) -> list[dict[str, Any]]:
        if rf.is_run_dir(self.base):
            return self._poll_trainboard()
        doc, path, self.problems = rf.newest_trainer_state(self.base)
        if doc is None:
            return []
        self.state_path = path
        return self._poll_hf(doc)

    def _poll_trainboard(self) -> list[dict[str, Any]]:
        c = self.cursor
        if self.tailer is None:
            self.tailer = rf.JsonlTailer(rf.RunPaths.of(self.base).metrics)
            if c.kind == "trainboard":  # resume where a previous run of the monitor stopped
                self.tailer.state = rf.TailState(dev=c.dev, inode=c.inode, size=c.offset, offset=c.offset)
        c.kind = "trainboard"
        records, _reset = self.tailer.poll()
        st = self.tailer.state
        c.dev, c.inode, c.offset = st.dev, st.inode, st.offset
        return records

    def _poll_hf(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        c = self.cursor
        c.kind = "hf"
        recs, self.bad_entries = rf.records_from_log_history(doc.get("log_history") or [], after_train=c.after_train,
                                                             after_eval=c.after_eval)
        out = []
        for r in recs:
            if r["kind"] == rf.RecordKind.EVAL.value:
                c.after_eval = max(c.after_eval, r["step"])
            else:
                c.after_train = max(c.after_train, r["step"])
            if r["kind"] != rf.RecordKind.SUMMARY.value:  # the end-of-training summary holds nothing to judge
                out.append(r)
        return out


# --------------------------------------------------------------------------- logging

class DailyFileHandler(logging.Handler):
    """Appends to ``logs/smart_monitor_<YYYYMMDD>.log``, switching files when the local date changes."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.paths = rf.RunPaths.of(base)
        self._date = ""
        self._fh: Any = None
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            date = time.strftime("%Y%m%d", time.localtime(record.created))
            if date != self._date or self._fh is None:
                if self._fh is not None:
                    self._fh.close()
                path = self.paths.smart_monitor_log(date)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(path, "a", encoding="utf-8", buffering=1)
                self._date = date
            self._fh.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never stop the monitor
            self.handleError(record)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


# --------------------------------------------------------------------------- the monitor

class SmartMonitor:
    """Polls a directory, applies the rules, writes alerts and checkpoint-copy snapshots.

    Args:
        base_dir: the Trainboard run dir or HF output dir to watch (snapshots/logs/control go there).
        config: the thresholds (``control/thresholds.json`` overrides them live).
        poll_interval: seconds between polls.
    """

    def __init__(self, base_dir: Path, config: AnomalyConfig, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 notifier: Any = None) -> None:
        self.base = base_dir
        self.paths = rf.RunPaths.of(base_dir)
        self.base_config = config
        self.poll_interval = poll_interval
        self.guard = Guard(log)
        self.engine = RuleEngine(config)
        self.notifier = notifier
        """Where incidents are sent (``--notify``), or None; muted rules and acknowledged incidents are not."""
        self.actions = AlertActions(base_dir, self.engine, source=SOURCE_NAME, guard=self.guard, notifier=notifier)
        self.cursor = Cursor()
        self.alerts = 0
        self.records = 0
        self.stop_event = threading.Event()
        self._thresholds: control.ThresholdsFile[AnomalyConfig] | None = None
        self._reported_problems: tuple[str, ...] = ()
        self._reported_bad = 0
        self._load_state()
        self.source = Source(base_dir, self.cursor)

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        doc, _ = rf.read_json(self.paths.smart_monitor_state)
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            return
        try:
            self.engine.load_state_dict(doc.get("engine") or {})
            self.cursor = Cursor(**(doc.get("cursor") or {}))
            self.actions.last_anomaly_save_step = doc.get("last_anomaly_save_step")
            self.actions.incidents.load_state_dict(doc.get("incidents") or {})
            self.alerts = int(doc.get("alerts") or 0)
            self.records = int(doc.get("records") or 0)
        except (TypeError, ValueError) as exc:
            log.warning("ignoring unreadable state %s (%s): starting from the beginning", self.paths.smart_monitor_state, exc)
            self.engine = RuleEngine(self.base_config)
            self.actions.engine = self.engine
            self.cursor = Cursor()
            return
        log.info("Resuming from saved state: %d records seen, best loss %s", self.records, self.engine.best_loss)

    def save_state(self) -> None:
        doc = {"version": STATE_VERSION, "engine": self.engine.state_dict(), "cursor": vars(self.cursor),
               "last_anomaly_save_step": self.actions.last_anomaly_save_step, "alerts": self.alerts,
               "incidents": self.actions.incidents.state_dict(),
               "records": self.records, "saved_at": time.time(), "pid": os.getpid()}
        self.guard.run("saving the monitor state", rf.write_json_atomic, self.paths.smart_monitor_state, doc)

    # ------------------------------------------------------------------ one poll
    def poll(self) -> int:
        """Process every new record, then control files; returns how many records were processed."""
        self._reload_thresholds()
        self.actions.incidents.poll_control()
        n = 0
        while True:
            batch = self.source.poll()
            if not batch:
                break
            for record in batch:
                self.process(record)
            n += len(batch)
            if self.source.cursor.kind == "hf":
                break  # one trainer_state.json per poll: it was read whole
        self._report_source_problems()
        self._honour_request()
        if n:
            self.save_state()
        return n

    def _report_source_problems(self) -> None:
        """Say (once per distinct problem) why a trainer_state.json that exists could not be read, and how
        many log_history entries had no step: a silent monitor would look like a healthy training."""
        problems = tuple(self.source.problems)
        if problems and problems != self._reported_problems:
            for problem in problems:
                log.warning("%s", problem)
        self._reported_problems = problems
        if self.source.bad_entries and self.source.bad_entries != self._reported_bad:
            log.warning("%d log_history entries without an integer step were skipped (%s)", self.source.bad_entries,
                        self.source.describe())
        self._reported_bad = self.source.bad_entries

    def process(self, record: dict[str, Any]) -> None:
        self.records += 1
        obs = observation_from_record(record)
        if obs is None:
            return
        if obs.loss is not None and record.get("kind") == rf.RecordKind.TRAIN.value:
            self.actions.observed(obs.step)
        alerts = self.engine.observe(obs)
        actionable = self.actions.record_step(obs.step, alerts, list(self.engine.held))  # clean steps too
        if not alerts:
            return
        self.alerts += len(alerts)
        for a in alerts:
            log.warning("ALERT [%s] %s at step %d: %s", a.severity.upper(), a.reason, a.step, a.message)
        status, _ = rf.read_json(self.paths.status)
        for res in self.actions.snapshot_for(actionable, obs.step, status if isinstance(status, dict) else {},
                                             lambda plan, step: None):
            if res.ok:
                log.info("Snapshot saved: %s", res.path)
            else:
                log.warning("Snapshot %s: %s", "skipped" if res.skipped else "failed", res.error)

    def heartbeat(self) -> None:
        e = self.engine
        best = f"{e.best_loss:.4f} @ step {e.best_loss_step}" if e.best_loss is not None else "-"
        loss = f"{e.latest_loss:.4f}" if e.latest_loss is not None else "-"
        log.info("Monitoring: Step %d | loss %s | best %s | records %d | alerts %d | snapshots %d | source: %s",
                 e.step, loss, best, self.records, self.alerts, len(self.actions.snapshots_saved), self.source.describe())

    def _reload_thresholds(self) -> None:
        if self._thresholds is None:
            self._thresholds = control.ThresholdsFile(self.paths.thresholds, self.base_config)
        change = self._thresholds.poll()
        if change.kind == "invalid":
            log.warning("%s (keeping the previous thresholds)", change.problem)
        elif change.kind == "removed" and self.engine.config != self.base_config:
            self.engine.set_config(self.base_config)
            log.info("control/thresholds.json removed: back to the command-line thresholds")
        elif change.kind == "loaded" and change.config is not None:
            cfg = change.config
            self.engine.set_config(cfg)
            log.info("Thresholds reloaded from %s: loss spike %.3g, accuracy drop %.3g, min steps between saves %d",
                     self.paths.thresholds, cfg.smart.loss_spike_threshold, cfg.smart.accuracy_drop_threshold,
                     cfg.snapshots.min_steps_between_saves)

    def _honour_request(self) -> None:
        if not self.paths.snapshot_request.exists():
            return
        status, _ = rf.read_json(self.paths.status)
        if control.live_collector_takes_requests(status, time.time()):
            return  # the training's own collector saves the live weights at its next step
        req = control.claim_request(self.base)
        if req is None:
            return
        if req.get("id") is None:
            res = snap.SnapshotResult(False, error=f"malformed snapshot request: {req.get('problem')}")
        else:
            res = self.actions.save("manual", ["manual"], self.engine.step, {}, None, kind=snap.KIND_MANUAL)
        control.write_result(self.base, req, res, handled_by=SOURCE_NAME)
        log.info("Snapshot now: %s", f"saved {res.name}" if res.ok else res.error)

    # ------------------------------------------------------------------ loop
    def run(self, *, once: bool = False) -> int:
        self.actions.publish_policy()
        removed = snap.clean_stale_temps(self.base)
        if removed:
            log.info("Removed %d incomplete snapshot(s) left by a killed process: %s", len(removed), ", ".join(removed))
        log.info("Smart Monitor watching %s (poll every %gs, loss spike %.3g, accuracy drop %.3g, loss window %d, "
                 "min %d steps between saves)", self.base, self.poll_interval, self.base_config.smart.loss_spike_threshold,
                 self.base_config.smart.accuracy_drop_threshold, self.base_config.smart.loss_window,
                 self.base_config.snapshots.min_steps_between_saves)
        if once:
            self.poll()
            self.heartbeat()
            self.save_state()
            if self.source.cursor.kind == "":
                log.error("nothing to replay in %s: %s", self.base, self.source.nothing_found())
                return EXIT_NOTHING
            return EXIT_OK
        while not self.stop_event.is_set():
            self.guard.run("polling", self.poll)
            self.heartbeat()
            self.stop_event.wait(self.poll_interval)
        self.save_state()
        return EXIT_OK


# --------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Watch a training (Trainboard run dir or Hugging Face output "
                                "dir) and save snapshots when loss spikes, accuracy drops, a new best model appears "
                                "or training diverges.")
    p.add_argument("--base-dir", required=True, help="training directory to watch (snapshots/ and logs/ are written there)")
    p.add_argument("--loss-spike-threshold", type=float, default=SmartConfig.loss_spike_threshold,
                   help="fraction above the recent average that is a spike (default %(default)s = 30%%)")
    p.add_argument("--accuracy-drop-threshold", type=float, default=SmartConfig.accuracy_drop_threshold,
                   help="accuracy percentage points below the recent average that is a drop (default %(default)s)")
    p.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL,
                   help="seconds between checks (default %(default)s)")
    p.add_argument("--min-steps-between-saves", type=int, default=SnapshotConfig.min_steps_between_saves,
                   help="minimum steps between two anomaly snapshots; best-model snapshots are never blocked "
                        "(default %(default)s)")
    p.add_argument("--loss-window", type=int, default=SmartConfig.loss_window,
                   help="losses kept for the spike and divergence rules (default %(default)s)")
    p.add_argument("--keep-best", type=int, default=SnapshotConfig.keep_best,
                   help="best-model snapshots kept, the lowest by loss; 0 keeps all (default %(default)s)")
    p.add_argument("--keep-last", type=int, default=SnapshotConfig.keep_last,
                   help="anomaly snapshots kept, newest first; 0 keeps all (default %(default)s)")
    p.add_argument("--max-total-gb", type=float, default=None,
                   help="disk budget of all snapshots together; 0: none (default: min(50 GB, 25%% of the disk "
                        "free at start))")
    p.add_argument("--min-free-gb", type=float, default=SnapshotConfig.min_free_gb,
                   help="a snapshot is skipped when writing it would leave less than max(this, 2 x its size) "
                        "free (default %(default)s)")
    p.add_argument("--once", action="store_true", help="replay the history that exists now, then exit")
    p.add_argument("--notify", action="append", default=[], metavar="URL",
                   help="send incidents to this apprise URL (slack://..., discord://..., json://host/path; repeat "
                        "for several; TRAINBOARD_NOTIFY adds more)")
    p.add_argument("--notify-min-severity", default="high", choices=("critical", "high", "medium", "low"),
                   help="lowest severity that is sent (default %(default)s)")
    p.add_argument("--public-url", default=None, help="the dashboard's address as people reach it; messages link "
                   "to the run's Alerts page")
    args = p.parse_args(argv)
    base = Path(args.base_dir).expanduser()
    if not base.exists():
        p.error(f"--base-dir {str(base)!r} does not exist")
    if not base.is_dir():
        p.error(f"--base-dir {str(base)!r} is not a directory")
    if not (args.poll_interval > 0) or args.poll_interval > 86400:
        p.error(f"--poll-interval must be between 0 and 86400 seconds; got {args.poll_interval}")
    try:
        args.config = config_from_args(args)
    except ValueError as exc:
        flag = {"smart.loss_spike_threshold": "--loss-spike-threshold", "smart.accuracy_drop_threshold": "--accuracy-drop-threshold",
                "smart.loss_window": "--loss-window", "snapshots.min_steps_between_saves": "--min-steps-between-saves",
                "snapshots.keep_best": "--keep-best", "snapshots.keep_last": "--keep-last",
                "snapshots.max_total_gb": "--max-total-gb", "snapshots.min_free_gb": "--min-free-gb"}
        msg = str(exc)
        for key, name in flag.items():
            msg = msg.replace(key, name)
        p.error(msg)
    args.base = base
    return args


def config_from_args(args: argparse.Namespace) -> AnomalyConfig:
    """The engine configuration for the command-line flags (validated; ValueError names the bad value)."""
    return AnomalyConfig.from_dict({
        "smart": {"loss_spike_threshold": args.loss_spike_threshold, "accuracy_drop_threshold": args.accuracy_drop_threshold,
                  "loss_window": args.loss_window},
        "snapshots": {"min_steps_between_saves": args.min_steps_between_saves,
                      "keep_best": getattr(args, "keep_best", SnapshotConfig.keep_best),
                      "keep_last": getattr(args, "keep_last", SnapshotConfig.keep_last),
                      "max_total_gb": getattr(args, "max_total_gb", None),
                      "min_free_gb": getattr(args, "min_free_gb", SnapshotConfig.min_free_gb)},
    })


def _configure_logging(base: Path) -> list[logging.Handler]:
    handlers: list[logging.Handler] = [DailyFileHandler(base), logging.StreamHandler(sys.stderr)]
    handlers[1].setFormatter(logging.Formatter(LOG_FORMAT))
    for h in handlers:
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lock = DirLock(args.base)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except OSError as exc:
        print(f"{PROG}: error: cannot create the lock in {lock.path.parent}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_LOCKED
    handlers = _configure_logging(args.base)
    try:
        notifier = notifier_from_settings(args.notify or None, min_severity=args.notify_min_severity,
                                          public_url=args.public_url, run_name=args.base.name)
    except ValueError as exc:
        print(f"{PROG}: error: --notify: {exc}", file=sys.stderr)
        lock.release()
        return 2
    monitor = SmartMonitor(args.base, args.config, args.poll_interval, notifier=notifier)

    def stop(signum: int, _frame: Any) -> None:
        log.info("Stopping (%s)", signal.Signals(signum).name)
        monitor.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = monitor.run(once=args.once)
        log.info("Smart Monitor stopped: %d records, %d alerts, %d snapshots", monitor.records, monitor.alerts,
                 len(monitor.actions.snapshots_saved))
        return code
    finally:
        monitor.actions.close()
        if notifier is not None:
            notifier.close()
        lock.release()
        for h in handlers:
            log.removeHandler(h)
            h.close()


def iter_log_lines(base: str | os.PathLike[str]) -> Iterator[str]:
    """Every line of the monitor's daily logs, oldest file first (for tests and the dashboard)."""
    logs = rf.RunPaths.of(base).logs_dir
    for path in sorted(logs.glob("smart_monitor_*.log")):
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from (line.rstrip("\n") for line in fh)


if __name__ == "__main__":
    sys.exit(main())
