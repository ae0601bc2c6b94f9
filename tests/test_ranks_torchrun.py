"""Issue 13's proof, with real processes: torchrun over two "nodes" on 127.0.0.1 (gloo, CPU, a tiny GPT-2,
the real Trainer), a straggler, a NaN on one non-zero rank, a rank killed with SIGKILL, a data loader that
blocks, and a Trainer output dir whose training was killed.

Each training is as small as these claims allow (one layer, 32 dims, batch 4, a few dozen steps).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors.ranks import world_info
from services.catalog import RunCatalog
from services.model import STALE_AFTER_S, STALLED
from services.ranks import ranks_view, reader_for
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "ranks_train.py"
RUN_TIMEOUT_S = 420


def _env(**extra: object) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def launch_two_nodes(out: Path, **extra: object) -> list[subprocess.Popen]:
    """Two node launchers (``--nnodes 2 --node_rank 0/1 --nproc_per_node 2``) on 127.0.0.1: four ranks."""
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port), str(SCRIPT), str(out)]
        log = open(out.parent / f"{out.name}-node{node}.log", "wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(**extra),
                                      start_new_session=True))
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            codes.append(-999)
    return codes


def logs(out: Path) -> str:
    return "\n".join((out.parent / f"{out.name}-node{n}.log").read_text(errors="replace")[-3000:] for n in (0, 1))


def alerts_of(run: Path) -> list[dict]:
    return list(rf.iter_records(rf.RunPaths.of(run).alerts)) if rf.RunPaths.of(run).alerts.exists() else []


@pytest.fixture(scope="module")
def four_rank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-node × 2-process training: rank 3 sleeps 0.3 s at each step; rank 1's loss is NaN from step 5."""
    out = tmp_path_factory.mktemp("ranks") / "faults"
    out.mkdir()
    procs = launch_two_nodes(out, TB_STRAGGLER_RANK=3, TB_STRAGGLER_S=0.3, TB_NAN_RANK=1, TB_NAN_STEP=5,
                             TB_MAX_STEPS=24, TB_LOG_STEPS=2)
    codes = wait_all(procs, RUN_TIMEOUT_S)
    assert codes == [0, 0], logs(out)
    return out


def test_two_nodes_write_one_run_dir_with_four_ranks_health(four_rank_run: Path) -> None:
    run = four_rank_run / "run"
    paths = rf.RunPaths.of(run)
    assert sorted(p.name for p in paths.ranks_dir.iterdir()) == [f"rank-{r}.jsonl" for r in range(4)]
    by_rank = {r: [rec for rec in rf.iter_records(paths.rank_file(r)) if not rec.get("final")] for r in range(4)}
    for r, recs in by_rank.items():
        assert recs and all(rec["rank"] == r for rec in recs)
        last = recs[-1]
        assert last["step"] == 24 and last["steps"] == 2 and last["rss_gb"] > 0
        assert last["step_time_s"] > 0 and last["work_s"] > 0 and last["data_wait_s"] >= 0
        assert last["node"] == r // 2 and last["local_rank"] == r % 2
    # one coherent run dir: status and metrics written by world rank 0 only (node 1's local rank 0 is rank 2)
    status, _ = rf.read_json(paths.status)
    assert status["pid"] == by_rank[0][0]["pid"] != by_rank[2][0]["pid"]
    assert status["state"] == "finished"
    assert status["world"] == {**status["world"], "world_size": 4, "nodes": 2, "ranks_per_node": 2, "backend": "gloo"}
    assert {k: status["config"][k] for k in ("world_size", "nodes", "ranks_per_node", "backend")} == \
        {"world_size": 4, "nodes": 2, "ranks_per_node": 2, "backend": "gloo"}
    history = json.loads((four_rank_run / "log_history.json").read_text())
    metrics = [json.loads(line) for line in paths.metrics.read_bytes().splitlines()]
    assert len(metrics) == len(history)  # no rank but 0 appended: no duplicates
    assert set(p.name for p in run.iterdir()) <= {"logs", "status", "ranks", "snapshots"}
    # the dashboard's reading of the same files
    reader = reader_for(run)
    assert reader.poll()
    view = ranks_view(reader, status, time.time())
    assert view.multi and [r.rank for r in view.rows] == [0, 1, 2, 3] and not view.missing
    assert view.slowest is not None and view.slowest["rank"] == 3


def test_straggler_alert_names_the_sleeping_rank(four_rank_run: Path) -> None:
    stragglers = [a for a in alerts_of(four_rank_run / "run") if a["rule"] == "straggler"]
    assert stragglers, logs(four_rank_run)
    assert {a["metadata"]["rank"] for a in stragglers} == {3}
    a = stragglers[0]
    assert a["message"].startswith("Rank 3") and a["metadata"]["ratio"] > 1.5 and a["source"] == "collector"


def test_nan_on_one_nonzero_rank_fires_rank_non_finite(four_rank_run: Path) -> None:
    found = [a for a in alerts_of(four_rank_run / "run") if a["rule"] == "rank_non_finite"]
    assert [a["metadata"]["rank"] for a in found] == [1] and found[0]["severity"] == "critical"
    assert found[0]["step"] >= 5
    # rank 0's own logged loss stayed finite (Trainer filtered rank 1's NaN out of the average)
    history = json.loads((four_rank_run / "log_history.json").read_text())
    assert all(h["loss"] == h["loss"] for h in history if "loss" in h)


def test_killing_a_nonzero_rank_fails_training_without_hanging_the_others(tmp_path: Path) -> None:
    out = tmp_path / "kill"
    out.mkdir()
    ddp_timeout = 30
    procs = launch_two_nodes(out, TB_MAX_STEPS=100000, TB_LOG_STEPS=1, TB_DDP_TIMEOUT=ddp_timeout, TB_SILENT_S=4)
    rank2 = rf.RunPaths.of(out / "run").rank_file(2)
    deadline = time.time() + 300
    pid = None
    while time.time() < deadline and pid is None:
        recs = [r for r in rf.iter_records(rank2)] if rank2.exists() else []
        if len(recs) >= 3:
            pid = recs[-1]["pid"]
        time.sleep(0.5)
    assert pid is not None, logs(out)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    codes = wait_all(procs, ddp_timeout + 120)
    took = time.time() - killed_at
    assert all(c not in (0, -999) for c in codes), (codes, logs(out))
    # never longer than torch.distributed's own timeout (plus the launchers' shutdown)
    assert took < ddp_timeout + 90, took
    status, _ = rf.read_json(rf.RunPaths.of(out / "run").status)
    silent = [a for a in alerts_of(out / "run") if a["rule"] == "rank_silent"]
    assert status["state"] == "crashed" or any(a["metadata"]["rank"] == 2 for a in silent), (status, silent)


def _single(out: Path, **extra: object) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "wb")
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out)], stdout=log, stderr=subprocess.STDOUT,
                            env=_env(**extra))


def test_a_blocked_data_loader_is_shown_stalled_and_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stall_min = 8.0
    monkeypatch.setenv("TRAINBOARD_STALL_MIN_S", str(stall_min))  # the dashboard's side of the same rule
    out = tmp_path / "stall"
    out.mkdir()
    marker = tmp_path / "stall-began"
    proc = _single(out, TB_MAX_STEPS=14, TB_LOG_STEPS=1, TB_STALL_STEP=8, TB_STALL_S=25, TB_STALL_MIN_S=stall_min,
                   TB_STALL_MARKER=marker, TRAINBOARD_STALL_MIN_S=stall_min)
    try:
        catalog: RunCatalog | None = None
        seen: dict[str, float] = {}
        deadline = time.time() + RUN_TIMEOUT_S
        while time.time() < deadline and proc.poll() is None:
            if catalog is None and rf.RunPaths.of(out / "run").status.exists():
                catalog = RunCatalog(out / "run", poll=True)
            run = catalog.get(catalog.default_run()) if catalog is not None else None
            if run is not None:
                run.refresh()
                state = run.state()
                seen.setdefault(state, time.time())
                if state != STALLED and STALLED in seen:
                    seen.setdefault("recovered", time.time())
            time.sleep(0.5)
        assert proc.wait(timeout=120) == 0, (out.parent / "stall.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    began = float(marker.read_text())
    assert STALLED in seen, seen
    # shown within the documented time: max(5 × typical log interval, min) after the last step, plus polling
    assert seen[STALLED] - began < stall_min + 10, (seen, began)
    assert "recovered" in seen and seen["recovered"] - began > stall_min, seen
    stalled = [a for a in alerts_of(out / "run") if a["rule"] == "stalled"]
    assert len(stalled) == 1 and stalled[0]["severity"] == "high"  # the collector's watchdog: a notification goes out
    status, _ = rf.read_json(rf.RunPaths.of(out / "run").status)
    assert status["state"] == "finished" and status["stalled_since"] is None
    assert not rf.RunPaths.of(out / "run").ranks_dir.exists()  # one process: no rank files


def test_killed_trainer_output_dir_is_stopped_not_stalled_forever(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain Trainer output dir (no collector) whose training was killed with SIGKILL after a checkpoint."""
    monkeypatch.setenv("TRAINBOARD_STALL_MIN_S", "5")
    out = tmp_path / "hfkill"
    script = f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from transformers import Trainer
from collectors.demo import build_demo, training_arguments
s = build_demo(seed=0, n_train=4000, n_eval=8, n_layer=1, n_embd=32)
a = training_arguments({str(out)!r}, 100000, logging_steps=1, eval_strategy="no", save_strategy="steps", save_steps=3,
                       batch_size=4)
Trainer(model=s.model, args=a, train_dataset=s.train).train()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    catalog = RunCatalog(out)
    run = catalog.get(catalog.default_run())
    run.refresh()
    now = time.time()
    assert run.state(now) in ("training", STALLED)
    assert run.state(now + 10) == STALLED  # no step for longer than the limit, files still recent
    assert run.state(now + STALE_AFTER_S + 10) == "stopped"  # and then stopped, not stalled forever


def test_world_info_under_torchrun_variables() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
           "GROUP_WORLD_SIZE": "2"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        w = world_info()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert (w.rank, w.world_size, w.local_rank, w.ranks_per_node, w.node_rank, w.nodes) == (3, 4, 1, 2, 1, 2)


@pytest.mark.browser
def test_browser_ranks_panel_on_the_four_rank_run(four_rank_run: Path, dashboard, page) -> None:
    from tests.conftest import assert_no_console_errors, save_screenshot

    srv = dashboard(four_rank_run / "run")
    page.goto(srv.url + "/", wait_until="load")
    page.get_by_text("Slowest now: rank 3").wait_for(timeout=60_000)
    page.get_by_text("Non-finite values: rank 1").wait_for(timeout=30_000)
    page.get_by_text("4 ranks reporting").wait_for(timeout=30_000)
    js = ("() => { const g = document.querySelector('#overview-ranks-graph .js-plotly-plot');"
          " return g && g.data && g.data.length ? g.data[0].y : null; }")
    page.wait_for_function(f"({js})() !== null", timeout=30_000)
    rows = page.evaluate(js)
    assert rows == ["rank 0", "rank 1", "rank 2", "rank 3"]
    assert page.locator("#overview-ranks-table tbody tr").count() == 4
    save_screenshot(page, "ranks-panel.png")
    assert_no_console_errors(page)
