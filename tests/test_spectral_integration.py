"""A real demo training (Trainer, tiny GPT-2, CPU) with spectral metrics on, end to end: training → spectral.jsonl
and printed lines → the spectral monitor CLI reading both."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors.spectral import parse_line

ROOT = Path(__file__).resolve().parents[1]
STEPS, INTERVAL = 40, 10
LAYERS = {"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
          "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
             PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    return e


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_demo_training_with_spectral_on(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    log = tmp_path / "training.log"
    with log.open("w") as fh:
        res = subprocess.run([sys.executable, "-m", "collectors.demo", "--base-dir", str(run), "--max-steps", str(STEPS),
                              "--logging-steps", "10", "--eval-steps", str(STEPS), "--spectral",
                              "--svd-interval", str(INTERVAL)],
                             cwd=ROOT, env=env(), stdout=fh, stderr=subprocess.PIPE, text=True, timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]

    recs = list(rf.iter_records(rf.RunPaths.of(run).spectral))
    assert {r["layer"] for r in recs} == LAYERS
    steps = sorted({r["step"] for r in recs})
    # every 10 steps; the cost budget may stretch the interval on a very busy machine, never before the 2nd
    assert steps[:2] == [INTERVAL, 2 * INTERVAL] and all(x % INTERVAL == 0 for x in steps)
    assert len(recs) == len(LAYERS) * len(steps)
    for r in recs:
        side = min(r["shape"])
        assert r["shape"] in ([192, 64], [64, 64])  # Conv1D transposed to out × in
        assert 0.0 < r["principal_alignment"] <= 1.0, r  # gradients were present (on_pre_optimizer_step)
        assert 0.0 <= r["minor_alignment"] <= 1.0
        # span(U_k) and the complement of span(U_r) are disjoint when r ≥ k: the squared shares sum to ≤ 1
        assert r["principal_alignment"] ** 2 + r["minor_alignment"] ** 2 <= 1.0 + 1e-6 or r["r"] < r["k"]
        assert 1 <= r["r"] <= side and 0.0 <= r["reconstruction_error"] < 0.01
        assert r["k"] == math.ceil(0.1 * side) and r["method"] == "full"
        assert 0.0 < r["seconds"] < 5.0
    later = [r for r in recs if r["step"] > INTERVAL]
    assert all(0.0 <= r["subspace_angle"] <= math.pi / 2 for r in later)
    assert all(math.isnan(r["subspace_angle"]) for r in recs if r["step"] == INTERVAL)
    assert any(r["subspace_angle"] > 1e-4 for r in later)  # the weights move, so the subspaces do

    # the printed lines carry the same numbers
    printed = [m for m in map(parse_line, log.read_text(encoding="utf-8").splitlines()) if m is not None]
    assert len(printed) == len(recs)
    by_key = {(r["step"], r["layer"]): r for r in recs}
    for m in printed:
        assert m.principal_alignment == pytest.approx(by_key[(m.step, m.layer_name)]["principal_alignment"], rel=1e-5)
    # the watcher reads the training's log and its run dir alike
    for args in (["--log-file", str(log)], ["--run-dir", str(run)]):
        cli = subprocess.run([sys.executable, "-m", "collectors.spectral.monitor", *args], cwd=ROOT, env=env(),
                             capture_output=True, text=True, encoding="utf-8", timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.count("\nStep ") == len(recs)
        assert all(name in cli.stdout for name in LAYERS) and f"Latest step: {STEPS}" in cli.stdout
    for a in rf.iter_records(rf.RunPaths.of(run).alerts):
        if a.get("category") == "spectral":
            assert a["metadata"]["layer"] in LAYERS and a["severity"] in ("medium", "low")
