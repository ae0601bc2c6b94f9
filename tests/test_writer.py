"""The collector's writer thread (issue 12): nothing logged is lost, a full queue drops only statuses, a
full disk leaves whole lines only.

Real processes and real signals: a training script is started in a subprocess, logs, and ends by
``close()``, by an uncaught exception, by SIGTERM/SIGINT (with and without a handler of its own) or by
``kill -9``; the files are read afterwards. The full disk is a real 1 MiB tmpfs (the test is skipped, saying
why, where mounting is not allowed). No timing asserts: the only sleep is the kill -9 window itself.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from collectors import Monitor, runformat as rf
from collectors.runtime import Guard
from collectors.writer import KILL_WINDOW_S, RunWriter
from tests.conftest import default_sigint

REPO = Path(__file__).resolve().parents[1]
N_RECORDS = 50
SCRIPT_TIMEOUT_S = 120


def metrics_lines(run: Path) -> list[bytes]:
    path = rf.RunPaths.of(run).metrics
    return path.read_bytes().splitlines() if path.exists() else []


def steps_on_disk(run: Path) -> list[int]:
    return [r["step"] for r in rf.iter_records(rf.RunPaths.of(run).metrics)]


def status_of(run: Path) -> dict:
    doc, problem = rf.read_json(rf.RunPaths.of(run).status)
    assert doc is not None, problem
    return doc


def start_training(run: Path, ending: str, *, before: str = "") -> subprocess.Popen:
    """A plain loop in a subprocess: ``before`` (top-level code), then N_RECORDS logged steps (the last one
    just before ``ending``), ``logged`` printed, then ``ending`` (top-level code)."""
    script = "\n".join([
        "import os, signal, sys, time",
        f"sys.path.insert(0, {str(REPO)!r})",
        "from collectors import Monitor",
        before,
        f"mon = Monitor(base_dir={str(run)!r})",
        f"for step in range(1, {N_RECORDS} + 1):",
        "    mon.log(step, loss=1.0 / step, grad_norm=0.5, lr=1e-3)",
        "print('logged', flush=True)",
        ending,
    ])
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=default_sigint)


def wait_logged(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "logged", f"the training script failed: {line!r} {proc.stderr.read() if proc.stderr else ''}"


# --------------------------------------------------------------------------- nothing is lost

@pytest.mark.parametrize("ending,state,rc", [
    ("mon.close()", "finished", 0),
    ("raise ValueError('died here')", "crashed", 1),
    ("sys.exit(0)", "crashed", 0),
], ids=["close", "exception", "exit-before-close"])
def test_last_record_is_on_disk_after_close_exception_and_exit(tmp_path: Path, ending: str, state: str, rc: int) -> None:
    proc = start_training(tmp_path, ending)
    wait_logged(proc)
    assert proc.wait(SCRIPT_TIMEOUT_S) == rc
    assert steps_on_disk(tmp_path) == list(range(1, N_RECORDS + 1))
    status = status_of(tmp_path)
    assert status["state"] == state and status["step"] == N_RECORDS
    if "died here" in ending:
        assert "died here" in status["error"]


def test_sigterm_flushes_then_dies_of_the_signal(tmp_path: Path) -> None:
    proc = start_training(tmp_path, "time.sleep(600)")
    wait_logged(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(SCRIPT_TIMEOUT_S) == -signal.SIGTERM  # not swallowed: the process died of it
    assert steps_on_disk(tmp_path) == list(range(1, N_RECORDS + 1))
    status = status_of(tmp_path)
    assert status["state"] == "crashed" and "SIGTERM" in status["error"]


def test_sigterm_chains_to_the_trainings_own_handler(tmp_path: Path) -> None:
    """A launcher's handler set before the Monitor still runs (after the flush), and decides the exit."""
    marker = tmp_path / "handler-ran"
    before = (f"def own(sig, frame):\n    open({str(marker)!r}, 'w').write('yes')\n    sys.exit(3)\n"
              "signal.signal(signal.SIGTERM, own)")
    proc = start_training(tmp_path / "run", "time.sleep(600)", before=before)
    wait_logged(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(SCRIPT_TIMEOUT_S) == 3
    assert marker.read_text() == "yes"
    assert steps_on_disk(tmp_path / "run") == list(range(1, N_RECORDS + 1))
    assert status_of(tmp_path / "run")["state"] == "crashed"  # sys.exit before close(): the exit hook says so


def test_sigint_flushes_and_still_raises_keyboard_interrupt(tmp_path: Path) -> None:
    proc = start_training(tmp_path, "time.sleep(600)")
    wait_logged(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
    assert "KeyboardInterrupt" in err and proc.returncode in (1, -signal.SIGINT)  # not swallowed
    assert steps_on_disk(tmp_path) == list(range(1, N_RECORDS + 1))
    assert status_of(tmp_path)["state"] == "crashed"


def test_kill_9_loses_at_most_the_documented_window(tmp_path: Path) -> None:
    """Records logged more than ``KILL_WINDOW_S`` before a kill -9 are on disk, and whole."""
    proc = start_training(tmp_path, "time.sleep(600)")
    wait_logged(proc)
    time.sleep(KILL_WINDOW_S * 3)  # the window itself, with room for a loaded machine
    proc.kill()
    proc.wait(SCRIPT_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    assert steps_on_disk(tmp_path) == list(range(1, N_RECORDS + 1))
    assert all(line.endswith(b"}") for line in metrics_lines(tmp_path))
    assert status_of(tmp_path)["step"] == N_RECORDS  # the status too was written within the window


def test_flush_and_status_counters_in_process(tmp_path: Path) -> None:
    mon = Monitor(tmp_path, anomaly=False)
    for step in range(1, 11):
        mon.log(step, loss=1.0)
    assert mon.flush()
    assert steps_on_disk(tmp_path) == list(range(1, 11))
    mon.close()
    writer = status_of(tmp_path)["writer"]
    assert writer["records_written"] == 10 and writer["records_lost"] == 0 and writer["status_dropped"] == 0


# --------------------------------------------------------------------------- a full queue

class GatedWriter(rf.JsonlWriter):
    """A real JSONL file whose first write waits for ``gate``: a disk that stalls while the training logs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def append_lines(self, lines: list[bytes]) -> None:
        self.entered.set()
        self.gate.wait(SCRIPT_TIMEOUT_S)
        super().append_lines(lines)


def test_full_queue_drops_the_oldest_status_never_a_record(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    writer = RunWriter(paths.status, guard=Guard(), max_items=10, flush_interval_s=0.01)
    sink = GatedWriter(paths.metrics)
    writer.start()
    writer.append(sink, rf.make_record("train", step=0, loss=1.0))
    assert sink.entered.wait(SCRIPT_TIMEOUT_S)  # the thread is stuck writing: the queue fills up
    for step in range(1, 6):
        writer.status({"state": "training", "step": step})
        writer.append(sink, rf.make_record("train", step=step, loss=1.0))
    assert writer.stats()["queued"] == 10 and writer.status_dropped == 0
    for step in range(6, 11):  # each of these drops the oldest queued status (five of them)
        writer.append(sink, rf.make_record("train", step=step, loss=1.0))
    assert writer.status_dropped == 5 and writer.room_waits == 0
    late = threading.Thread(target=writer.append, args=(sink, rf.make_record("train", step=11, loss=1.0)))
    late.start()  # no status left to drop: this one waits for room, it is not dropped
    while writer.room_waits == 0 and late.is_alive():
        time.sleep(0.01)
    sink.gate.set()
    late.join(SCRIPT_TIMEOUT_S)
    writer.status({"state": "finished", "step": 11}, urgent=True)
    assert writer.close()
    assert steps_on_disk(tmp_path) == list(range(0, 12))
    status = status_of(tmp_path)
    assert status["state"] == "finished" and status["writer"]["status_dropped"] == 5
    assert status["writer"]["room_waits"] >= 1


# --------------------------------------------------------------------------- whole lines on disk

def test_a_partial_last_line_is_kept_apart_from_the_next_record(tmp_path: Path) -> None:
    """A writer killed mid-line left no newline: the next record starts a line of its own."""
    path = tmp_path / "m.jsonl"
    path.write_bytes(rf.dumps(rf.make_record("train", step=1, loss=1.0)) + b"\n" + b'{"v":1,"kind":"tra')
    with rf.JsonlWriter(path) as w:
        w.append(rf.make_record("train", step=2, loss=2.0))
    res = rf.read_new(path, 0)
    assert [r["step"] for r in res.records] == [1, 2] and res.bad_lines == 1


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root and mount permission): {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root and mount permission): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (64 << 10, 4 << 10, 256, 16, 1):
            while True:
                try:
                    fh.write(b"x" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return filler


def test_full_disk_leaves_whole_lines_and_counts_the_loss_once(tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tiny_disk / "run"
    pad = "p" * 300  # records of ~400 bytes: a full disk cuts one in the middle
    with caplog.at_level("WARNING", logger="trainboard"):
        mon = Monitor(run, anomaly=False)
        for step in range(1, 21):
            mon.log(step, loss=1.0, note=pad)
        assert mon.flush()
        filler = fill(tiny_disk)
        for step in range(21, 61):  # the disk is full: these cannot all be written
            mon.log(step, loss=1.0, note=pad)
        mon.flush()
        for line in metrics_lines(run):  # no partial line, even now
            json.loads(line)
        filler.unlink()  # space returns
        for step in range(61, 71):
            mon.log(step, loss=1.0, note=pad)
        mon.close()
    lines = metrics_lines(run)
    steps = [json.loads(line)["step"] for line in lines]  # every line parses
    assert steps[:20] == list(range(1, 21)) and steps[-10:] == list(range(61, 71))
    lost = 40 - sum(1 for s in steps if 21 <= s <= 60)
    assert lost > 0
    status = status_of(run)
    assert status["writer"]["records_lost"] == lost and status["step"] == 70
    reports = [r for r in caplog.records if "not written to metrics.jsonl" in r.getMessage()]
    assert len(reports) == 1


# --------------------------------------------------------------------------- the rules: either thread runs them

def test_record_hooks_run_once_each_in_order_whichever_thread_runs_them(tmp_path: Path) -> None:
    """The training thread runs the queued records' hooks itself before its weights change (``run_hooks``)
    while the writer thread runs them too at its looks: every record's hooks run exactly once, in order."""
    seen: list[tuple[int, str]] = []
    writer = RunWriter(tmp_path / "status.json", guard=Guard())
    writer.record_hooks = [lambda rec: seen.append((rec["step"], threading.current_thread().name))]
    sink = rf.JsonlWriter(tmp_path / "metrics.jsonl")
    writer.start()
    for step in range(1, 3001):
        writer.append(sink, rf.make_record(rf.RecordKind.TRAIN, step=step, time=0.0, loss=1.0))
        if step % 3 == 0:
            writer.run_hooks()  # what the optimizer-step hook does
            assert writer.jobs_pending == 0
        elif step % 500 == 0:
            time.sleep(0.3)  # leave some to the writer thread's looks (its first one comes within 0.25 s)
    assert writer.wait_jobs(SCRIPT_TIMEOUT_S) and writer.close()
    assert [s for s, _ in seen] == list(range(1, 3001))
    threads = {name for _, name in seen}
    assert threading.current_thread().name in threads and "trainboard-writer" in threads
    assert writer.stats()["records_written"] == 3000


def test_the_writer_does_not_poll_for_record_hooks_and_runs_them_at_its_next_pass(tmp_path: Path) -> None:
    """Queued hooks do not wake the writer thread: it passes only to write (each wake-up takes the GIL from a
    training's forward), so the training thread finds them waiting before its weights change; a writer
    left alone runs them at its next pass, within its flush interval."""
    passes = [0]
    seen: list[str] = []

    def counting(writer: RunWriter) -> None:
        drain = writer._drain

        def counted() -> bool:
            passes[0] += 1
            return drain()
        writer._drain = counted  # type: ignore[method-assign]

    slow = RunWriter(tmp_path / "a.json", guard=Guard(), flush_interval_s=30.0)
    slow.record_hooks = [lambda rec: seen.append(threading.current_thread().name)]
    counting(slow)
    slow.start()
    sink = rf.JsonlWriter(tmp_path / "a.jsonl")
    for step in range(1, 11):
        slow.append(sink, rf.make_record(rf.RecordKind.TRAIN, step=step, time=0.0, loss=1.0))
        time.sleep(0.03)  # a 30 ms step: six looks of the old 5 ms poll each
    assert passes[0] <= 1 and slow.jobs_pending == 10 and seen == []
    slow.run_hooks()  # the optimizer-step hook
    assert seen == [threading.current_thread().name] * 10 and slow.jobs_pending == 0
    assert slow.close() and slow.stats()["records_written"] == 10

    seen.clear()
    alone = RunWriter(tmp_path / "b.json", guard=Guard(), flush_interval_s=0.1)
    alone.record_hooks = [lambda rec: seen.append(threading.current_thread().name)]
    counting(alone)
    passes[0] = 0
    alone.start()
    sink = rf.JsonlWriter(tmp_path / "b.jsonl")
    started = time.monotonic()
    for step in range(1, 34):  # ~1 s of 30 ms steps: ~10 passes of 0.1 s, where a 5 ms poll made ~200
        alone.append(sink, rf.make_record(rf.RecordKind.TRAIN, step=step, time=0.0, loss=1.0))
        time.sleep(0.03)
    elapsed = time.monotonic() - started
    assert passes[0] <= 2 * elapsed / 0.1 + 3, (passes[0], elapsed)
    deadline = time.monotonic() + SCRIPT_TIMEOUT_S
    while alone.jobs_pending and time.monotonic() < deadline:  # nobody waits (wait_jobs would wake it)
        time.sleep(0.01)
    assert seen == ["trainboard-writer"] * 33
    assert alone.close()


def test_a_hook_that_reenters_run_hooks_returns_at_once(tmp_path: Path) -> None:
    """A flush from inside a hook (a signal handler interrupting the training thread's ``run_hooks``)
    must not deadlock on the hook lock."""
    writer = RunWriter(tmp_path / "status.json", guard=Guard())
    calls: list[int] = []

    def hook(rec: dict) -> None:
        calls.append(rec["step"])
        writer.run_hooks()  # re-entry: returns, the outer call goes on with the next record

    writer.record_hooks = [hook]
    sink = rf.JsonlWriter(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        writer.append(sink, rf.make_record(rf.RecordKind.TRAIN, step=step, time=0.0, loss=1.0))
    done = threading.Thread(target=writer.run_hooks)
    done.start()
    done.join(SCRIPT_TIMEOUT_S)
    assert not done.is_alive() and calls == [1, 2, 3] and writer.jobs_pending == 0
    writer.close()


def test_the_forward_hook_leaves_the_verdicts_to_the_optimizer_step_when_that_is_hooked(tmp_path: Path) -> None:
    """With the optimizer hooked the forward pass does not wait for (or run) the rules: the forward and
    backward between a log and the optimizer's step are the writer thread's time. With the model alone,
    the forward is the last point before the weights change, and acts."""
    torch = pytest.importorskip("torch")
    calls: list[str] = []
    for name, with_opt in (("model+optimizer", True), ("model alone", False)):
        model = torch.nn.Linear(3, 1)
        mon = Monitor(tmp_path / name.replace(" ", "_"), anomaly=False)
        mon._before_weights_change = lambda name=name: calls.append(name)  # type: ignore[method-assign]
        mon.watch(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1) if with_opt else None)
        model(torch.ones(2, 3))
        mon.close()
    assert calls == ["model alone"]
