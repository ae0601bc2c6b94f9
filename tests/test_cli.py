"""The ``trainboard`` command from a checkout (``python -m trainboard``): its table, help and errors.

The installed console script is tested in test_package.py; here every subcommand's target is checked
to import (the table is the one place a moved module must be re-pointed), and the error paths run for
real as subprocesses: a usage error or a missing package gives a message, never a traceback.
"""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import collectors
import trainboard
from trainboard import cli
from tests.conftest import REPO


def tb(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainboard", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("name", list(cli.COMMANDS), ids=list(cli.COMMANDS))
def test_every_command_target_imports_and_is_a_main(name: str) -> None:
    fn = cli.resolve(cli.COMMANDS[name].target)
    assert callable(fn) and "argv" in inspect.signature(fn).parameters


def test_public_names_are_those_of_collectors() -> None:
    assert trainboard.__all__ == collectors.__all__
    for name in ("Monitor", "MonitorCallback", "SamplesConfig", "CheckpointManager", "SpectralConfig"):
        assert getattr(trainboard, name) is getattr(collectors, name)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        trainboard.Nope  # noqa: B018


def test_help_lists_every_command() -> None:
    out = tb("--help")
    assert out.returncode == 0
    for name, cmd in cli.COMMANDS.items():
        assert name in out.stdout
    assert tb("--version").stdout.strip() == f"trainboard {trainboard.__version__}"


@pytest.mark.parametrize(("name", "usage"), [
    pytest.param("serve", "usage: trainboard serve", id="serve"),
    pytest.param("demo", "usage: trainboard demo", id="demo"),
    pytest.param("enable", "usage: trainboard enable", id="enable"),
    pytest.param("watch", "--base-dir", id="watch"),
    pytest.param("svd", "--run-dir", id="svd"),
])
def test_each_command_explains_itself(name: str, usage: str) -> None:
    out = tb(name, "--help", cwd=Path("/"))
    assert out.returncode == 0 and usage in out.stdout and "Traceback" not in out.stderr


@pytest.mark.parametrize(("args", "message"), [
    pytest.param((), "choose a command (serve, demo, enable, watch, resume, svd)", id="no-command"),
    pytest.param(("bogus",), "invalid choice: 'bogus'", id="unknown-command"),
    pytest.param(("--bogus",), "unrecognized arguments: --bogus", id="unknown-option"),
    pytest.param(("serve", "--port", "0"), "--port must be between 1 and 65535", id="serve-port"),
    pytest.param(("serve", "--host", "0.0.0.0"), "set a token", id="serve-public-without-token"),
    pytest.param(("demo", "--demo-steps", "-1"), "--demo-steps must be a positive integer", id="demo-steps"),
    pytest.param(("enable",), "the following arguments are required: script", id="enable-no-script"),
])
def test_bad_input_is_a_clear_usage_error(args: tuple[str, ...], message: str) -> None:
    out = tb(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_python_app_py_keeps_its_own_name() -> None:
    out = subprocess.run([sys.executable, str(REPO / "app.py"), "--help"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.startswith("usage: python app.py")


def test_a_missing_third_party_package_is_named_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "needs_torch_like.py").write_text("import not_installed_pkg_for_trainboard_tests\n"
                                                  "def main(argv): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "serve", cli.Command("needs_torch_like:main", "test"))
    assert cli.main(["serve"]) == cli.EXIT_MISSING_DEPENDENCY
    err = capsys.readouterr().err
    assert "needs the Python package 'not_installed_pkg_for_trainboard_tests'" in err


def test_a_missing_module_of_trainboard_itself_is_a_bug_and_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.COMMANDS, "watch", cli.Command("collectors.no_such_module:main", "test"))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["watch"])


def test_the_target_gets_prog_when_it_accepts_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "progmod.py").write_text("seen = []\ndef main(argv, prog='x'):\n    seen.append((argv, prog))\n"
                                         "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "demo", cli.Command("progmod:main", "test", ("--demo",)))
    assert cli.main(["demo", "--port", "1"]) == 3
    import progmod  # type: ignore[import-not-found]

    assert progmod.seen == [(["--demo", "--port", "1"], "trainboard demo")]
