"""Units of the Samples page: pure selection, cards, chart points and component builders; the history reader."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callbacks.samples import (Selection, accuracy_points, choose_sample, history_label, sample_cards, sample_views,
                               slider_marks)
from collectors import runformat as rf
from components.samples import (MAX_MESSAGE_CHARS, build_accuracy_figure, build_prompt, build_token_view,
                                truncate_display, visible_whitespace)
from services.samples import SamplesHistory


def rec(step: int, idx: int = 0, acc: float | None = 0.5, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "kind": "sample", "step": step, "sample_idx": idx, "mode": "teacher_forced",
            "comparison": {"accuracy": acc, "summary": "Accuracy: 50.0% | Matches: 1/2 | Diff: 1",
                           "tokens": [{"state": "match", "golden": "a", "predicted": "a"},
                                      {"state": "mismatch", "golden": " b", "predicted": " c"}]},
            "prompt": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
            **extra}


def classes(component: Any) -> list[str]:
    """Every className in a component tree, depth first."""
    out = []
    stack = [component]
    while stack:
        c = stack.pop(0)
        if isinstance(c, (list, tuple)):
            stack[:0] = list(c)
            continue
        if hasattr(c, "className") and getattr(c, "className", None):
            out.append(c.className)
        children = getattr(c, "children", None)
        if children is not None and not isinstance(children, str):
            stack[:0] = children if isinstance(children, list) else [children]
    return out


RECS = [rec(5, 0), rec(10, 1), rec(15, 0)]


@pytest.mark.parametrize(("slider", "follow", "moved", "index", "follow_after"), [
    pytest.param(None, True, False, 2, True, id="first-load-follows"),
    pytest.param(0, True, False, 2, True, id="following-ignores-stale-slider"),
    pytest.param(0, True, True, 0, False, id="moving-back-stops-following"),
    pytest.param(2, False, True, 2, True, id="moving-to-newest-follows-again"),
    pytest.param(1, False, False, 1, False, id="tick-keeps-choice"),
    pytest.param(99, False, False, 2, False, id="out-of-range-clamped"),
])
def test_choose_sample(slider: int | None, follow: bool, moved: bool, index: int, follow_after: bool) -> None:
    sel = choose_sample(RECS, None, slider, follow, moved)
    assert (sel.index, sel.follow) == (index, follow_after)
    assert sel.record is RECS[index]


def test_choose_sample_prefers_detail_for_the_same_newest_sample_and_falls_back_without_history() -> None:
    detail = dict(RECS[-1], status="finished")
    assert choose_sample(RECS, detail, None, True, False).record["status"] == "finished"
    other = dict(RECS[-1], step=20)
    assert choose_sample(RECS, other, None, True, False).record is RECS[-1]
    sel = choose_sample([], detail, None, True, False)
    assert sel.record is detail and sel.index is None
    assert choose_sample([], None, None, True, False).record is None


def test_slider_marks_and_label() -> None:
    many = [rec(s) for s in range(10, 1010, 10)]
    marks = slider_marks(many, limit=5)
    assert len(marks) == 5 and marks[0] == "10" and marks[99] == "1000"
    assert slider_marks([]) == {}
    assert history_label(Selection(RECS[1], 1, False), 3) == "sample 2 of 3 · step 10"
    assert history_label(Selection(RECS[2], 2, True), 3) == "sample 3 of 3 · step 15 · following latest"
    assert history_label(Selection(None, None, True), 0) == "no samples yet"


def test_sample_cards_units() -> None:
    r = rec(1200, train_loss=2.34567, eval_loss=None, epoch=1.5, learning_rate=3e-4, sample_ms=12.4, sample_cpu_ms=3.2,
            memory={"rss_gb": 0.5}, gpu_memory="0.50GB (process RSS)", status="training")
    cards = {c.metric: c for c in sample_cards(r)}
    assert cards["train_loss"].value == "2.346" and cards["eval_loss"].value == "—"
    assert cards["step"].value == "1,200" and cards["epoch"].value == "1.50"
    assert cards["learning_rate"].value == "3.00e-04"
    assert (cards["memory"].value, cards["memory"].note) == ("0.50 GB", "process RSS")
    assert (cards["sample_ms"].value, cards["sample_ms"].note) == ("12 ms", "3 ms CPU")
    cuda = sample_cards(rec(1, memory={"rss_gb": 3.0, "cuda_allocated_gb": 19.43}))
    assert next(c for c in cuda if c.metric == "memory").value == "19.43 GB"


def test_accuracy_points_groups_by_sample_index_and_skips_bad_records() -> None:
    pts = accuracy_points(RECS + [rec(20, 1, acc=None), {"step": 25}, {"step": 30, "sample_idx": 2, "comparison": "x"}])
    assert pts == {0: ([5, 15], [0.5, 0.5]), 1: ([10, 20], [0.5, None])}
    fig = build_accuracy_figure(pts, current_step=15)
    assert [t["name"] for t in fig["data"]] == ["sample 0", "sample 1"]
    assert fig["data"][1]["y"] == [50.0, None] and fig["layout"]["shapes"][0]["x0"] == 15
    assert "no samples yet" in str(build_accuracy_figure({}))


@pytest.mark.parametrize(("side", "expected"), [
    pytest.param("golden", ["token token--match", "token token--mismatch", "token token--missing"], id="golden"),
    pytest.param("predicted", ["token token--match", "token token--mismatch", "token token--extra"], id="predicted"),
])
def test_token_view_classes_per_side(side: str, expected: list[str]) -> None:
    tokens = [{"state": "match", "golden": "The", "predicted": "The"},
              {"state": "mismatch", "golden": " cat", "predicted": " dog"},
              {"state": "missing", "golden": "\n", "predicted": None},
              {"state": "extra", "golden": None, "predicted": "!"},
              {"state": "bogus", "golden": "x", "predicted": "y"}]
    view = build_token_view(tokens, side)
    assert [c for c in classes(view) if c.startswith("token ")] == expected
    if side == "golden":
        assert view.children[2].children[0] == "↵" and view.children[2].children[1].__class__.__name__ == "Br"


def test_token_view_empty_and_whitespace() -> None:
    assert "tokens__empty" in classes(build_token_view([], "golden"))
    assert visible_whitespace("a b\tc\n") == "a·b→c↵"


def test_prompt_roles_and_display_truncation_keep_data() -> None:
    long = "x" * (MAX_MESSAGE_CHARS + 123)
    prompt = build_prompt([{"role": "system", "content": "s"}, {"role": "user", "content": long},
                           {"role": "tool", "content": "t"}])
    cls = classes(prompt)
    for role in ("system", "user", "assistant", "other"):
        assert f"prompt__msg prompt__msg--{role}" in cls
    assert "prompt__more" in cls
    assert "123 more characters" in str(prompt)
    assert truncate_display(long) == ("x" * MAX_MESSAGE_CHARS, 123)


def test_sample_views_survive_malformed_records() -> None:
    views = sample_views({"prompt": "nope", "comparison": {"tokens": ["x", None]}, "notes": "n"})
    assert len(views) == 5


def test_history_reader_follows_appends_bad_lines_and_detail_problems(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    hist = SamplesHistory(tmp_path)
    assert not hist.refresh() and hist.records == [] and hist.detail is None
    with rf.JsonlWriter(paths.samples) as w:
        w.append(rec(5))
        w.append(rf.make_record("train", step=5))  # another kind is ignored
    with open(paths.samples, "ab") as fh:
        fh.write(b"{broken\n")
    assert hist.refresh() and [r["step"] for r in hist.records] == [5] and hist.bad_lines == 1
    v = hist.version
    assert not hist.refresh() and hist.version == v
    paths.status_dir.mkdir(parents=True, exist_ok=True)
    paths.detail.write_text("{half")
    assert hist.refresh() and "not valid JSON" in hist.detail_problem
    rf.write_json_atomic(paths.detail, rec(5))
    assert hist.refresh() and hist.detail_problem is None and hist.detail["step"] == 5
    paths.samples.write_bytes(b"")  # truncated: history restarts
    assert hist.refresh() and hist.records == []
