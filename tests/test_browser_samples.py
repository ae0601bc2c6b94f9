"""The Samples page in a real headless Chromium against a real ``python app.py`` server.

The run it shows is written by the real SamplesPlugin on the demo model during a short real training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from collectors import runformat as rf
from tests.conftest import assert_no_console_errors, save_screenshot

pytestmark = pytest.mark.browser
TIMEOUT_MS = 30_000
STEPS = 40
EVERY = 5


def train_with_samples(run: Path, steps: int = STEPS) -> list[dict[str, Any]]:
    """A short real plain-loop training of the demo model with samples every EVERY steps."""
    import torch

    from collectors.demo import build_demo
    from collectors.monitor import Monitor
    from collectors.samples import SamplesConfig, SamplesPlugin

    torch.set_num_threads(1)
    setup = build_demo(seed=0, n_train=600, n_eval=16)
    model, opt = setup.model, torch.optim.AdamW(setup.model.parameters(), lr=3e-3)
    plugin = SamplesPlugin(SamplesConfig(update_frequency=EVERY, num_samples=4, dataset=setup.eval))
    with Monitor(run, plugins=[plugin]) as mon:
        mon.watch(model=model, tokenizer=setup.tokenizer)
        for step in range(1, steps + 1):
            batch = {k: torch.stack([setup.train[(step * 16 + i) % len(setup.train)][k] for i in range(16)])
                     for k in ("input_ids", "attention_mask", "labels")}
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            mon.log(step, loss=loss.item(), lr=3e-3, epoch=step / 40)
    return rf.read_new(rf.RunPaths.of(run).samples, 0).records


def card(page: Any, metric: str) -> Any:
    return page.locator(f'[id=\'{{"metric":"{metric}","type":"samples-card"}}\']')


def states(rec: dict[str, Any], side: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for tok in rec["comparison"]["tokens"]:
        if tok[side] is not None:
            out[tok["state"]] = out.get(tok["state"], 0) + 1
    return out


def test_samples_page_shows_coloured_tokens_and_browses_history(tmp_path: Path, dashboard: Any, page: Any) -> None:
    run = tmp_path / "base" / "run-a"
    hist = train_with_samples(run)
    assert len(hist) == STEPS // EVERY
    latest = hist[-1]
    srv = dashboard(tmp_path / "base")
    page.goto(srv.url + "/samples", wait_until="load")
    card(page, "step").filter(has_text=str(STEPS)).wait_for(timeout=TIMEOUT_MS)
    label = page.locator("#samples-history-label")
    assert label.inner_text() == f"sample {len(hist)} of {len(hist)} · step {STEPS} · following latest"
    # the prompt with role colours
    assert page.locator(".prompt__msg--system").count() == 1 and page.locator(".prompt__msg--user").count() == 1
    assert page.locator(".prompt__msg--assistant").count() == 1
    user_text = next(m["content"] for m in latest["prompt"]["messages"] if m["role"] == "user")
    assert page.locator(".prompt__msg--user .prompt__content").inner_text() == user_text
    # coloured tokens: each side's classes are exactly the record's states
    for side, sel in (("golden", "#samples-golden"), ("predicted", "#samples-predicted")):
        want = states(latest, side)
        for state in ("match", "mismatch", "missing", "extra"):
            assert page.locator(f"{sel} .token--{state}").count() == want.get(state, 0), (side, state, want)
    assert page.locator("#samples-golden .token--match").count() >= 1  # the model learnt the end token
    assert page.locator("#samples-golden .token").last.inner_text() == "<|end|>"
    assert "·" in page.locator("#samples-golden").inner_text()  # spaces are visible
    assert page.locator(".stats__line").inner_text() == latest["comparison"]["summary"]
    assert page.locator(".stats__line").inner_text().startswith("Accuracy: ")
    page.wait_for_function("() => { const g = document.querySelector('#samples-accuracy-graph .js-plotly-plot');"
                           " return g && g.data && g.data.length === 4; }", timeout=TIMEOUT_MS)
    save_screenshot(page, "samples.png")

    # the slider: Home goes to the first sample, "follow latest" switches off, the whole view changes
    first_label = label.filter(has_text=f"sample 1 of {len(hist)} · step {EVERY}")
    for attempt in range(3):  # as a person would: press again if a re-render took the key press's focus away
        page.locator("#samples-slider [role=slider]").first.focus()
        page.keyboard.press("Home")
        try:
            first_label.wait_for(timeout=5_000 if attempt < 2 else TIMEOUT_MS)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    card(page, "step").filter(has_text=str(EVERY)).wait_for(timeout=TIMEOUT_MS)
    assert not page.locator("#samples-follow input").is_checked()
    first = hist[0]
    assert page.locator(".stats__line").inner_text() == first["comparison"]["summary"]
    assert card(page, "sample").inner_text() == f"#{first['sample_idx']}"
    page.keyboard.press("ArrowRight")
    label.filter(has_text=f"sample 2 of {len(hist)} · step {2 * EVERY}").wait_for(timeout=TIMEOUT_MS)
    save_screenshot(page, "samples-history.png")
    # back to following: the newest sample again
    page.locator("#samples-follow input").check()
    label.filter(has_text="following latest").wait_for(timeout=TIMEOUT_MS)
    card(page, "step").filter(has_text=str(STEPS)).wait_for(timeout=TIMEOUT_MS)
    assert_no_console_errors(page)


def test_samples_page_waits_then_shows_the_first_sample(tmp_path: Path, dashboard: Any, page: Any) -> None:
    base = tmp_path / "base"
    run = base / "run-b"
    paths = rf.RunPaths.of(run)
    rf.write_json_atomic(paths.status, {"v": 1, "state": "training", "step": 3, "updated_at": 0})
    srv = dashboard(base)
    page.goto(srv.url + "/samples", wait_until="load")
    page.get_by_text("Waiting for training data...").wait_for(timeout=TIMEOUT_MS)
    paths.detail.parent.mkdir(parents=True, exist_ok=True)
    paths.detail.write_text("{half a json docum")  # a broken detail file: a problem in words, no crash
    page.get_by_text("is not valid JSON").wait_for(timeout=TIMEOUT_MS)
    train_with_samples(run, steps=EVERY)
    card(page, "step").filter(has_text=str(EVERY)).wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#samples-golden .token").count() > 0
    assert_no_console_errors(page)
