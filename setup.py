"""Builds the ``trainboard`` wheel from the checkout's top-level layout (metadata lives in pyproject.toml).

Why a build step: the checkout keeps the design card's top-level names (``app.py``, ``collectors/``,
``services/``, ``callbacks/``, ``components/``, ``assets/``) and its code imports them by those names
(``from collectors import ...``), as the guides' examples do. Installed under those names they would
collide with everyday files of a training repo (``callbacks.py``, ``services/``). So the wheel holds one
top-level package, ``trainboard``, and the build puts everything under it:

* ``trainboard/``  -> ``trainboard``       (public API, the console command)
* ``collectors/`` ... ``components/`` -> ``trainboard.collectors`` ... (every package found under them)
* ``app.py``       -> ``trainboard/app.py``
* ``assets/``      -> ``trainboard/assets/``, every file (Dash serves the CSS/JS from beside app.py)

and, in the built copies only (the checkout is never changed), :func:`rewrite_source` turns the internal
absolute imports and module-path strings into ``trainboard.``-prefixed ones:

* ``from collectors.x import y``      -> ``from trainboard.collectors.x import y``
* ``import services.y as s``          -> ``import trainboard.services.y as s``
* ``import collectors.x``             -> ``import trainboard.collectors.x; from trainboard import collectors``
* a string that is a module path      -> prefixed: ``"collectors.callback"``, ``"app:main"`` (lazy imports,
  the console command's table)
* ``-m collectors.x`` inside any string -> ``-m trainboard.collectors.x`` (subprocess launches, help texts)

Relative imports, and names that merely start the same way (``collectorsx``), are left alone. The build
refuses (BuildError naming file and line) a form it cannot rewrite faithfully, e.g. ``import collectors.a,
services.b`` without ``as``. Editable installs are not supported: they would map ``trainboard.collectors``
onto the unrewritten checkout; a checkout is used through PYTHONPATH instead.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOP = "trainboard"
PACKAGE_ROOTS = ("collectors", "services", "callbacks", "components")
"""Checkout folders installed as ``trainboard.<name>`` with all their subpackages (found, not listed)."""
MODULE_ROOTS = ("app",)
"""Checkout top-level modules installed as ``trainboard/<name>.py``."""
INTERNAL = PACKAGE_ROOTS + MODULE_ROOTS
ASSETS = "assets"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
MODULE_STRING = re.compile(rf"(?:(?:{'|'.join(PACKAGE_ROOTS)})(?:\.{_IDENT})+(?::{_IDENT})?"
                           rf"|(?:{'|'.join(INTERNAL)}):{_IDENT})")
"""A whole string literal that names an internal module (dotted) or ``module:function``."""
DASH_M = re.compile(rf"(?<=-m )(?=(?:{'|'.join(INTERNAL)})\.{_IDENT})")
"""Where ``trainboard.`` goes inside a string that holds ``-m collectors.x`` (a subprocess launch)."""


class BuildError(Exception):
    """The source uses an import form this build cannot rewrite faithfully; the message names file:line."""


def _root(name: str) -> str:
    return name.split(".", 1)[0]


def _line_starts(data: bytes) -> list[int]:
    starts, pos = [0], 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def rewrite_source(source: str, filename: str = "<source>") -> tuple[str, list[str]]:
    """The text of a built module, with internal imports and module-path strings under ``trainboard.``.

    Pure. Returns ``(new_text, changes)`` where ``changes`` describes each edit (for the build log and
    tests). Raises BuildError for an import it cannot rewrite.
    """
    data = source.encode("utf-8")
    tree = ast.parse(data, filename=filename)
    starts = _line_starts(data)

    def off(line: int, col: int) -> int:  # ast columns are UTF-8 byte offsets
        return starts[line - 1] + col

    edits: list[tuple[int, int, bytes]] = []
    changes: list[str] = []
    prefix = f"{TOP}.".encode()
    inner_constants: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inner_constants.update(id(v) for v in ast.walk(node) if v is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _root(node.module) in INTERNAL:
            start = off(node.lineno, node.col_offset)
            m = re.match(rb"from\s+", data[start:])
            if m is None:  # pragma: no cover - ast and text disagree
                raise BuildError(f"{filename}:{node.lineno}: cannot locate the module of this import")
            edits.append((start + m.end(), start + m.end(), prefix))
            changes.append(f"{filename}:{node.lineno}: from {node.module} -> from {TOP}.{node.module}")
        elif isinstance(node, ast.Import):
            internal = [a for a in node.names if _root(a.name) in INTERNAL]
            if not internal:
                continue
            bare = [a for a in internal if a.asname is None]
            if bare and len(node.names) > 1:
                raise BuildError(f"{filename}:{node.lineno}: `import {', '.join(a.name for a in node.names)}` binds "
                                 f"{_root(bare[0].name)!r} itself; write one import per line or use `as`")
            if bare:
                name = bare[0].name
                stmt = f"from {TOP} import {name}" if "." not in name else \
                    f"import {TOP}.{name}; from {TOP} import {_root(name)}"
                edits.append((off(node.lineno, node.col_offset), off(node.end_lineno, node.end_col_offset),
                              stmt.encode()))
                changes.append(f"{filename}:{node.lineno}: import {name} -> {stmt}")
                continue
            for a in internal:
                pos = off(a.lineno, a.col_offset)
                edits.append((pos, pos, prefix))
                changes.append(f"{filename}:{node.lineno}: import {a.name} -> import {TOP}.{a.name}")
        elif isinstance(node, (ast.Constant, ast.JoinedStr)) and id(node) not in inner_constants:
            if isinstance(node, ast.Constant) and not isinstance(node.value, str):
                continue
            start, end = off(node.lineno, node.col_offset), off(node.end_lineno, node.end_col_offset)
            segment = data[start:end].decode("utf-8")
            if isinstance(node, ast.Constant) and MODULE_STRING.fullmatch(node.value):
                quote = min(i for i in (segment.find('"'), segment.find("'")) if i >= 0)
                if ast.literal_eval(segment) == node.value:  # one plain literal, not an implicit concatenation
                    q = len(segment[quote:]) - len(segment[quote:].lstrip("'\""))
                    new = segment[:quote + q] + f"{TOP}." + segment[quote + q:]
                    edits.append((start, end, new.encode()))
                    changes.append(f"{filename}:{node.lineno}: {node.value!r} -> {TOP + '.' + node.value!r}")
                    continue
            new_segment = DASH_M.sub(f"{TOP}.", segment)
            if new_segment != segment:
                edits.append((start, end, new_segment.encode()))
                changes.append(f"{filename}:{node.lineno}: -m <module> inside a string -> -m {TOP}.<module>")
    out = data
    last = len(data) + 1
    for s, e, rep in sorted(edits, key=lambda t: t[0], reverse=True):
        if e > last:  # pragma: no cover - two edits of one span: a bug here, refuse rather than corrupt
            raise BuildError(f"{filename}: overlapping rewrites at byte {s}")
        out = out[:s] + rep + out[e:]
        last = s
    text = out.decode("utf-8")
    ast.parse(text, filename=filename)  # the built copy must still be valid Python
    return text, changes


def packages() -> tuple[list[str], dict[str, str]]:
    """Every installed package and the checkout folder it comes from (subpackages found, not listed)."""
    from setuptools import find_packages

    found = find_packages(where=str(ROOT), include=[*PACKAGE_ROOTS, *(f"{r}.*" for r in PACKAGE_ROOTS)])
    pkgs = [TOP, *(f"{TOP}.{p}" for p in sorted(found))]
    return pkgs, {TOP: TOP, **{f"{TOP}.{r}": r for r in PACKAGE_ROOTS}}


def _build_py_class():
    from setuptools.command.build_py import build_py

    class BuildPyUnderTrainboard(build_py):
        """build_py, plus app.py and assets/ copied under trainboard/, plus the import rewrite."""

        def run(self) -> None:
            target = Path(self.build_lib) / TOP
            if target.exists():  # a module moved or deleted in the checkout must not linger in the wheel
                shutil.rmtree(target)
            super().run()
            for name in MODULE_ROOTS:
                shutil.copy2(ROOT / f"{name}.py", target / f"{name}.py")
            shutil.copytree(ROOT / ASSETS, target / ASSETS, ignore=shutil.ignore_patterns(".*", "__pycache__"))
            for py in sorted(target.rglob("*.py")):
                rel = py.relative_to(target.parent).as_posix()
                text, changes = rewrite_source(py.read_text(encoding="utf-8"), rel)
                if changes:
                    py.write_text(text, encoding="utf-8")
                    self.announce(f"rewrote {len(changes)} internal import(s)/module string(s) in {rel}", level=2)

    return BuildPyUnderTrainboard


EDITABLE_REFUSAL = ("trainboard: editable installs (pip install -e) are not supported: the installed package is a "
                    "rewritten copy of this checkout. Install it normally (pip install /path/to/trainboard -c "
                    "constraints.txt), or use the checkout directly with PYTHONPATH=/path/to/trainboard.")


def _editable_wheel_class():
    from setuptools.command.editable_wheel import editable_wheel
    from setuptools.errors import SetupError

    class RefuseEditable(editable_wheel):
        """An editable install would map trainboard.collectors onto unrewritten code that imports
        ``collectors``: it would install, then fail at the first import. Refuse up front, saying why."""

        def run(self) -> None:
            raise SetupError(EDITABLE_REFUSAL)

    return RefuseEditable


if __name__ == "__main__":
    from setuptools import setup

    _pkgs, _dirs = packages()
    setup(packages=_pkgs, package_dir=_dirs,
          cmdclass={"build_py": _build_py_class(), "editable_wheel": _editable_wheel_class()})
