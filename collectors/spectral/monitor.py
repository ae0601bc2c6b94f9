"""``python -m collectors.spectral.monitor``: watch per-layer SVD metrics of a training from a terminal.

Sources: a training's text log holding the collector's ``[trainboard-svd]`` lines (or any format through
``--pattern``), a Trainboard run directory (``logs/spectral.jsonl``) or a W&B run. Each measurement goes
through :class:`collectors.spectral.tracker.SVDMonitor`; the CLI prints a block per step and, on
Ctrl+C/SIGTERM (or the end without ``--follow``), the summary. ``python -m collectors.spectral`` runs it too.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TextIO

from collectors import runformat as rf
from collectors.spectral.decisions import (DEFAULT_ANGLE_STABLE, DEFAULT_MINOR_SAFE, DEFAULT_PRINCIPAL_DANGER,
                                           DEFAULT_RECON_SAFE, DEFAULT_WARN_MARGIN, SVDMetrics, SwitchThresholds)
from collectors.spectral.text import (OPTIONAL_PATTERN_GROUPS, REQUIRED_PATTERN_GROUPS, compile_pattern, format_block,
                                      parse_line)
from collectors.spectral.tracker import SVDMonitor

PROG = "python -m collectors.spectral.monitor"
DEFAULT_REFRESH_SECONDS = 10.0
EXIT_USAGE = 2

DEFAULT_FILE_REFRESH_SECONDS = 1.0
WANDB_KEY = re.compile(r"^(?:svd/)?(?P<layer>.+?)[/.](?P<metric>principal_alignment|minor_alignment|subspace_angle"
                       r"|reconstruction_error|mode|r)$")
"""W&B history keys read by ``--wandb-run``: ``[svd/]<layer>/<metric>`` (or ``<layer>.<metric>``)."""


class LineTailer:
    """Follows a text log across appends, truncation and replacement; returns complete lines only.

    A carriage return also ends a line, so progress bars (tqdm) that share a line with our output do not
    hide it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.inode: tuple[int, int] | None = None
        self.offset = 0

    def poll(self, max_bytes: int = 16 << 20) -> tuple[list[str], bool]:
        """``(new complete lines, reset)``; ``reset`` is True when the file was truncated or replaced."""
        try:
            st = os.stat(self.path)
        except OSError:
            return [], False
        reset = False
        ident = (st.st_dev, st.st_ino)
        if ident != self.inode or st.st_size < self.offset:
            reset = self.inode is not None
            self.inode, self.offset = ident, 0
        lines: list[str] = []
        try:
            with open(self.path, "rb") as fh:
                while True:
                    fh.seek(self.offset)
                    data = fh.read(max_bytes)
                    end = data.rfind(b"\n")
                    if end < 0:
                        break
                    chunk = data[: end + 1].decode("utf-8", errors="replace")
                    lines += [seg for line in chunk.split("\n") for seg in line.split("\r") if seg.strip()]
                    self.offset += end + 1
                    if len(data) < max_bytes:
                        break
        except OSError:
            return lines, reset
        return lines, reset


def metrics_from_wandb_row(row: Mapping[str, Any]) -> list[SVDMetrics]:
    """The per-layer measurements in one W&B history row (keys ``[svd/]<layer>/<metric>``). Pure.

    Layers with any of the four metrics missing or unreadable in the row are skipped.
    """
    step = row.get("_step", row.get("step"))
    if step is None:
        return []
    per_layer: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        match = WANDB_KEY.match(str(key))
        if match:
            per_layer.setdefault(match["layer"], {})[match["metric"]] = value
    out: list[SVDMetrics] = []
    for layer, values in sorted(per_layer.items()):
        try:
            out.append(SVDMetrics.from_mapping({"step": step, "layer": layer, **values}))
        except ValueError:
            continue
    return out


def iter_log_file(tailer: LineTailer, pattern: re.Pattern[str] | None) -> Iterator[SVDMetrics]:
    lines, _ = tailer.poll()
    for line in lines:
        m = parse_line(line, pattern)
        if m is not None:
            yield m


def iter_run_dir(tailer: Any) -> Iterator[SVDMetrics]:
    records, _ = tailer.poll()
    for rec in records:
        try:
            yield SVDMetrics.from_mapping(rec)
        except ValueError:
            continue


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Watch per-layer SVD metrics of a training (our log lines, a Trainboard run dir or a W&B run) "
                    "and alert before full-rank → low-rank switches. Ctrl+C prints the summary.",
        epilog="--pattern: a Python regex searched in each log line, with the named groups "
               + ", ".join(f"(?P<{g}>...)" for g in REQUIRED_PATTERN_GROUPS) + " and optionally "
               + ", ".join(f"(?P<{g}>...)" for g in OPTIONAL_PATTERN_GROUPS)
               + ". Example: 'step (?P<step>\\d+) (?P<layer>\\S+) pa=(?P<principal_alignment>\\S+) "
                 "ma=(?P<minor_alignment>\\S+) ang=(?P<subspace_angle>\\S+) rec=(?P<reconstruction_error>\\S+)'.")
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--log-file", help="a training's text log (stdout) holding our [trainboard-svd] lines")
    src.add_argument("--run-dir", help="a Trainboard run directory (reads logs/spectral.jsonl)")
    src.add_argument("--wandb-run", help="a W&B run id (needs the wandb package, its login and a network)")
    p.add_argument("--project", help="W&B project of --wandb-run")
    p.add_argument("--entity", help="W&B entity of --wandb-run (default: your default entity)")
    p.add_argument("--follow", action="store_true", help="keep watching the file for new lines (like tail -f)")
    p.add_argument("--refresh-interval", type=float, default=None,
                   help=f"seconds between polls (default {DEFAULT_FILE_REFRESH_SECONDS:g} for files, "
                        f"{DEFAULT_REFRESH_SECONDS:g} for W&B)")
    p.add_argument("--pattern", help="regex with named groups for another log format (see below)")
    p.add_argument("--only-alerts", action="store_true", help="print a step block only when it has alerts")
    th = p.add_argument_group("thresholds")
    th.add_argument("--warn-margin", type=float, default=DEFAULT_WARN_MARGIN, help="default %(default)s")
    th.add_argument("--principal-danger", type=float, default=DEFAULT_PRINCIPAL_DANGER, help="default %(default)s")
    th.add_argument("--minor-safe", type=float, default=DEFAULT_MINOR_SAFE, help="default %(default)s")
    th.add_argument("--angle-stable", type=float, default=DEFAULT_ANGLE_STABLE, help="radians, default %(default)s")
    th.add_argument("--recon-safe", type=float, default=DEFAULT_RECON_SAFE, help="default %(default)s")
    return p


@dataclass
class CliOptions:
    """Validated command-line options."""

    source: str
    target: str
    thresholds: SwitchThresholds
    follow: bool
    refresh: float
    pattern: re.Pattern[str] | None
    project: str | None
    entity: str | None
    only_alerts: bool


def parse_cli(argv: Sequence[str] | None) -> CliOptions:
    """Parse and validate; every user mistake ends in ``p.error`` (exit 2, a message, no traceback)."""
    p = build_parser()
    a = p.parse_args(argv)
    given = [(n, v) for n, v in (("log-file", a.log_file), ("run-dir", a.run_dir), ("wandb-run", a.wandb_run)) if v]
    if len(given) != 1:
        p.error("give exactly one source: --log-file F, --run-dir D or --wandb-run ID"
                + (f" (got {', '.join('--' + n for n, _ in given)})" if given else ""))
    source, target = given[0]
    if source == "wandb-run" and not a.project:
        p.error("--wandb-run needs --project P (and optionally --entity E)")
    if source != "wandb-run" and (a.project or a.entity):
        p.error("--project/--entity only go with --wandb-run")
    if a.pattern and source != "log-file":
        p.error("--pattern only applies to --log-file")
    refresh = a.refresh_interval
    if refresh is None:
        refresh = DEFAULT_REFRESH_SECONDS if source == "wandb-run" else DEFAULT_FILE_REFRESH_SECONDS
    if not math.isfinite(refresh) or refresh <= 0:
        p.error(f"--refresh-interval must be a positive number of seconds; got {a.refresh_interval}")
    try:
        thresholds = SwitchThresholds(warn_margin=a.warn_margin, principal_danger=a.principal_danger,
                                      minor_safe=a.minor_safe, angle_stable=a.angle_stable, recon_safe=a.recon_safe)
    except ValueError as exc:
        p.error(str(exc).replace("SwitchThresholds.", "--").replace("_", "-"))
    pattern = None
    if a.pattern:
        try:
            pattern = compile_pattern(a.pattern)
        except ValueError as exc:
            p.error(str(exc))
    path = Path(target)
    if source == "log-file" and not a.follow and not path.is_file():
        p.error(f"--log-file {target}: no such file (add --follow to wait for it)")
    if source == "log-file" and path.is_dir():
        p.error(f"--log-file {target} is a directory; did you mean --run-dir?")
    if source == "run-dir" and not path.is_dir():
        p.error(f"--run-dir {target}: no such directory")
    return CliOptions(source, target, thresholds, bool(a.follow) or source == "wandb-run", refresh, pattern,
                      a.project, a.entity, a.only_alerts)


def _emit(mon: SVDMonitor, items: Iterable[SVDMetrics], only_alerts: bool, out: TextIO) -> int:
    n = 0
    for m in items:
        alerts = mon.add_metrics(m)
        n += 1
        if alerts or not only_alerts:
            print(format_block(m, alerts, mon.thresholds), file=out, flush=True)
    return n


def _wandb_source(opts: CliOptions, err: TextIO) -> Callable[[], list[SVDMetrics]] | None:
    try:
        import wandb  # noqa: F401 - optional dependency
    except ImportError:
        print("svd_monitor: the wandb package is not installed, so --wandb-run cannot be read. Install it with "
              "'pip install wandb' and log in ('wandb login'), or watch the training's log with --log-file F "
              "or a Trainboard run with --run-dir D.", file=err, flush=True)
        return None
    path = "/".join(x for x in (opts.entity, opts.project, opts.target) if x)
    state: dict[str, Any] = {"run": None, "min_step": 0}

    def poll() -> list[SVDMetrics]:
        try:
            if state["run"] is None:
                state["run"] = wandb.Api().run(path)
            else:
                state["run"].load(force=True)
            out: list[SVDMetrics] = []
            for row in state["run"].scan_history(min_step=state["min_step"]):
                out += metrics_from_wandb_row(row)
                step = row.get("_step")
                if isinstance(step, (int, float)):
                    state["min_step"] = max(state["min_step"], int(step) + 1)
            return out
        except Exception as exc:  # noqa: BLE001 - network/auth problems: say so and retry at the next poll
            print(f"svd_monitor: W&B connection error for run {path}: {type(exc).__name__}: {exc} "
                  f"(retrying in {opts.refresh:g} s)", file=err, flush=True)
            return []

    return poll


def run_cli(opts: CliOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Read the source, print per-step blocks; on Ctrl+C/SIGTERM (or the end without --follow) the summary."""
    mon = SVDMonitor(opts.thresholds)
    if opts.source == "log-file":
        tailer = LineTailer(opts.target)
        poll: Callable[[], Iterable[SVDMetrics]] = lambda: list(iter_log_file(tailer, opts.pattern))  # noqa: E731
        where = f"log file {opts.target}"
    elif opts.source == "run-dir":
        jt = rf.JsonlTailer(rf.RunPaths.of(opts.target).spectral, known_kinds={rf.RecordKind.SPECTRAL.value})
        poll = lambda: list(iter_run_dir(jt))  # noqa: E731
        where = f"{rf.RunPaths.of(opts.target).spectral}"
    else:
        wb = _wandb_source(opts, err)
        if wb is None:
            return EXIT_USAGE
        poll = wb
        where = f"W&B run {opts.target}"
    previous = signal.getsignal(signal.SIGTERM)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _term)
    except ValueError:  # not the main thread (embedded use): Ctrl+C still works
        pass
    try:
        print(f"Watching {where} (thresholds: {', '.join(f'{k}={v:g}' for k, v in opts.thresholds.to_dict().items())})"
              + ("; Ctrl+C for the summary" if opts.follow else ""), file=out, flush=True)
        total = _emit(mon, poll(), opts.only_alerts, out)
        waited = False
        while opts.follow:
            if total == 0 and not waited:
                print(f"No metrics collected yet; waiting for {where} (every {opts.refresh:g} s)", file=out, flush=True)
                waited = True
            time.sleep(opts.refresh)
            total += _emit(mon, poll(), opts.only_alerts, out)
        if total == 0:
            print(f"No SVD metrics found in {where}.", file=out, flush=True)
    except KeyboardInterrupt:
        print("", file=out, flush=True)
    finally:
        try:
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, TypeError):
            pass
    mon.print_summary(file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collectors.spectral.monitor`` (or ``python -m collectors.spectral``): see ``--help``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]  # emoji on a narrow terminal
        except (AttributeError, ValueError):
            pass
    opts = parse_cli(argv)
    return run_cli(opts)


if __name__ == "__main__":
    sys.exit(main())
