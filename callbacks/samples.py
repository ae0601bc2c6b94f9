"""Samples page: golden vs predicted, token by token, live; a step slider over the history; accuracy chart.

The browser ticks every second; :func:`update_samples` answers with ``PreventUpdate`` when neither the
run's samples nor the person's selection changed. "Follow latest" keeps the newest sample on screen;
moving the slider to an older sample turns it off, moving it to the newest turns it back on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import dash
from dash import Dash, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from components import ids
from components.cards import CardData, build_card_grid
from components.format import fmt_epoch, fmt_gb, fmt_int, fmt_sci, fmt_sig
from components.messages import build_not_collected, build_problem, build_waiting
from components.samples import (FOLLOW, build_accuracy_figure, build_notes, build_prompt, build_samples_layout,
                                build_stats, build_token_view)
from callbacks.shell import only_tick, triggered_components
from services.context import catalog_for
from services.samples import history_for

MAX_SLIDER_MARKS = 8
WAITING_DETAIL = ("Samples appear every update_frequency steps (default 50) once a training with samples on "
                  "writes here: MonitorCallback(samples=True), or SamplesPlugin with the plain-loop Monitor.")


@dataclass(frozen=True)
class Selection:
    """Which sample is shown: its index in the history (``None`` when only the detail file exists)."""

    record: Mapping[str, Any] | None
    index: int | None
    follow: bool


def choose_sample(records: Sequence[Mapping[str, Any]], detail: Mapping[str, Any] | None, slider: int | None,
                  follow: bool, slider_moved: bool) -> Selection:
    """Decide what to show (pure): the newest sample when following, else the slider's choice."""
    n = len(records)
    if n == 0:
        return Selection(detail, None, follow)
    if slider_moved and slider is not None:
        index = min(max(int(slider), 0), n - 1)
        follow = index == n - 1
    elif follow or slider is None:
        index = n - 1
    else:
        index = min(max(int(slider), 0), n - 1)
    record = records[index]
    if index == n - 1 and detail and detail.get("step") == record.get("step") \
            and detail.get("sample_idx") == record.get("sample_idx"):
        record = detail  # the same sample; the detail file also says when the run finished
    return Selection(record, index, follow)


def slider_marks(records: Sequence[Mapping[str, Any]], limit: int = MAX_SLIDER_MARKS) -> dict[int, str]:
    """At most ``limit`` evenly spread marks, labelled with the step (pure)."""
    n = len(records)
    if n == 0:
        return {}
    if n <= limit:
        picks = range(n)
    else:
        picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return {i: str(records[i].get("step")) for i in picks}


def history_label(sel: Selection, n: int) -> str:
    if sel.record is None:
        return "no samples yet"
    step = fmt_int(sel.record.get("step"))
    if sel.index is None:
        return f"latest sample · step {step}"
    return f"sample {sel.index + 1} of {n} · step {step}" + (" · following latest" if sel.follow else "")


def sample_cards(rec: Mapping[str, Any]) -> list[CardData]:
    """Cards for one sample record (pure): the metrics at the time the sample was taken."""
    cost = rec.get("sample_ms")
    cpu = rec.get("sample_cpu_ms")
    status = rec.get("status")
    mem = rec.get("memory") if isinstance(rec.get("memory"), Mapping) else {}
    cuda = mem.get("cuda_allocated_gb")
    mem_value = fmt_gb(cuda if cuda is not None else mem.get("rss_gb")) if mem else str(rec.get("gpu_memory") or "—")
    mem_note = "GPU allocated" if cuda is not None else ("process RSS" if mem else None)
    return [
        CardData("train_loss", "Train loss", fmt_sig(rec.get("train_loss"))),
        CardData("eval_loss", "Eval loss", fmt_sig(rec.get("eval_loss"))),
        CardData("step", "Step", fmt_int(rec.get("step")), note=str(status) if status else None,
                 tone={"crashed": "bad", "finished": "good"}.get(str(status))),
        CardData("epoch", "Epoch", fmt_epoch(rec.get("epoch"))),
        CardData("learning_rate", "Learning rate", fmt_sci(rec.get("learning_rate"))),
        CardData("memory", "Memory", mem_value, note=mem_note),
        CardData("sample", "Sample", f"#{rec.get('sample_idx', '?')}", note=str(rec.get("mode") or "")),
        CardData("sample_ms", "Sample cost", f"{cost:.0f} ms" if isinstance(cost, (int, float)) else "—",
                 note=f"{cpu:.0f} ms CPU" if isinstance(cpu, (int, float)) else None),
    ]


def accuracy_points(records: Sequence[Mapping[str, Any]]) -> dict[int, tuple[list[float], list[float | None]]]:
    """Per sample index: steps and accuracies (0..1, None when nothing was compared), in file order (pure)."""
    out: dict[int, tuple[list[float], list[float | None]]] = {}
    for rec in records:
        idx, comp = rec.get("sample_idx"), rec.get("comparison")
        if not isinstance(idx, int) or not isinstance(comp, Mapping):
            continue
        acc = comp.get("accuracy")
        steps, accs = out.setdefault(idx, ([], []))
        steps.append(rec.get("step"))
        accs.append(acc if isinstance(acc, (int, float)) else None)
    return out


def sample_views(rec: Mapping[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    """(prompt, golden, predicted, stats, notes) components for one record (pure)."""
    prompt = rec.get("prompt") if isinstance(rec.get("prompt"), Mapping) else {}
    messages = prompt.get("messages") if isinstance(prompt.get("messages"), list) else []
    comp = rec.get("comparison") if isinstance(rec.get("comparison"), Mapping) else {}
    tokens = comp.get("tokens") if isinstance(comp.get("tokens"), list) else []
    tokens = [t for t in tokens if isinstance(t, Mapping)]
    notes = rec.get("notes") if isinstance(rec.get("notes"), list) else []
    return (build_prompt([m for m in messages if isinstance(m, Mapping)]), build_token_view(tokens, "golden"),
            build_token_view(tokens, "predicted"), build_stats(comp, rec.get("mode")), build_notes(notes))


# ------------------------------------------------------------------------------------------ register
def layout(**_query: Any) -> Any:
    return build_samples_layout()


def register(app: Dash) -> None:
    store = catalog_for(app)
    dash.register_page("samples", path="/samples", name="Samples", title="Trainboard · Samples", layout=layout,
                       order=20)

    @app.callback(
        Output(ids.SAMPLES_MESSAGE, "children"), Output(ids.SAMPLES_CARDS, "children"),
        Output(ids.SAMPLES_HISTORY_LABEL, "children"), Output(ids.SAMPLES_SLIDER, "max"),
        Output(ids.SAMPLES_SLIDER, "marks"), Output(ids.SAMPLES_SLIDER, "value"), Output(ids.SAMPLES_FOLLOW, "value"),
        Output(ids.SAMPLES_PROMPT, "children"), Output(ids.SAMPLES_GOLDEN, "children"),
        Output(ids.SAMPLES_PREDICTED, "children"), Output(ids.SAMPLES_STATS, "children"),
        Output(ids.SAMPLES_NOTES, "children"), Output(ids.SAMPLES_ACCURACY_GRAPH, "figure"),
        Output(ids.SAMPLES_STATE, "data"),
        Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "value"),
        Input(ids.SAMPLES_SLIDER, "value"), Input(ids.SAMPLES_FOLLOW, "value"), State(ids.SAMPLES_STATE, "data"),
    )
    def update_samples(_n, run_id, slider, follow_value, prev):
        run = store.get(run_id)
        if run is None:
            key = {"waiting": str(store.base)}
            if prev == key:
                raise PreventUpdate
            return (build_waiting(str(store.base), WAITING_DETAIL), [], "no samples yet", 0, {}, 0, [FOLLOW],
                    None, None, None, None, None, build_accuracy_figure({}), key)
        if not run.has_collector:
            key = {"run": run.run_id, "not_collected": True}
            if prev == key:
                raise PreventUpdate
            return (build_not_collected("samples", run.label, WAITING_DETAIL), [], "no samples", 0, {}, 0, [FOLLOW],
                    None, None, None, None, None, build_accuracy_figure({}), key)
        triggered = triggered_components(ctx.triggered_prop_ids)
        if only_tick(triggered) and prev is None:
            # the page's first render is still on its way; a tick answered now could land after the person's
            # first slider move and put the view back on "latest"
            raise PreventUpdate
        hist = history_for(app, run.paths.root)
        hist.refresh()
        hist.apply_resumes(getattr(run, "resumes", None))  # samples of rolled-back steps are superseded
        follow = FOLLOW in (follow_value or [])
        sel = choose_sample(hist.records, hist.detail, slider, follow, ids.SAMPLES_SLIDER in triggered)
        key = {"run": run.run_id, "version": hist.version, "index": sel.index, "follow": sel.follow}
        if prev == key:
            raise PreventUpdate
        n = len(hist.records)
        fig = build_accuracy_figure(accuracy_points(hist.records), sel.record.get("step") if sel.record else None)
        if sel.record is None:
            message = build_waiting(str(run.paths.root), hist.detail_problem or WAITING_DETAIL)
            return (message, [], "no samples yet", 0, {}, 0, [FOLLOW] if sel.follow else [], None, None, None, None,
                    None, fig, key)
        message = None
        if hist.detail_problem:
            message = build_problem(hist.detail_problem, "The history from samples.jsonl still works.")
        elif hist.bad_lines:
            message = build_problem(f"{hist.bad_lines} malformed line(s) skipped in samples.jsonl",
                                    "Every other sample is shown.")
        prompt, golden, predicted, stats, notes = sample_views(sel.record)
        return (message, build_card_grid(sample_cards(sel.record), ids.SAMPLES_CARD_TYPE), history_label(sel, n),
                max(n - 1, 0), slider_marks(hist.records), sel.index or 0, [FOLLOW] if sel.follow else [],
                prompt, golden, predicted, stats, notes, fig, key)
