"""The in-training spectral collector on real tiny models in plain PyTorch loops (real files, real gradients)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from collectors import Monitor
from collectors import runformat as rf
from collectors.spectral import measure
from collectors.spectral.plugin import (DEFAULT_LAYER_PATTERN, SpectralConfig, SpectralPlugin, find_layers,
                                           make_spectral_plugin)
from collectors.spectral import SwitchThresholds, parse_line

VOCAB, SEQ = 97, 16


def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=SEQ))


class LlamaLikeAttention(torch.nn.Module):
    def __init__(self, d: int = 24) -> None:
        super().__init__()
        self.q_proj = torch.nn.Linear(d, d, bias=False)
        self.k_proj = torch.nn.Linear(d, d // 2, bias=False)
        self.v_proj = torch.nn.Linear(d, d // 2, bias=False)
        self.o_proj = torch.nn.Linear(d, d, bias=False)
        self.gate = torch.nn.Linear(d, d)


def train(monitor: Monitor, model: torch.nn.Module, steps: int, *, pre_hook: bool = True) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        x = torch.randint(0, VOCAB, (4, SEQ), generator=g)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        if pre_hook:
            monitor.pre_optimizer_step(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        monitor.log(step, loss=loss.item())
        monitor.step_end(step)


def spectral_records(run: Path) -> list[dict[str, Any]]:
    return list(rf.iter_records(rf.RunPaths.of(run).spectral))


def alert_records(run: Path) -> list[dict[str, Any]]:
    return list(rf.iter_records(rf.RunPaths.of(run).alerts))


# --------------------------------------------------------------------------- layer selection

def test_default_filter_picks_gpt2_attention_conv1d_and_not_the_mlp() -> None:
    layers = find_layers(gpt2())
    assert [layer.name for layer in layers] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                                "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"]
    assert all(layer.transposed for layer in layers)  # Conv1D stores in × out


def test_default_filter_picks_llama_style_linear_projections() -> None:
    model = torch.nn.ModuleDict({"self_attn": LlamaLikeAttention()})
    layers = find_layers(model, DEFAULT_LAYER_PATTERN)
    assert [layer.name for layer in layers] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                "self_attn.o_proj"]
    assert not any(layer.transposed for layer in layers)


def test_conv1d_is_measured_as_out_by_in(tmp_path: Path) -> None:
    model = gpt2()
    plugin = SpectralPlugin(svd_interval=1, echo=False)
    mon = Monitor(tmp_path / "run", plugins=[plugin]).watch(model)
    x = torch.randint(0, VOCAB, (2, SEQ))
    model(input_ids=x, labels=x).loss.backward()
    mon.pre_optimizer_step(1)
    mon.close()
    conv = model.transformer.h[0].attn.c_attn
    expect = measure(conv.weight.detach().T, conv.weight.grad.T)
    rec = next(r for r in spectral_records(tmp_path / "run") if r["layer"] == "transformer.h.0.attn.c_attn")
    assert rec["shape"] == [96, 32]  # out × in (Conv1D weight is 32 × 96)
    assert rec["principal_alignment"] == pytest.approx(expect.principal_alignment, abs=1e-6)
    assert rec["r"] == expect.r and rec["k"] == expect.k


# --------------------------------------------------------------------------- plain loop

def test_plain_loop_writes_sane_records_lines_and_alerts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    model = gpt2()
    # cost_budget 0: this tiny model's steps are so short that the budget would stretch the interval
    with Monitor(run, spectral={"svd_interval": 3, "cost_budget": 0}).watch(model) as mon:
        train(mon, model, 9)
    recs = spectral_records(run)
    assert sorted({r["step"] for r in recs}) == [3, 6, 9]
    assert len(recs) == 3 * 4
    for r in recs:
        assert 0.0 <= r["principal_alignment"] <= 1.0 and 0.0 <= r["minor_alignment"] <= 1.0
        assert 1 <= r["r"] <= min(r["shape"]) and 0.0 <= r["reconstruction_error"] < 0.01
        assert r["seconds"] > 0 and r["method"] == "full" and r["mode_source"] == "recommended"
        assert r["thresholds"]["principal_danger"] == 0.4
    first = [r for r in recs if r["step"] == 3]
    assert all(math.isnan(r["subspace_angle"]) for r in first)  # nothing to compare with yet
    later = [r for r in recs if r["step"] == 9]
    assert all(0.0 <= r["subspace_angle"] <= math.pi / 2 for r in later)
    out = capsys.readouterr().out
    parsed = [m for m in map(parse_line, out.splitlines()) if m is not None]
    assert len(parsed) == 12 and {m.layer_name for m in parsed} == {r["layer"] for r in recs}
    assert "SVD MONITORING SUMMARY" in out  # printed at close
    for a in (a for a in alert_records(run) if a["category"] == "spectral"):  # anomaly rules write here too
        assert a["severity"] in ("medium", "low") and a["metadata"]["layer"] in {r["layer"] for r in recs}
        assert {"rule", "step", "value", "threshold", "message", "metadata"} <= set(a)


def test_alerts_are_written_when_they_start_firing_not_every_measurement(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = gpt2()
    # danger at 0.01: every layer clobbers at every measurement; only reported modes keep it FULL
    cfg = SpectralConfig(svd_interval=2, echo=False, thresholds=SwitchThresholds(principal_danger=0.01), cost_budget=0)
    with Monitor(run, spectral=cfg).watch(model) as mon:
        for layer in find_layers(model):
            mon.spectral.report_mode(layer.name, "FULL", r=8)
        train(mon, model, 8)
    recs = spectral_records(run)
    assert all("clobbering" in r["alerts"] for r in recs)  # fired at each of the 4 measurements
    clob = [a for a in alert_records(run) if a["rule"] == "clobbering"]
    assert len(clob) == 4 and {a["step"] for a in clob} == {2}  # written once per layer
    assert all(r["r"] == 8 and r["mode_source"] == "reported" for r in recs)


def test_adaptive_training_reports_its_mode_and_the_switch_is_logged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = gpt2()
    name = "transformer.h.1.attn.c_attn"
    with Monitor(run, spectral={"svd_interval": 2, "echo": False, "cost_budget": 0}).watch(model) as mon:
        mon.spectral.report_mode(name, "FULL", r=20)
        train(mon, model, 4)
        mon.spectral.report_mode(name, "LOW-RANK", r=12)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        for step in (5, 6):
            x = torch.randint(0, VOCAB, (2, SEQ))
            model(input_ids=x, labels=x).loss.backward()
            mon.pre_optimizer_step(step)
            opt.step()
            opt.zero_grad()
    recs = [r for r in spectral_records(run) if r["layer"] == name]
    assert [(r["step"], r["mode"], r["r"]) for r in recs] == [(2, "FULL", 20), (4, "FULL", 20), (6, "LOW-RANK", 12)]
    switch = [a for a in alert_records(run) if a["rule"] == "mode_switch" and a["metadata"]["layer"] == name]
    assert [a["message"] for a in switch] == [f"[{name}] SWITCHED TO LOW-RANK (r=12)"]
    assert switch[0]["step"] == 6


def test_without_pre_optimizer_step_it_measures_at_step_end_and_warns_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = gpt2()
    with Monitor(run, spectral={"svd_interval": 2, "echo": False, "cost_budget": 0}).watch(model) as mon:
        train(mon, model, 4, pre_hook=False)
    recs = spectral_records(run)
    assert len(recs) == 8 and all(math.isnan(r["principal_alignment"]) for r in recs)
    assert all(r["r"] >= 1 for r in recs)  # weight metrics still there
    assert "spectral without gradients" in mon.guard.reported
    assert "spectral no gradients" in mon.guard.reported


def test_missing_model_and_unmatched_pattern_never_break_the_loop(tmp_path: Path) -> None:
    mon = Monitor(tmp_path / "a", spectral={"svd_interval": 1, "echo": False})  # no watch(model)
    mon.pre_optimizer_step(1)
    mon.log(1, loss=1.0)
    mon.close()
    assert "spectral without model" in mon.guard.reported
    model = gpt2()
    mon = Monitor(tmp_path / "b", spectral={"svd_interval": 1, "layer_pattern": r"nothing$", "echo": False}).watch(model)
    train(mon, model, 2)
    mon.close()
    assert "spectral no layers" in mon.guard.reported
    assert not rf.RunPaths.of(tmp_path / "b").spectral.exists()


def test_a_failing_layer_is_reported_once_and_the_others_are_measured(tmp_path: Path) -> None:
    model = gpt2()
    bad = model.transformer.h[0].attn.c_proj
    bad.weight.data = torch.full_like(bad.weight, math.nan)  # LAPACK fails on NaN weights
    run = tmp_path / "run"
    with Monitor(run, spectral={"svd_interval": 1, "echo": False}).watch(model) as mon:
        x = torch.randint(0, VOCAB, (2, SEQ))
        model(input_ids=x).logits.sum().backward()
        mon.pre_optimizer_step(1)
        mon.pre_optimizer_step(2)
    layers = {r["layer"] for r in spectral_records(run)}
    assert "transformer.h.1.attn.c_attn" in layers
    assert any("spectral metrics of transformer.h.0.attn.c_proj" in k for k in mon.guard.reported)


def test_cost_over_budget_doubles_the_interval(tmp_path: Path) -> None:
    model = gpt2()
    with Monitor(tmp_path / "run", spectral={"svd_interval": 1, "echo": False, "cost_budget": 1e-9}).watch(model) as mon:
        train(mon, model, 4)
    assert mon.spectral.interval > 1
    assert "spectral cost" in mon.guard.reported


def test_state_dict_round_trip(tmp_path: Path) -> None:
    model = gpt2()
    with Monitor(tmp_path / "run", spectral={"svd_interval": 1, "echo": False}).watch(model) as mon:
        mon.spectral.report_mode("transformer.h.0.attn.c_attn", "LOW-RANK", r=5)
        train(mon, model, 2)
    fresh = SpectralPlugin()
    fresh.load_state_dict(mon.spectral.state_dict())
    assert fresh.monitor.layers() == mon.spectral.monitor.layers()
    assert fresh.state_dict()["reported"] == {"transformer.h.0.attn.c_attn": ["LOW-RANK", 5]}


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("option,match", [
    ({"svd_interval": 0}, "svd_interval must be a positive integer"),
    ({"layer_pattern": "("}, "layer_pattern is not a valid regular expression"),
    ({"intervall": 5}, "unknown spectral setting"),
    ({"method": "eig"}, "method must be one of"),
    ({"thresholds": {"minor_safe": 2}}, "minor_safe must be in"),
    ({"cpu_threads": 0}, "cpu_threads must be"),
    ("yes", "spectral= must be True"),
], ids=["interval", "regex", "unknown", "method", "thresholds", "threads", "type"])
def test_bad_settings_are_clear_errors(option: Any, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        Monitor(tmp_path / "run", spectral=option)


def test_spectral_is_off_by_default_and_plugin_objects_are_accepted(tmp_path: Path) -> None:
    assert Monitor(tmp_path / "a").spectral is None
    plugin = SpectralPlugin(svd_interval=7)
    mon = Monitor(tmp_path / "b", spectral=plugin)
    assert mon.spectral is plugin and plugin in mon.plugins and make_spectral_plugin(True).interval == 20
    with pytest.raises(ValueError, match="mode must be"):
        plugin.report_mode("x", "medium")


def test_non_main_process_measures_nothing_and_writes_nothing(tmp_path: Path) -> None:
    model = gpt2()
    with Monitor(tmp_path / "run", main_process=False, spectral={"svd_interval": 1, "echo": False}).watch(model) as mon:
        train(mon, model, 2)
    assert mon.spectral.measurements == 0
    assert not rf.RunPaths.of(tmp_path / "run").spectral.exists()
