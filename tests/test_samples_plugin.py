"""Tests of collectors.samples: pure helpers, and the plugin on a real tiny model through the plain Monitor."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collectors import runformat as rf
from collectors.monitor import Monitor
from collectors.samples import (MODE_GENERATE, SampleError, SamplesConfig, SamplesPlugin, as_config,
                                choose_indices, clean_text, fallback_render, fit_context, is_due, memory_label,
                                normalise_item, split_chat)

DETAIL_FIELDS = {"status", "step", "epoch", "train_loss", "eval_loss", "learning_rate", "sample_idx", "prompt",
                 "golden", "predicted", "comparison", "gpu_memory", "timestamp", "mode", "sample_ms", "notes"}
CHAT = [{"role": "system", "content": "You are a precise assistant. Answer with the result only."},
        {"role": "user", "content": "Repeat apple 2 times."},
        {"role": "assistant", "content": "apple apple"}]


# --------------------------------------------------------------------------- pure helpers

@pytest.mark.parametrize(("step", "last", "freq", "due"), [
    pytest.param(0, 0, 50, False, id="step-zero"),
    pytest.param(49, 0, 50, False, id="before-first"),
    pytest.param(50, 0, 50, True, id="first"),
    pytest.param(50, 50, 50, False, id="same-step-again"),
    pytest.param(56, 49, 50, True, id="crossed-between-logs"),
    pytest.param(99, 50, 50, False, id="not-yet-second"),
    pytest.param(100, 50, 50, True, id="second"),
    pytest.param(1, 0, 1, True, id="every-step"),
])
def test_is_due(step: int, last: int, freq: int, due: bool) -> None:
    assert is_due(step, last, freq) is due


def test_choose_indices_is_seeded_distinct_and_bounded() -> None:
    a = choose_indices(100, 8, seed=3)
    assert a == choose_indices(100, 8, seed=3) and len(set(a)) == 8 and all(0 <= i < 100 for i in a)
    assert a != choose_indices(100, 8, seed=4)
    assert sorted(choose_indices(3, 8, seed=0)) == [0, 1, 2]
    assert choose_indices(0, 8, seed=0) == []


@pytest.mark.parametrize(("value", "text", "noted"), [
    pytest.param("héllo 🙂", "héllo 🙂", False, id="unicode-str"),
    pytest.param("héllo".encode(), "héllo", False, id="utf8-bytes"),
    pytest.param(b"ab\xff\xfecd", "ab\ufffd\ufffdcd", True, id="non-utf8-bytes"),
    pytest.param("a\udcffb", "a?b", True, id="lone-surrogate"),
    pytest.param(None, "", False, id="none"),
    pytest.param("", "", False, id="empty"),
])
def test_clean_text(value: Any, text: str, noted: bool) -> None:
    out, note = clean_text(value, "x")
    assert out == text and (note is not None) is noted
    out.encode("utf-8")


def test_clean_text_rejects_non_text() -> None:
    with pytest.raises(SampleError, match="must be text"):
        clean_text(12, "the content")


@pytest.mark.parametrize(("item", "kind"), [
    pytest.param(CHAT, "chat", id="chat-list"),
    pytest.param({"messages": CHAT}, "chat", id="messages-key"),
    pytest.param("plain text", "text", id="str"),
    pytest.param({"text": "plain text"}, "text", id="text-key"),
    pytest.param({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, "tokens", id="tokenised"),
])
def test_normalise_item_kinds(item: Any, kind: str) -> None:
    assert normalise_item(item).kind == kind


@pytest.mark.parametrize(("item", "message"), [
    pytest.param({"foo": 1}, "expected 'messages'", id="unknown-mapping"),
    pytest.param(42, "unsupported sample of type int", id="int"),
    pytest.param([], "empty sample", id="empty-list"),
])
def test_normalise_item_rejects(item: Any, message: str) -> None:
    with pytest.raises(SampleError, match=message):
        normalise_item(item)


def test_split_chat_takes_last_assistant_turn_and_refuses_without_one() -> None:
    multi = CHAT + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "apple apple apple"}]
    prompt, golden = split_chat(multi)
    assert golden == "apple apple apple" and [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    with pytest.raises(SampleError, match=r"no assistant turn \(roles: system, user\)"):
        split_chat(CHAT[:2])


def test_fallback_render() -> None:
    assert fallback_render(CHAT[:2], True) == (f"system: {CHAT[0]['content']}\nuser: {CHAT[1]['content']}\n"
                                               "assistant: ")


@pytest.mark.parametrize(("prompt", "golden", "window", "out_prompt", "out_golden", "n_notes"), [
    pytest.param([1, 2, 3], [4, 5], 10, [1, 2, 3], [4, 5], 0, id="fits"),
    pytest.param([1, 2, 3], [4, 5], None, [1, 2, 3], [4, 5], 0, id="no-window"),
    pytest.param([1, 2, 3, 4, 5, 6], [7, 8], 5, [4, 5, 6], [7, 8], 1, id="prompt-cut-from-start"),
    pytest.param([1, 2], [3, 4, 5, 6, 7], 4, [2], [3, 4, 5], 2, id="golden-too-long"),
    pytest.param([], [3, 4], 10, [3], [4], 1, id="empty-prompt"),
])
def test_fit_context(prompt: list, golden: list, window: int | None, out_prompt: list, out_golden: list,
                     n_notes: int) -> None:
    p, g, notes = fit_context(prompt, golden, window)
    assert (p, g, len(notes)) == (out_prompt, out_golden, n_notes)
    assert window is None or len(p) + len(g) <= window


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"update_frequency": 0}, "update_frequency", id="freq-zero"),
    pytest.param({"update_frequency": True}, "update_frequency", id="freq-bool"),
    pytest.param({"mode": "beam"}, "must be one of teacher_forced, generate", id="mode"),
    pytest.param({"compare": "fuzzy"}, "must be one of auto, alignment, positional", id="compare"),
    pytest.param({"max_new_tokens": -1}, "max_new_tokens", id="max-new"),
    pytest.param({"num_samples": 0}, "num_samples", id="num-samples"),
    pytest.param({"dataset": "one text"}, "not a single string", id="dataset-str"),
])
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplesConfig(**kwargs)


def test_as_config() -> None:
    assert as_config(None) is None and as_config(False) is None
    assert as_config(True) == SamplesConfig()
    cfg = SamplesConfig(update_frequency=5)
    assert as_config(cfg) is cfg
    assert as_config([CHAT]).dataset == [CHAT]
    with pytest.raises(ValueError, match="must be True, a SamplesConfig"):
        as_config("yes")


def test_compare_auto_depends_on_mode() -> None:
    assert SamplesConfig().compare_method == "positional"
    assert SamplesConfig(mode=MODE_GENERATE).compare_method == "alignment"
    assert SamplesConfig(compare="alignment").compare_method == "alignment"


def test_memory_label() -> None:
    assert memory_label({"rss_gb": 0.5, "cuda_allocated_gb": 19.432}) == "19.43GB"
    assert memory_label({"rss_gb": 0.517}) == "0.52GB (process RSS)"
    assert memory_label({}) == "n/a"


# --------------------------------------------------------------------------- the plugin on a real model

@pytest.fixture(scope="module")
def demo() -> Any:
    import torch

    from collectors.demo import build_demo

    torch.manual_seed(0)
    return build_demo(seed=0, n_train=300, n_eval=12)


def run_plugin(tmp_path: Path, demo: Any, dataset: Any, *, tokenizer: Any = None, steps: int = 4,
               model: Any = "demo", **cfg: Any) -> tuple[Monitor, SamplesPlugin, list[dict[str, Any]]]:
    """A plain-loop Monitor with the plugin, logging ``steps`` steps; returns the samples history."""
    plugin = SamplesPlugin(SamplesConfig(update_frequency=1, dataset=dataset, **cfg))
    mon = Monitor(tmp_path / "run", plugins=[plugin])
    mon.watch(model=demo.model if model == "demo" else model, tokenizer=tokenizer or demo.tokenizer)
    with mon:
        for step in range(1, steps + 1):
            mon.log(step, loss=1.0 / step, lr=1e-3)
    hist = rf.read_new(mon.paths.samples, 0).records
    return mon, plugin, hist


def test_plain_loop_writes_detail_and_history_with_documented_fields(tmp_path: Path, demo: Any) -> None:
    mon, plugin, hist = run_plugin(tmp_path, demo, demo.eval, steps=3, num_samples=2)
    assert [r["step"] for r in hist] == [1, 2, 3]
    a, b, c = (r["sample_idx"] for r in hist)
    assert a != b and c == a  # rotation over the fixed set of 2
    detail, problem = rf.read_json(mon.paths.detail)
    assert problem is None
    assert DETAIL_FIELDS <= set(detail) and detail["kind"] == "sample"
    assert detail["step"] == 3 and detail["status"] == "finished"
    assert detail["learning_rate"] == pytest.approx(1e-3) and detail["train_loss"] == pytest.approx(1 / 3)
    assert [m["role"] for m in detail["prompt"]["messages"]] == ["system", "user"]
    assert detail["prompt"]["template"] == "chat_template"
    chat = demo.eval.samples[detail["sample_idx"]]
    assert detail["golden"] == chat[-1]["content"]
    comp = detail["comparison"]
    assert comp["total"] == len(comp["tokens"]) == comp["matches"] + comp["diff"]
    assert comp["summary"].startswith("Accuracy: ") and comp["method"] == "positional"
    assert {t["state"] for t in comp["tokens"]} <= {"match", "mismatch"}  # teacher-forced: same length
    assert comp["tokens"][-1]["golden"] == "<|end|>"
    assert detail["sample_ms"] > 0 and plugin.taken == 3
    assert "GB" in detail["gpu_memory"]


def test_generate_mode_stops_at_eos_and_uses_alignment(tmp_path: Path, demo: Any) -> None:
    _, _, hist = run_plugin(tmp_path, demo, [CHAT], steps=1, mode=MODE_GENERATE, max_new_tokens=5)
    rec = hist[0]
    assert rec["mode"] == "generate" and rec["comparison"]["method"] == "alignment"
    preds = [t["predicted"] for t in rec["comparison"]["tokens"] if t["predicted"] is not None]
    assert 1 <= len(preds) <= 5
    assert "<|end|>" not in preds[:-1]  # generation stops at the first EOS


def test_model_mode_and_rng_are_restored(tmp_path: Path, demo: Any) -> None:
    import torch

    demo.model.train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_plugin(tmp_path, demo, [CHAT], steps=2)
    assert demo.model.training
    assert torch.equal(torch.rand(3), expected)
    demo.model.eval()
    run_plugin(tmp_path / "b", demo, [CHAT], steps=1)
    assert not demo.model.training
    demo.model.train()


def test_sample_without_assistant_is_skipped_and_rotation_moves_on(tmp_path: Path, demo: Any, caplog: Any) -> None:
    mon, _, hist = run_plugin(tmp_path, demo, [CHAT[:2], CHAT], steps=3)
    assert [r["sample_idx"] for r in hist] == [1, 1, 1]
    assert any("no assistant turn" in m for m in mon.guard.reported.values())


def test_all_samples_unusable_never_crashes(tmp_path: Path, demo: Any) -> None:
    mon, plugin, hist = run_plugin(tmp_path, demo, [CHAT[:2], "", {"foo": 1}], steps=3)
    assert hist == [] and plugin.taken == 0 and not mon.paths.detail.exists()
    assert any("no sample of the set is usable" in m for m in mon.guard.reported.values())
    assert rf.read_json(mon.paths.status)[0]["state"] == "finished"


def test_empty_golden_and_non_utf8_content(tmp_path: Path, demo: Any) -> None:
    empty = CHAT[:2] + [{"role": "assistant", "content": ""}]
    bad = [CHAT[0], {"role": "user", "content": b"Repeat \xff\xfe apple"}, CHAT[2]]
    _, _, hist = run_plugin(tmp_path, demo, [empty, bad], steps=2, num_samples=2)
    by_idx = {r["sample_idx"]: r for r in hist}
    assert by_idx[0]["golden"] == "" and by_idx[0]["comparison"]["total"] >= 0
    assert "\ufffd" in by_idx[1]["prompt"]["messages"][1]["content"]
    assert any("not valid UTF-8" in n for n in by_idx[1]["notes"])


def test_very_long_prompt_keeps_full_data_and_fits_the_model(tmp_path: Path, demo: Any) -> None:
    long_user = "Repeat apple 2 times. " + "apple river stone " * 200
    chat = [CHAT[0], {"role": "user", "content": long_user}, CHAT[2]]
    _, _, hist = run_plugin(tmp_path, demo, [chat], steps=1)
    rec = hist[0]
    assert rec["prompt"]["messages"][1]["content"] == long_user  # never truncated in the data
    assert rec["prompt"]["tokens"] > demo.model.config.n_positions
    assert any("the model saw its last" in n for n in rec["notes"])
    assert rec["comparison"]["total"] > 0


def test_tokenizer_without_chat_template_uses_documented_fallback(tmp_path: Path, demo: Any) -> None:
    tok = copy.deepcopy(demo.tokenizer)
    tok.chat_template = None
    _, _, hist = run_plugin(tmp_path, demo, [CHAT], tokenizer=tok, steps=1)
    rec = hist[0]
    assert rec["prompt"]["template"] == "fallback"
    assert rec["prompt"]["text"].endswith("user: Repeat apple 2 times.\nassistant: ")
    assert any("no chat template" in n for n in rec["notes"])


def test_plain_text_and_tokenised_datasets(tmp_path: Path, demo: Any) -> None:
    texts = ["Reverse the words: apple river stone answer stone river apple"]
    _, _, hist = run_plugin(tmp_path, demo, texts, steps=1)
    rec = hist[0]
    assert rec["prompt"]["messages"][0]["role"] == "text" and rec["golden"]
    assert rec["prompt"]["messages"][0]["content"] + rec["golden"] == texts[0]
    item = demo.eval.items[0]
    _, _, hist2 = run_plugin(tmp_path / "tok", demo, [item], steps=1)
    golden_chat = demo.eval.samples[0][-1]["content"]
    assert hist2[0]["golden"].startswith(golden_chat)


def test_missing_model_or_tokenizer_warns_once(tmp_path: Path, demo: Any) -> None:
    plugin = SamplesPlugin(SamplesConfig(update_frequency=1, dataset=[CHAT]))
    with Monitor(tmp_path / "run", plugins=[plugin]) as mon:
        for step in (1, 2, 3):
            mon.log(step, loss=1.0)
    assert plugin.taken == 0
    assert any("monitor.watch(model=..., tokenizer=...)" in m for m in mon.guard.reported.values())


def test_detail_file_is_valid_json_for_browsers(tmp_path: Path, demo: Any) -> None:
    mon, _, _ = run_plugin(tmp_path, demo, [CHAT], steps=1)
    json.loads(mon.paths.detail.read_text(encoding="utf-8"))  # strict parser: no NaN, valid UTF-8


@pytest.mark.parametrize(("argv", "ok"), [
    pytest.param(["--base-dir", "x"], True, id="default-on"),
    pytest.param(["--base-dir", "x", "--samples-every", "0"], True, id="off"),
    pytest.param(["--base-dir", "x", "--samples-every", "-1"], False, id="negative"),
    pytest.param(["--base-dir", "x", "--samples-mode", "beam"], False, id="bad-mode"),
])
def test_demo_samples_flags(argv: list[str], ok: bool) -> None:
    from collectors.demo import DEMO_SAMPLES_EVERY, parse_args

    if ok:
        args = parse_args(argv)
        assert args.samples_every in (0, DEMO_SAMPLES_EVERY) and args.samples_mode == "teacher_forced"
    else:
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_max_input_tokens_caps_the_model_input(tmp_path: Path, demo: Any) -> None:
    _, _, hist = run_plugin(tmp_path, demo, [CHAT], steps=1, max_input_tokens=8)
    rec = hist[0]
    assert any("(context 8)" in n for n in rec["notes"]) and rec["comparison"]["total"] > 0


def test_a_chat_template_that_fails_skips_the_sample(tmp_path: Path, demo: Any) -> None:
    tok = copy.deepcopy(demo.tokenizer)
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    mon, plugin, hist = run_plugin(tmp_path, demo, [CHAT], tokenizer=tok, steps=2)
    assert hist == [] and any("roles must alternate" in m for m in mon.guard.reported.values())
    assert rf.read_json(mon.paths.status)[0]["state"] == "finished"
