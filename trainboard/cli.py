"""The ``trainboard`` console command (and ``python -m trainboard``): one entry point, six subcommands.

Each subcommand hands its arguments, untouched, to the ``main(argv)`` of the module that owns that
feature, so its options, ``--help`` and error messages are defined once, there. The modules are named
by import-path strings in :data:`COMMANDS` and imported only when their subcommand runs: ``trainboard
enable`` never loads dash, ``trainboard serve`` never loads torch. The strings use the checkout's
top-level names; the wheel's build step (setup.py) prefixes them with ``trainboard.``.

A target ``main`` that accepts ``prog=`` is given ``"trainboard <command>"`` so its usage line names the
command the user typed; one that does not keeps its own ``prog``.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

PROG = "trainboard"
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 1
EXIT_INTERRUPTED = 130
TRAIN_EXTRA_HINT = "pip install 'trainboard[train]' -c constraints.txt (or install torch and transformers yourself)"


@dataclass(frozen=True)
class Command:
    """A subcommand: the ``module:function`` it runs, a one-line summary, and arguments put in front."""

    target: str
    summary: str
    prepend: tuple[str, ...] = field(default=())


COMMANDS: dict[str, Command] = {
    "serve": Command("app:main", "serve the live dashboard on a run directory or a folder of runs "
                                 "(--base-dir DIR, --host, --port, --token, --poll, --demo)"),
    "demo": Command("app:main", "train the demo model (tiny GPT-2 on CPU, every feature on) in a subprocess "
                                "and serve the dashboard on it (the options of serve)", ("--demo",)),
    "enable": Command("collectors.enable:main", "add MonitorCallback to a train.py that builds a transformers "
                                                "Trainer (--undo reverts)"),
    "watch": Command("collectors.anomaly.smart_monitor:main", "the Smart Monitor: watch a training directory and save "
                                                      "snapshots on loss spikes, accuracy drops, best models"),
    "resume": Command("services.recovery:main", "print the exact code that resumes a run from a snapshot's last good "
                                                 "state or a checkpoint, skipping bad batches (--from, --skip-batches)"),
    "svd": Command("collectors.spectral.monitor:main", "the SVD monitor: per-layer spectral metrics of a run, "
                                                "with alerts before full-rank to low-rank switches"),
}
"""Subcommand -> where it lives. After moving a module, change its target here (one line)."""

INTERNAL_ROOTS = ("app", "collectors", "services", "callbacks", "components", "trainboard")
"""Top-level names of Trainboard's own code (checkout); a missing one is a bug, not a missing dependency."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: it lists the subcommands; each subcommand parses its own arguments."""
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trainboard: a live local monitor for PyTorch / Hugging Face Transformers training.",
        epilog="Run `trainboard COMMAND --help` for the options of a command. Examples:\n"
               "  trainboard serve --base-dir runs          # dashboard on http://127.0.0.1:8081\n"
               "  trainboard demo                           # demo training + dashboard\n"
               "  trainboard enable train.py                # from trainboard import MonitorCallback, inserted\n"
               "  trainboard watch --base-dir out/run1      # Smart Monitor beside a training\n"
               "  trainboard svd --run-dir runs/run1        # spectral alerts in the terminal\n"
               "  trainboard resume runs/run1 --from anomaly_20240101_120000_loss_spike --skip-batches 31-40")
    from trainboard import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, cmd in COMMANDS.items():
        sub.add_parser(name, help=cmd.summary, add_help=False)
    return p


def resolve(target: str) -> Callable[..., int]:
    """Import ``module:function`` (raises ImportError/AttributeError for a wrong table entry)."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def _accepts_prog(fn: Callable[..., int]) -> bool:
    try:
        return "prog" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def run_command(name: str, argv: Sequence[str]) -> int:
    """Run subcommand ``name`` with its own arguments; returns its exit status.

    A third-party package that is not installed (torch for ``trainboard demo``...) ends in a one-line
    message naming it, not a traceback; a missing module of Trainboard itself is a bug and is raised.
    """
    cmd = COMMANDS[name]
    args = [*cmd.prepend, *argv]
    try:
        fn = resolve(cmd.target)
        status = fn(args, prog=f"{PROG} {name}") if _accepts_prog(fn) else fn(args)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if not root or root in INTERNAL_ROOTS:
            raise
        hint = f"; {TRAIN_EXTRA_HINT}" if root in ("torch", "transformers", "accelerate", "tokenizers") else ""
        print(f"{PROG} {name}: error: this command needs the Python package {root!r}, which is not installed{hint}",
              file=sys.stderr)
        return EXIT_MISSING_DEPENDENCY
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(status or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``trainboard COMMAND [options]``; returns the exit status (2 for a usage error, like argparse)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        print(f"\n{PROG}: error: choose a command ({', '.join(COMMANDS)})", file=sys.stderr)
        return EXIT_USAGE
    parser.parse_args(argv)  # --help / --version exit here; an unknown command exits 2 naming the choices
    parser.error(f"expected a command first ({', '.join(COMMANDS)}); got {argv[0]!r}")  # e.g. `trainboard -x`
    return EXIT_USAGE  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(main())
