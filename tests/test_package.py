"""The installed package (issue 9): the wheel holds one top-level name, ``trainboard``; installed
non-editable into a fresh venv it serves the dashboard WITH its CSS from any folder, its console command
works, its demo subprocess starts, and a real Trainer trains with ``from trainboard import MonitorCallback``.

The venv is made with ``--system-site-packages --without-pip`` so dash/torch come from this machine
(no download) and pip/setuptools are the machine's; the checkout is never importable there: every
command runs from a temporary folder with PYTHONPATH unset, and a test proves ``import collectors`` fails.
The wheel is built from a copy of the checkout so parallel builds never share a ``build/`` folder.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

from collectors import runformat as rf
from tests.conftest import REPO, assert_no_console_errors, free_port, save_screenshot, wait_http

SOURCE_ROOTS = ("collectors", "services", "callbacks", "components")
INSTALL_TIMEOUT_S = 600
NAV_BACKGROUND = "rgb(29, 35, 48)"  # assets/base.css: .header { background: #1d2330 }
TOP_LEVEL_SKIP = {".git", "build", "dist", "runs", "tests", "test-artifacts", "bench", "docs", ".venv", "tmp"}


def copy_ignore(folder: str, names: list[str]) -> set[str]:
    """What the copy of the checkout leaves out: caches everywhere, and bulky top-level folders that
    the build does not read (only at the top: a package named ``runs`` inside services/ is kept)."""
    skip = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))}
    if Path(folder).resolve() == REPO:
        skip |= TOP_LEVEL_SKIP & set(names)
    return skip


def load_setup() -> ModuleType:
    """setup.py as a module (its ``setup()`` call runs only as __main__), for the pure rewrite tests."""
    spec = importlib.util.spec_from_file_location("trainboard_setup", REPO / "setup.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SETUP = load_setup()


# --------------------------------------------------------------------------- the build's rewrite (pure)

@pytest.mark.parametrize(("source", "expected"), [
    pytest.param("from collectors.monitor import Monitor\n", "from trainboard.collectors.monitor import Monitor\n",
                 id="from-import"),
    pytest.param("from   services import x\n", "from   trainboard.services import x\n", id="from-spaces"),
    pytest.param("import collectors.runformat as rf\n", "import trainboard.collectors.runformat as rf\n",
                 id="import-as"),
    pytest.param("import collectors\n", "from trainboard import collectors\n", id="bare-import"),
    pytest.param("import services.runstore\n", "import trainboard.services.runstore; from trainboard import services\n",
                 id="bare-dotted-import"),
    pytest.param("def f():\n    from components import ids\n", "def f():\n    from trainboard.components import ids\n",
                 id="indented-lazy-import"),
    pytest.param("M = {'A': 'collectors.callback'}\n", "M = {'A': 'trainboard.collectors.callback'}\n",
                 id="module-string"),
    pytest.param('T = "app:main"\n', 'T = "trainboard.app:main"\n', id="module-function-string"),
    pytest.param('cmd = [sys.executable, "-m", "collectors.demo"]\n',
                 'cmd = [sys.executable, "-m", "trainboard.collectors.demo"]\n', id="dash-m-argument"),
    pytest.param('H = "run python -m collectors.svd_monitor --run-dir D"\n',
                 'H = "run python -m trainboard.collectors.svd_monitor --run-dir D"\n', id="dash-m-in-text"),
    pytest.param('H = f"python -m collectors.demo {x}"\n', 'H = f"python -m trainboard.collectors.demo {x}"\n',
                 id="dash-m-in-fstring"),
    pytest.param('"""Run ``python -m collectors.demo``."""\n', '"""Run ``python -m trainboard.collectors.demo``."""\n',
                 id="docstring"),
    pytest.param("s = 'é'; from collectors import x\n", "s = 'é'; from trainboard.collectors import x\n",
                 id="non-ascii-before"),
])
def test_rewrite_prefixes_internal_names(source: str, expected: str) -> None:
    text, changes = SETUP.rewrite_source(source)
    assert text == expected and changes


@pytest.mark.parametrize("source", [
    pytest.param("from .monitor import Monitor\n", id="relative"),
    pytest.param("from collectorsx import a\nimport servicesy\n", id="lookalike-names"),
    pytest.param("import os, json\nfrom dash import html\n", id="third-party"),
    pytest.param("p = 'app.py'\nq = 'collectors'\nr = 'services.json is a file'\n", id="strings-that-are-no-module"),
    pytest.param("x = 'python app.py --demo'\n", id="app-py-text"),
])
def test_rewrite_leaves_other_code_alone(source: str) -> None:
    assert SETUP.rewrite_source(source) == (source, [])


def test_rewrite_refuses_a_multi_import_it_cannot_keep_faithful() -> None:
    with pytest.raises(SETUP.BuildError, match=r"x.py:2: .*one import per line"):
        SETUP.rewrite_source("import os\nimport collectors.a, json\n", "x.py")


def test_rewrite_is_idempotent() -> None:
    once, _ = SETUP.rewrite_source("from collectors import a\nM = 'collectors.b'\nimport services.c as c\n")
    assert SETUP.rewrite_source(once) == (once, [])


# --------------------------------------------------------------------------- the wheel and a fresh venv

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


class Installed:
    """A wheel built from a copy of the checkout, installed (not editable) into a fresh venv."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "elsewhere"  # cwd of every command: neither the checkout nor its copy
        self.work.mkdir()
        src = root / "src"
        shutil.copytree(REPO, src, ignore=copy_ignore)
        dist = root / "dist"
        out = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(src)], cwd=self.work, timeout=INSTALL_TIMEOUT_S)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        (self.wheel,) = dist.glob("trainboard-*.whl")
        venv = root / "venv"
        out = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=self.work)
        assert out.returncode == 0, out.stderr
        self.python = venv / "bin" / "python"
        self.trainboard = venv / "bin" / "trainboard"
        # --no-index: every declared dependency must already be satisfied here (nothing is downloaded)
        out = _run([str(self.python), "-m", "pip", "install", "--no-index", "--no-build-isolation",
                    "-c", str(REPO / "constraints.txt"), str(self.wheel)], cwd=self.work, timeout=INSTALL_TIMEOUT_S)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        code = "import trainboard, pathlib; print(pathlib.Path(trainboard.__file__).parent)"
        self.package_dir = Path(_run([str(self.python), "-c", code], cwd=self.work).stdout.strip())

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run([str(self.trainboard), *args], cwd=self.work, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return Installed(tmp_path_factory.mktemp("package"))


def _wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


@pytest.mark.integration
def test_wheel_has_only_the_trainboard_top_level_name_and_every_module(installed: Installed) -> None:
    names = _wheel_names(installed.wheel)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"trainboard"}
    with zipfile.ZipFile(installed.wheel) as z:
        (record,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
        if record:
            assert z.read(record).decode().split() == ["trainboard"]
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert re.search(r"^trainboard = trainboard\.cli:main$", entry, re.M)
    # every module of the checkout is shipped (a folder without __init__.py would silently be left out)
    expected = {f"trainboard/{p.relative_to(REPO).as_posix()}" for r in SOURCE_ROOTS for p in (REPO / r).rglob("*.py")}
    expected |= {f"trainboard/{p.name}" for p in (REPO / "trainboard").glob("*.py")} | {"trainboard/app.py"}
    expected |= {f"trainboard/{p.relative_to(REPO).as_posix()}" for p in (REPO / "assets").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert expected - set(names) == set()


@pytest.mark.integration
def test_wheel_code_names_only_modules_it_ships(installed: Installed) -> None:
    """No import or module-path string in the wheel still names a checkout top-level package, and every
    ``trainboard.x.y`` string names a module the wheel holds (so a moved module that a lazy table still
    names is caught here, not by a user)."""
    names = set(_wheel_names(installed.wheel))
    internal = "|".join((*SOURCE_ROOTS, "app"))
    stale_import = re.compile(rf"^\s*(?:from|import)\s+(?:{internal})(?:\.|\s|$)", re.M)
    module_string = re.compile(rf"""["'](trainboard\.(?:{internal})(?:\.\w+)*)(?::\w+)?["']""")
    with zipfile.ZipFile(installed.wheel) as z:
        for name in names:
            if not name.endswith(".py"):
                continue
            text = z.read(name).decode("utf-8")
            assert not stale_import.search(text), f"{name} still imports a checkout top-level name"
            for mod in module_string.findall(text):
                path = mod.replace(".", "/")
                assert f"{path}.py" in names or f"{path}/__init__.py" in names, f"{name} names {mod}: not in the wheel"


@pytest.mark.integration
def test_an_editable_install_is_refused_with_the_reason(installed: Installed, tmp_path: Path) -> None:
    venv = tmp_path / "venv-editable"
    assert _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                cwd=installed.work).returncode == 0
    out = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-build-isolation", "-e",
                str(installed.root / "src")], cwd=installed.work, timeout=INSTALL_TIMEOUT_S)
    assert out.returncode != 0 and "editable installs (pip install -e) are not supported" in out.stdout + out.stderr
    assert not list((venv / "lib").glob("python*/site-packages/trainboard*"))


@pytest.mark.integration
def test_checkout_is_not_importable_in_the_venv(installed: Installed) -> None:
    code = ("import importlib.util as u, trainboard; "
            "print([n for n in ('app', 'collectors', 'services', 'callbacks', 'components') if u.find_spec(n)]); "
            "print(trainboard.__file__); print(sorted(set(trainboard.__all__) ^ set(__import__('trainboard.collectors')"
            ".collectors.__all__)))")
    out = _run([str(installed.python), "-c", code], cwd=installed.work)
    assert out.returncode == 0, out.stderr
    found, where, diff = out.stdout.splitlines()
    assert found == "[]" and Path(where).is_relative_to(installed.root / "venv") and diff == "[]"


@pytest.mark.integration
def test_installed_command_help_and_errors(installed: Installed, tmp_path: Path) -> None:
    out = installed.run("--help")
    assert out.returncode == 0
    for cmd in ("serve", "demo", "enable", "watch", "svd"):
        assert cmd in out.stdout
        sub = installed.run(cmd, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout and "Traceback" not in sub.stderr, (cmd, sub.stderr)
    assert "--base-dir" in installed.run("serve", "--help").stdout
    for args, message in [(("bogus",), "invalid choice: 'bogus'"),
                          (("serve", "--port", "70000"), "--port must be between 1 and 65535"),
                          (("serve", "--base-dir", str(tmp_path / "absent")), "does not exist"),
                          (("watch",), "error:"),
                          (("svd",), "error:")]:
        res = installed.run(*args)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    res = installed.run("enable", str(tmp_path / "nope.py"))
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr


TINY_TRAIN = r'''
"""A user's training script outside any checkout: tiny GPT-2 from config, random tokens, a real Trainer."""
import sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=64, n_layer=2, n_head=2))
data = [{"input_ids": (ids := torch.randint(0, 64, (16,))), "labels": ids} for _ in range(32)]
args = TrainingArguments(output_dir=sys.argv[1], max_steps=6, per_device_train_batch_size=4, logging_steps=1,
                         save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:8])
trainer.train()
'''


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_installed_enable_then_a_real_trainer_writes_the_run_dir(installed: Installed) -> None:
    """`trainboard enable train.py` inserts the public import only; the patched script trains in the venv
    (no checkout anywhere on its path) and writes <output_dir>/trainboard."""
    script = installed.work / "train.py"
    script.write_text(TINY_TRAIN)
    res = installed.run("enable", str(script))
    assert res.returncode == 0 and "trainboard enable --undo" in res.stdout, res.stderr
    patched = script.read_text()
    assert "from trainboard import MonitorCallback, SamplesConfig" in patched
    assert str(REPO) not in patched and str(installed.root / "src") not in patched and "insert(" not in patched
    out_dir = installed.work / "hf-out"
    res = _run([str(installed.python), str(script), str(out_dir)], cwd=installed.work, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    paths = rf.RunPaths.of(out_dir / "trainboard")
    status, problem = rf.read_json(paths.status)
    assert problem is None and status["state"] == "finished" and status["step"] == 6
    assert len([r for r in rf.iter_records(paths.metrics) if r["kind"] == "train"]) == 6


class Served:
    """``trainboard <command> ...`` of the venv as a real process on a free port, from the temp folder."""

    def __init__(self, installed: Installed, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = installed.root / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([str(installed.trainboard), *args, "--port", str(self.port)], cwd=installed.work,
                                     env=_env(), stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.url, proc=self.proc)
        except Exception:
            self.stop()
            raise AssertionError(f"trainboard {' '.join(args)} did not serve: {self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()


@pytest.fixture
def served(installed: Installed) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        s.stop()


def _header_background(page, url: str) -> str:
    page.goto(url, wait_until="load")
    page.locator(".header").wait_for(timeout=60_000)
    page.get_by_text("Overview", exact=True).first.wait_for(timeout=60_000)
    return page.evaluate("() => getComputedStyle(document.querySelector('.header')).backgroundColor")


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_installed_serve_is_styled_from_any_folder(installed: Installed, served: list[Served], page) -> None:
    base = installed.root / "runs-served"
    base.mkdir()
    srv = Served(installed, "serve", "--base-dir", str(base))
    served.append(srv)
    assert _header_background(page, srv.url) == NAV_BACKGROUND, srv.log()[-2000:]
    css = page.evaluate("() => [...document.styleSheets].map(s => s.href || '').filter(h => h.includes('/assets/'))")
    assert any(h.split("?")[0].endswith("/assets/base.css") for h in css), css
    save_screenshot(page, "package-installed-serve.png")
    assert_no_console_errors(page)
    srv.stop()

    # the same assertion fails when the wheel ships no assets: take them away and serve again
    assets = installed.package_dir / "assets"
    hidden = installed.root / "assets-hidden"
    assets.rename(hidden)
    try:
        bare = Served(installed, "serve", "--base-dir", str(base))
        served.append(bare)
        assert _header_background(page, bare.url) != NAV_BACKGROUND
        bare.stop()
    finally:
        hidden.rename(assets)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_installed_demo_starts_its_training_subprocess(installed: Installed, served: list[Served]) -> None:
    """``trainboard demo`` launches ``python -m trainboard.collectors.demo`` (the rewritten module path):
    the training finishes in the venv and writes every feature's files, spectral metrics included."""
    base = installed.root / "runs-demo"
    srv = Served(installed, "demo", "--demo-steps", "20", "--base-dir", str(base))
    served.append(srv)
    deadline = time.monotonic() + 600
    status: dict = {}
    while time.monotonic() < deadline:
        runs = rf.discover_runs(base)
        if runs:
            status = rf.read_json(rf.RunPaths.of(runs[0]).status)[0] or {}
            if status.get("state") in ("finished", "crashed"):
                break
        if srv.proc.poll() is not None:
            break
        time.sleep(1)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in base.rglob("demo_training.log"))
    assert status.get("state") == "finished", f"status {status}; server {srv.log()[-1500:]}; training {logs}"
    (run,) = rf.discover_runs(base)
    assert list(rf.iter_records(rf.RunPaths.of(run).spectral)), "the demo wrote no spectral metrics"
