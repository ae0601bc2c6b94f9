"""``trainboard enable path/to/train.py``: add Trainboard to an existing transformers training script.

The script is parsed with :mod:`ast` (never regex on code). Every ``name = SomeTrainer(...)`` whose class is
a transformers/TRL trainer (any ``*Trainer`` imported from ``transformers`` or ``trl``: ``Trainer``,
``Seq2SeqTrainer``, ``SFTTrainer``...; or ``transformers.Trainer`` through the module) or a class of the
script that subclasses one, transitively, gets
``name.add_callback(MonitorCallback(samples=SamplesConfig(dataset=name.eval_dataset)))`` on the next line,
and one import block goes after the module docstring / ``__future__`` imports. The block is the public
import ``from trainboard import MonitorCallback, SamplesConfig`` and nothing else: no path of this
machine is written into the user's script, so it works wherever Trainboard is installed (``pip install``)
or importable (a checkout on PYTHONPATH), and can be committed and shared.

* The original is saved as ``train.py.backup`` first; both writes are atomic (temp file + ``os.replace``).
* Idempotent: a script that already builds a ``MonitorCallback`` is left alone ("already enabled").
* Refuses, changing nothing, when it finds no Trainer, a Trainer that is not assigned to a name, or a
  script that does not parse.
* ``--undo`` puts the backup back (and refuses when the script was edited after patching, unless
  ``--force``).

Used by the ``trainboard enable`` console command and ``python app.py enable`` (both call
``collectors.enable.main(argv, prog=...)``), and runnable directly as ``python -m collectors.enable``.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from collectors import runformat as rf

BACKUP_SUFFIX = ".backup"
MARK_BEGIN = "# >>> trainboard (added by `trainboard enable`; undo with `trainboard enable --undo`) >>>"
MARK_END = "# <<< trainboard <<<"
CALLBACK_NAME = "MonitorCallback"
TRAINER_MODULES = ("transformers", "trl")
IMPORT_LINE = f"from trainboard import {CALLBACK_NAME}, SamplesConfig"
DEFAULT_PROG = "trainboard enable"
EXIT_OK = 0
EXIT_REFUSED = 1


class EnableError(Exception):
    """The script cannot be patched (or restored); the message says why in words."""


@dataclass
class PatchPlan:
    """What :func:`plan_patch` decided: the new text, or that nothing needs to change."""

    text: str
    already_enabled: bool = False
    trainer_lines: list[int] = field(default_factory=list)
    import_line: int = 0


def _callee_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


@dataclass
class TrainerNames:
    """How this script can name a trainer class: bare names and module aliases (``transformers``, ``tf``)."""

    classes: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)

    def matches(self, func: ast.expr) -> bool:
        """True when ``func`` (a call's callee or a class base) denotes a trainer class."""
        if isinstance(func, ast.Name):
            return func.id in self.classes
        if isinstance(func, ast.Attribute) and func.attr.endswith("Trainer"):
            root = func.value
            while isinstance(root, ast.Attribute):
                root = root.value
            return isinstance(root, ast.Name) and root.id in self.modules
        return False


def trainer_names(tree: ast.Module) -> TrainerNames:
    """Names that denote a transformers/TRL trainer class in this script (pure).

    A name counts when it is a ``*Trainer`` imported from ``transformers``/``trl`` (or reached through an
    imported ``transformers``/``trl`` module), or a class of the script that subclasses one, transitively.
    A script's own unrelated ``class Trainer`` does not count (it has no ``add_callback``).
    """
    names = TrainerNames()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in TRAINER_MODULES:
            names.classes.update(a.asname or a.name for a in node.names if a.name.endswith("Trainer"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in TRAINER_MODULES:
                    names.modules.add(alias.asname or alias.name.split(".")[0])
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    changed = True
    while changed:
        changed = False
        for cls in classes:
            if cls.name not in names.classes and any(names.matches(b) for b in cls.bases):
                names.classes.add(cls.name)
                changed = True
    return names


def _is_monitor_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _callee_name(node.func) == CALLBACK_NAME


def _import_block() -> str:
    return "\n".join([MARK_BEGIN, IMPORT_LINE, MARK_END, ""])


def _callback_line(indent: str, target: str) -> str:
    return (f"{indent}{target}.add_callback({CALLBACK_NAME}(samples=SamplesConfig(dataset={target}.eval_dataset)))"
            "  # trainboard\n")


def _import_position(tree: ast.Module, lines: list[str]) -> int:
    """0-based line index where the import block goes: after the docstring and ``__future__`` imports."""
    pos = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        pos = body[0].end_lineno or 0
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            pos = max(pos, node.end_lineno or 0)
    if pos == 0:
        while pos < len(lines) and (lines[pos].startswith("#!") or "coding" in lines[pos][:40] and lines[pos].startswith("#")):
            pos += 1
    return pos


def plan_patch(source: str, filename: str = "train.py") -> PatchPlan:
    """Decide the patched text of ``source`` (pure: no I/O).

    Raises:
        EnableError: when the source does not parse, has no Trainer, or builds one without a name.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise EnableError(f"cannot parse {filename}: {exc.msg} (line {exc.lineno}); fix the script first") from None
    if any(_is_monitor_call(n) for n in ast.walk(tree)):
        return PatchPlan(source, already_enabled=True)
    trainers = trainer_names(tree)
    sites: list[tuple[ast.stmt, str]] = []
    unassigned: list[int] = []
    assigned_calls: set[int] = set()
    for node in ast.walk(tree):
        value: ast.expr | None = None
        target: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            value, target = node.value, node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            value, target = node.value, node.target
        if isinstance(value, ast.Call) and trainers.matches(value.func) \
                and isinstance(target, (ast.Name, ast.Attribute)):
            sites.append((node, ast.unparse(target)))
            assigned_calls.add(id(value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and trainers.matches(node.func) and id(node) not in assigned_calls:
            unassigned.append(node.lineno)
    if not sites:
        if unassigned:
            raise EnableError(f"{filename} builds a Trainer at line {unassigned[0]} without assigning it to a name; "
                              "write `trainer = Trainer(...)` there and run enable again (nothing changed)")
        raise EnableError(f"no transformers Trainer found in {filename} (looked for *Trainer classes imported from "
                          "transformers or trl, and the script's subclasses of them); nothing changed")
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    inserts: dict[int, str] = {}
    for stmt, target in sites:
        first = lines[stmt.lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        inserts[stmt.end_lineno or stmt.lineno] = _callback_line(indent, target)
    import_at = _import_position(tree, lines)
    out: list[str] = []
    for i, line in enumerate(lines):
        if i == import_at:
            out.append(_import_block())
        out.append(line)
        if i + 1 in inserts:
            out.append(inserts[i + 1])
    if import_at >= len(lines):
        out.append(_import_block())
    text = "".join(out)
    try:
        ast.parse(text)
    except SyntaxError as exc:  # pragma: no cover - a bug of ours; refuse rather than break the script
        raise EnableError(f"patching {filename} would not parse ({exc.msg}, line {exc.lineno}); nothing changed") from None
    return PatchPlan(text, trainer_lines=sorted(s.lineno for s, _ in sites), import_line=import_at + 1)


def _write_atomic(path: Path, text: str, mode: int | None) -> None:
    with rf.atomic_write(path, mode=mode) as fh:
        fh.write(text.encode("utf-8"))


def _read(path: Path) -> str:
    if not path.exists():
        raise EnableError(f"{path} does not exist")
    if not path.is_file():
        raise EnableError(f"{path} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EnableError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise EnableError(f"cannot read {path}: {exc.strerror or exc}") from None


def enable(path: str | os.PathLike[str], prog: str = DEFAULT_PROG) -> str:
    """Patch the script at ``path`` in place (backup first). Returns what happened, in words.

    Raises:
        EnableError: when the script cannot be patched (nothing is changed then).
    """
    script = Path(path)
    source = _read(script)
    plan = plan_patch(source, script.name)
    backup = script.with_name(script.name + BACKUP_SUFFIX)
    if plan.already_enabled:
        return f"{script} already has Trainboard's {CALLBACK_NAME}; nothing changed"
    if backup.exists():
        raise EnableError(f"{backup} already exists and {script} is not patched; move the old backup away first "
                          "(nothing changed)")
    mode = script.stat().st_mode & 0o7777
    _write_atomic(backup, source, mode)
    _write_atomic(script, plan.text, mode)
    where = ", ".join(str(n) for n in plan.trainer_lines)
    return (f"patched {script}: import block at line {plan.import_line}, add_callback after the Trainer built at "
            f"line(s) {where}; original saved as {backup}. Run dir: <output_dir>/trainboard. "
            f"Undo: {prog} --undo {script}")


def undo(path: str | os.PathLike[str], *, force: bool = False) -> str:
    """Restore ``path`` from its backup (the backup file is moved back, so it disappears).

    Raises:
        EnableError: when there is no backup, or the script changed since it was patched (unless ``force``).
    """
    script = Path(path)
    backup = script.with_name(script.name + BACKUP_SUFFIX)
    if not backup.is_file():
        raise EnableError(f"no backup at {backup}; nothing to undo")
    original = _read(backup)
    if script.exists() and not force:
        current = _read(script)
        try:
            expected = plan_patch(original, script.name).text
        except EnableError:
            expected = None
        if current != expected and current != original:
            raise EnableError(f"{script} was edited after enable patched it; restoring would lose those edits. "
                              "Rerun with --force to restore the backup anyway (nothing changed)")
    os.replace(backup, script)
    return f"restored {script} from {backup}"


def build_parser(prog: str = DEFAULT_PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog,
                                description="Add Trainboard (MonitorCallback with live samples) to a train.py that "
                                            "builds a transformers Trainer, or undo it.")
    p.add_argument("script", help="the training script to patch (a backup is written next to it)")
    p.add_argument("--undo", action="store_true", help="restore the script from its .backup")
    p.add_argument("--force", action="store_true", help="with --undo: restore even if the script was edited since")
    return p


def main(argv: Sequence[str] | None = None, prog: str = DEFAULT_PROG) -> int:
    """Command line entry point; returns the exit status (0 done or nothing to do, 1 refused)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.force and not args.undo:
        parser.error("--force only applies with --undo")
    try:
        message = undo(args.script, force=args.force) if args.undo else enable(args.script, prog)
    except EnableError as exc:
        print(f"enable: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(message)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
