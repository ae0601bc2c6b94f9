"""Later weight saves written from the first ``save_pretrained``'s template (collectors.snapshots.repeat_save):
byte-identical files, a full save whenever anything differs, and real best-model snapshots of a plain loop."""
from __future__ import annotations

import copy
import filecmp
import os
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from collectors import Monitor
from collectors import snapshots as S
from collectors.anomaly.plugin import AnomalyPlugin, cpu_state_dict, save_live_model
from collectors.snapshots import repeat_save as R
from collectors.snapshots.last_good import tensors_bytes


def tiny(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=32))


@pytest.fixture(autouse=True)
def fresh_templates():
    R.RepeatSaver.forget()
    yield
    R.RepeatSaver.forget()


def same_files(a: Path, b: Path) -> bool:
    names = sorted(os.listdir(a))
    return names == sorted(os.listdir(b)) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def nudge(model: torch.nn.Module, by: float = 0.01) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


def test_later_saves_are_byte_identical_to_save_pretrained(tmp_path: Path) -> None:
    model, saver = tiny(), R.RepeatSaver()
    for i in range(4):
        nudge(model)
        state = cpu_state_dict(model)
        save_live_model(model, None, tmp_path / f"fast{i}", state_dict=state, saver=saver)
        save_live_model(model, None, tmp_path / f"full{i}", state_dict=state)
        assert same_files(tmp_path / f"fast{i}", tmp_path / f"full{i}"), i
    assert (saver.full_saves, saver.fast_saves) == (1, 3)
    # tied embeddings stay tied in what loads back; the values are the ones copied
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "fast3")
    assert back.lm_head.weight.data_ptr() == back.transformer.wte.weight.data_ptr()
    for name, t in back.state_dict().items():
        assert torch.equal(t, state[name]), name


def test_a_copy_taken_earlier_is_saved_not_the_live_weights(tmp_path: Path) -> None:
    model, saver = tiny(), R.RepeatSaver()
    save_live_model(model, None, tmp_path / "first", state_dict=cpu_state_dict(model), saver=saver)
    state = cpu_state_dict(model)
    nudge(model, 1.0)  # the live weights move on after the copy
    save_live_model(model, None, tmp_path / "second", state_dict=state, saver=saver)
    assert saver.fast_saves == 1
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "second")
    assert torch.equal(back.transformer.wte.weight, state["transformer.wte.weight"])


def test_a_changed_config_dtype_or_shape_goes_through_save_pretrained(tmp_path: Path) -> None:
    model, saver = tiny(), R.RepeatSaver()
    save_live_model(model, None, tmp_path / "a", state_dict=cpu_state_dict(model), saver=saver)
    model.config.resid_pdrop = 0.25  # a config edit: config.json must say so
    save_live_model(model, None, tmp_path / "b", state_dict=cpu_state_dict(model), saver=saver)
    assert (saver.full_saves, saver.fast_saves) == (2, 0)
    assert '"resid_pdrop": 0.25' in (tmp_path / "b" / "config.json").read_text()
    save_live_model(model, None, tmp_path / "c", state_dict=cpu_state_dict(model), saver=saver)
    assert saver.fast_saves == 1 and '"resid_pdrop": 0.25' in (tmp_path / "c" / "config.json").read_text()
    model.half()  # new dtypes: a new signature
    state = cpu_state_dict(model)
    save_live_model(model, None, tmp_path / "d", state_dict=state, saver=saver)
    assert saver.full_saves == 3
    save_live_model(model, None, tmp_path / "e", state_dict=state, saver=saver)
    save_live_model(model, None, tmp_path / "e-full", state_dict=state)
    assert saver.fast_saves == 2 and same_files(tmp_path / "e", tmp_path / "e-full")
    model.resize_token_embeddings(130)  # new shapes
    save_live_model(model, None, tmp_path / "f", state_dict=cpu_state_dict(model), saver=saver)
    assert saver.full_saves == 4


def test_templates_are_shared_by_the_savers_of_a_process(tmp_path: Path) -> None:
    model = tiny()
    first, second = R.RepeatSaver(), R.RepeatSaver()
    save_live_model(model, None, tmp_path / "a", state_dict=cpu_state_dict(model), saver=first)
    save_live_model(model, None, tmp_path / "b", state_dict=cpu_state_dict(model), saver=second)
    assert (first.full_saves, second.fast_saves) == (1, 1)
    torch.manual_seed(1)  # another object of the same class and config (as save_pretrained filled it in)
    other = GPT2LMHeadModel(copy.deepcopy(model.config))
    save_live_model(other, None, tmp_path / "c", state_dict=cpu_state_dict(other), saver=second)
    save_live_model(other, None, tmp_path / "c-full", state_dict=cpu_state_dict(other))
    assert second.fast_saves == 2 and same_files(tmp_path / "c", tmp_path / "c-full")


def test_learn_template_refuses_what_it_cannot_repeat(tmp_path: Path) -> None:
    model = tiny()
    state = cpu_state_dict(model)
    model.save_pretrained(tmp_path / "ok", state_dict=dict(state))
    assert R.learn_template(tmp_path / "ok", state) is not None
    (tmp_path / "ok" / "model.safetensors.index.json").write_text("{}")  # a sharded save
    assert R.learn_template(tmp_path / "ok", state) is None
    model.save_pretrained(tmp_path / "changed", state_dict=dict(state))
    moved = dict(state)
    moved["transformer.h.0.mlp.c_fc.weight"] = state["transformer.h.0.mlp.c_fc.weight"] + 1  # values differ
    assert R.learn_template(tmp_path / "changed", moved) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"\xff" * 8 + b"not json")
    assert R.learn_template(tmp_path / "bad", state) is None
    assert R.read_safetensors_header(tmp_path / "missing.safetensors") is None


def test_plain_loop_best_model_snapshots_hold_the_weights_of_their_step(tmp_path: Path) -> None:
    """A real plain loop whose loss keeps falling: several best-model snapshots, the later ones written
    from the template, each holding exactly the weights of the step recorded in its metadata."""
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    mon = Monitor(tmp_path / "run").watch(model, optimizer=opt)
    mon.start()
    weights: dict[int, dict[str, torch.Tensor]] = {}
    for step in range(1, 41):
        loss = model(batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        mon.log(step, loss=loss.item(), learning_rate=3e-3)
    mon.close()
    plugin = next(p for p in mon.plugins if isinstance(p, AnomalyPlugin))
    assert plugin.saver.full_saves == 1 and plugin.saver.fast_saves >= 2
    best = [i for i in S.list_snapshots(tmp_path / "run") if i.role == S.store.ROLE_BEST]
    assert len(best) >= 2
    for info in best:
        at = info.metadata["weights_step"]
        back = GPT2LMHeadModel.from_pretrained(info.path / "model")
        for name, t in back.state_dict().items():
            assert torch.equal(t, weights[at][name]), (info.name, name)


def test_large_weights_always_go_through_save_pretrained(tmp_path: Path, monkeypatch) -> None:
    model, saver = tiny(), R.RepeatSaver()
    state = cpu_state_dict(model)
    size = tensors_bytes(state.values())
    assert size == sum(t.numel() * t.element_size() for n, t in state.items() if n != "lm_head.weight")
    monkeypatch.setattr(R, "MAX_TEMPLATE_BYTES", size - 1)  # just too large to learn from
    for i in range(3):
        save_live_model(model, None, tmp_path / f"s{i}", state_dict=cpu_state_dict(model), saver=saver)
    assert (saver.full_saves, saver.fast_saves) == (3, 0)
