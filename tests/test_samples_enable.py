"""Tests of `trainboard enable` / `python app.py enable` (collectors.enable) on several real train.py shapes."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors.enable import IMPORT_LINE, MARK_BEGIN, MARK_END, EnableError, main, plan_patch

FIXTURES = Path(__file__).parent / "fixtures" / "enable"
ROOT = Path(__file__).resolve().parents[1]


def copy_fixture(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "train.py"
    shutil.copy(FIXTURES / name, dst)
    return dst


def add_callback_targets(text: str) -> list[str]:
    """Targets of the inserted `<x>.add_callback(MonitorCallback(...))` calls, found by parsing."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_callback":
            assert isinstance(node.args[0], ast.Call) and node.args[0].func.id == "MonitorCallback"
            out.append(ast.unparse(node.func.value))
    return out


@pytest.mark.parametrize(("fixture", "target", "after"), [
    pytest.param("train_in_main.py", "trainer", "    )\n", id="trainer-in-main"),
    pytest.param("train_module_level.py", "trainer", "train_dataset=ds)\n", id="module-level-annotated"),
    pytest.param("train_sft_subclass.py", "self.trainer", "eval_dataset=self.eval_ds)\n", id="sft-subclass"),
    pytest.param("train_runnable.py", "trainer", "processing_class=setup.tokenizer)\n", id="runnable"),
])
def test_enable_patches_each_shape_idempotently_and_undo_restores(tmp_path: Path, fixture: str, target: str,
                                                                  after: str, capsys: pytest.CaptureFixture) -> None:
    script = copy_fixture(tmp_path, fixture)
    original = script.read_bytes()
    assert main([str(script)]) == 0
    assert "patched" in capsys.readouterr().out
    patched = script.read_text()
    assert add_callback_targets(patched) == [target]
    lines = patched.splitlines(keepends=True)
    cb_line = next(i for i, line in enumerate(lines) if ".add_callback(" in line)
    assert lines[cb_line - 1].endswith(after)  # right after the whole (possibly multi-line) assignment
    indent = lines[cb_line][: len(lines[cb_line]) - len(lines[cb_line].lstrip())]
    assert lines[cb_line].lstrip().startswith(f"{target}.add_callback(MonitorCallback(samples=SamplesConfig("
                                              f"dataset={target}.eval_dataset)))")
    assert indent != "" or target == "trainer" and fixture == "train_module_level.py"
    assert patched.count(MARK_BEGIN) == 1
    assert (tmp_path / "train.py.backup").read_bytes() == original
    # the import goes after the docstring / __future__ / shebang, before the first real statement
    tree = ast.parse(patched)
    first_code = next(n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                      and not (isinstance(n, ast.ImportFrom) and n.module == "__future__"))
    assert isinstance(first_code, ast.ImportFrom) and first_code.module == "trainboard"
    assert ast.unparse(first_code) == IMPORT_LINE == "from trainboard import MonitorCallback, SamplesConfig"
    # the block is the public import and nothing else: no path of this machine, no sys.path change
    block = patched[patched.index(MARK_BEGIN):patched.index(MARK_END)]
    assert block.splitlines()[1:] == [IMPORT_LINE]
    assert str(ROOT) not in patched and "sys.path" not in block
    if original.startswith(b"#!"):
        assert patched.startswith("#!/usr/bin/env python\n")
    # second run: nothing changes, and it says so
    assert main([str(script)]) == 0
    assert "already" in capsys.readouterr().out and script.read_text() == patched
    # undo restores byte for byte and removes the backup
    assert main(["--undo", str(script)]) == 0
    assert script.read_bytes() == original and not (tmp_path / "train.py.backup").exists()


@pytest.mark.parametrize(("fixture", "message"), [
    pytest.param("train_custom_loop.py", "no transformers Trainer found", id="own-trainer-class"),
    pytest.param("train_unassigned.py", "without assigning it to a name", id="unassigned"),
])
def test_enable_refuses_without_a_usable_trainer(tmp_path: Path, fixture: str, message: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    script = copy_fixture(tmp_path, fixture)
    before = script.read_bytes()
    assert main([str(script)]) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing changed" in err and "Traceback" not in err
    assert script.read_bytes() == before and not (tmp_path / "train.py.backup").exists()


@pytest.mark.parametrize(("source", "message"), [
    pytest.param("def broken(:\n", "cannot parse", id="syntax-error"),
    pytest.param("", "no transformers Trainer found", id="empty-file"),
    pytest.param("x = 1\n", "no transformers Trainer found", id="no-trainer"),
])
def test_plan_patch_refusals(source: str, message: str) -> None:
    with pytest.raises(EnableError, match=message):
        plan_patch(source)


def test_plan_patch_existing_callbacks_argument_counts_as_enabled() -> None:
    src = ("from transformers import Trainer\nfrom collectors import MonitorCallback\n"
           "trainer = Trainer(model=m, callbacks=[MonitorCallback()])\n")
    assert plan_patch(src).already_enabled


def test_plan_patch_aliases_and_multiple_trainers() -> None:
    src = ("import transformers as tf\nfrom transformers import Seq2SeqTrainer as S2S\n"
           "a = tf.Trainer(model=m)\nb = S2S(model=m)\nno_newline_at_end = 1")
    text = plan_patch(src).text
    assert add_callback_targets(text) == ["a", "b"]
    assert text.startswith(MARK_BEGIN)


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nope.py")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err
    assert main(["--undo", str(tmp_path / "train.py")]) == 1
    assert "nothing to undo" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--force", str(tmp_path / "train.py")])
    assert exc.value.code == 2 and "--force only applies with --undo" in capsys.readouterr().err


def test_undo_refuses_to_lose_later_edits_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script = copy_fixture(tmp_path, "train_in_main.py")
    original = script.read_text()
    assert main([str(script)]) == 0
    script.write_text(script.read_text() + "# my later edit\n")
    assert main(["--undo", str(script)]) == 1
    assert "edited after enable patched it" in capsys.readouterr().err
    assert main(["--undo", "--force", str(script)]) == 0
    assert script.read_text() == original


def test_enable_refuses_when_a_stale_backup_exists(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    script = copy_fixture(tmp_path, "train_in_main.py")
    (tmp_path / "train.py.backup").write_text("old")
    assert main([str(script)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "train.py.backup").read_text() == "old"


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_patched_script_runs_and_produces_the_run_dir(tmp_path: Path) -> None:
    script = copy_fixture(tmp_path, "train_runnable.py")
    assert main([str(script)]) == 0
    out_dir = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TRAINBOARD_DEMO_LIB=str(ROOT), TRAIN_OUTPUT_DIR=str(out_dir), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="2")
    # cwd is the temp dir; the patched script finds `trainboard` the way a user's would: importable from
    # this checkout through PYTHONPATH (test_package.py covers the pip-installed wheel, no PYTHONPATH)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = rf.RunPaths.of(out_dir / "trainboard")
    status, problem = rf.read_json(paths.status)
    assert problem is None and status["state"] == "finished" and status["step"] == 6
    assert len([r for r in rf.read_new(paths.metrics, 0).records if r["kind"] == "train"]) == 6
    detail, problem = rf.read_json(paths.detail)  # default every 50 steps; the final sample is taken at the end
    assert problem is None and detail["step"] == 6 and detail["comparison"]["summary"].startswith("Accuracy:")


def test_app_py_dispatches_enable(tmp_path: Path) -> None:
    script = copy_fixture(tmp_path, "train_custom_loop.py")
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "enable", str(script)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "no transformers Trainer found" in proc.stderr and "Traceback" not in proc.stderr
