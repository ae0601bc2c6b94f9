"""Pure builders of the Samples page: the prompt with role colours, coloured tokens, stats line, accuracy chart.

No I/O: each ``build_*`` takes plain data (a sample record as written by :mod:`collectors.samples`) and
returns Dash components or a plotly figure dict, so tests check the returned tree directly. Token states
map to CSS classes through one table (:data:`TOKEN_CLASS`); colours live in ``assets/samples.css``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dash import dcc, html

from collectors.samples.alignment import TokenState
from components import ids
from components.charts import empty_figure

MAX_MESSAGE_CHARS = 4000
"""A prompt message longer than this is shown cut, with the count of hidden characters (data stays whole)."""
MAX_TOKENS_SHOWN = 2000
"""Most tokens rendered per side; the rest are counted in a note."""
VISIBLE_SPACE = "·"
VISIBLE_TAB = "→"
VISIBLE_NEWLINE = "↵"
ROLE_CLASSES = {"system": "prompt__msg--system", "user": "prompt__msg--user", "assistant": "prompt__msg--assistant"}
"""Role colours: system purple, user blue, assistant green (assets/samples.css); others are neutral."""
FOLLOW = "follow"
"""Value of the "follow latest" checkbox."""
ACCURACY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                    "#bcbd22", "#17becf")


TOKEN_CLASS: dict[TokenState, str] = {
    TokenState.MATCH: "token token--match",
    TokenState.MISMATCH: "token token--mismatch",
    TokenState.MISSING: "token token--missing",
    TokenState.EXTRA: "token token--extra",
}
TOKEN_TITLE: dict[TokenState, str] = {
    TokenState.MATCH: "match",
    TokenState.MISMATCH: "mismatch",
    TokenState.MISSING: "missing: a golden token the prediction lacks",
    TokenState.EXTRA: "extra: a predicted token with no golden counterpart",
}
SIDE_STATES = {"golden": (TokenState.MATCH, TokenState.MISMATCH, TokenState.MISSING),
               "predicted": (TokenState.MATCH, TokenState.MISMATCH, TokenState.EXTRA)}


def visible_whitespace(text: str) -> str:
    """Spaces, tabs and newlines made visible (the newline mark is followed by a real line break in CSS)."""
    return text.replace(" ", VISIBLE_SPACE).replace("\t", VISIBLE_TAB).replace("\n", VISIBLE_NEWLINE)


def truncate_display(text: str, limit: int = MAX_MESSAGE_CHARS) -> tuple[str, int]:
    """``(shown, hidden_count)``: the first ``limit`` characters and how many were left out."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def _state(value: Any) -> TokenState | None:
    try:
        return TokenState(value)
    except ValueError:
        return None


def build_token(text: str, state: TokenState) -> html.Span:
    """One coloured token; a token holding a newline ends its line, as the text would."""
    shown = visible_whitespace(text) if text else "∅"
    children: list[Any] = [shown]
    if "\n" in text:
        children.append(html.Br())
    return html.Span(children, className=TOKEN_CLASS[state], title=f"{TOKEN_TITLE[state]}: {text!r}")


def build_token_view(tokens: Sequence[Mapping[str, Any]], side: str) -> html.Div:
    """The tokens of one side (``"golden"`` or ``"predicted"``), each coloured by its state."""
    allowed = SIDE_STATES[side]
    spans: list[Any] = []
    shown = 0
    hidden = 0
    for tok in tokens:
        state = _state(tok.get("state"))
        text = tok.get(side)
        if state not in allowed or not isinstance(text, str):
            continue
        if shown >= MAX_TOKENS_SHOWN:
            hidden += 1
            continue
        spans.append(build_token(text, state))
        shown += 1
    if not spans:
        spans.append(html.Span("(no tokens)", className="tokens__empty"))
    if hidden:
        spans.append(html.Div(f"… {hidden} more tokens not shown", className="tokens__more"))
    return html.Div(spans, className=f"tokens tokens--{side}")


def build_prompt(messages: Sequence[Mapping[str, Any]], golden_note: str | None = None) -> html.Div:
    """The full prompt: one box per message with its role colour, long contents cut for display only."""
    boxes: list[Any] = []
    for msg in messages:
        role = str(msg.get("role", "?"))
        content = msg.get("content")
        content = content if isinstance(content, str) else str(content)
        shown, hidden = truncate_display(content)
        body: list[Any] = [html.Div(shown, className="prompt__content")]
        if hidden:
            body.append(html.Div(f"… {hidden:,} more characters not shown (the record keeps them all)",
                                 className="prompt__more"))
        boxes.append(html.Div([html.Div(role.upper(), className="prompt__role"), *body],
                              className=f"prompt__msg {ROLE_CLASSES.get(role, 'prompt__msg--other')}"))
    boxes.append(html.Div([html.Div("ASSISTANT", className="prompt__role"),
                           html.Div(golden_note or "the model's answer is compared with the golden one below",
                                    className="prompt__content prompt__content--pending")],
                          className="prompt__msg prompt__msg--assistant"))
    return html.Div(boxes, className="prompt")


def build_stats(comparison: Mapping[str, Any], mode: str | None) -> html.Div:
    """The stats line ("Accuracy: 85.7% | Matches: 6/7 | Diff: 1") and how it was computed."""
    summary = comparison.get("summary") or "Accuracy: n/a"
    how = f"{mode or '?'} prediction, {comparison.get('method', '?')} comparison"
    counts = (f"{comparison.get('mismatches', 0)} mismatched, {comparison.get('missing', 0)} missing, "
              f"{comparison.get('extra', 0)} extra")
    return html.Div([html.Span(summary, className="stats__line"),
                     html.Span(f" ({how}; {counts})", className="stats__how")], className="stats")


def build_legend() -> html.Div:
    return html.Div([html.Span(name, className=TOKEN_CLASS[state]) for name, state in
                     (("match", TokenState.MATCH), ("mismatch", TokenState.MISMATCH),
                      ("missing", TokenState.MISSING), ("extra", TokenState.EXTRA))]
                    + [html.Span(f"{VISIBLE_SPACE} space  {VISIBLE_NEWLINE} newline  {VISIBLE_TAB} tab",
                                 className="legend__ws")], className="legend")


def build_notes(notes: Sequence[Any]) -> html.Ul | None:
    items = [html.Li(str(n)) for n in notes if n]
    return html.Ul(items, className="notes") if items else None


def build_accuracy_figure(points: Mapping[int, tuple[Sequence[float], Sequence[float]]],
                          current_step: float | None = None) -> dict[str, Any]:
    """Sample accuracy (%) over steps, one line per sample index; a dashed line marks the shown step."""
    if not points:
        return empty_figure("Sample accuracy", "no samples yet")
    traces = []
    for i, (idx, (steps, accs)) in enumerate(sorted(points.items())):
        traces.append({"type": "scatter", "mode": "lines+markers", "name": f"sample {idx}", "x": list(steps),
                       "y": [None if a is None else a * 100 for a in accs],
                       "line": {"color": ACCURACY_COLOURS[i % len(ACCURACY_COLOURS)]},
                       "hovertemplate": "step %{x}<br>accuracy %{y:.1f}%<extra>%{fullData.name}</extra>"})
    shapes = []
    if current_step is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": current_step, "x1": current_step,
                       "y0": 0, "y1": 1, "line": {"dash": "dot", "color": "#888", "width": 1}})
    return {"data": traces, "layout": {
        "title": {"text": "Sample accuracy over steps (per sample index)", "font": {"size": 14}},
        "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": "accuracy (%)"}, "range": [0, 105]},
        "margin": {"l": 50, "r": 10, "t": 40, "b": 40}, "shapes": shapes, "uirevision": "samples",
        "legend": {"orientation": "v", "x": 1.01, "y": 1}, "hovermode": "closest"}}


def build_samples_layout() -> html.Div:
    """The Samples page (ids in components/ids.py; classes in assets/samples.css)."""
    return html.Div([
        html.Div(id=ids.SAMPLES_MESSAGE),
        html.Div(id=ids.SAMPLES_CARDS, className="cards"),
        html.Div([
            html.Div([html.Span("History ", className="history__title"),
                      html.Span("no samples yet", id=ids.SAMPLES_HISTORY_LABEL, className="history__label"),
                      dcc.Checklist(id=ids.SAMPLES_FOLLOW, options=[{"label": " follow latest", "value": FOLLOW}],
                                    value=[FOLLOW], className="history__follow", inline=True)],
                     className="history__head"),
            dcc.Slider(id=ids.SAMPLES_SLIDER, min=0, max=0, step=1, value=0, marks={}, included=False,
                       updatemode="mouseup", allow_direct_input=False, className="history__slider"),
        ], className="history"),
        html.Section([html.H3("Prompt", className="section__title"), html.Div(id=ids.SAMPLES_PROMPT)],
                     className="panel"),
        html.Section([
            html.H3("Golden vs predicted", className="section__title"),
            build_legend(),
            html.Div([
                html.Div([html.H4("✓ Golden (expected)", className="compare__title"), html.Div(id=ids.SAMPLES_GOLDEN)],
                         className="compare__side"),
                html.Div([html.H4("Predicted", className="compare__title"), html.Div(id=ids.SAMPLES_PREDICTED)],
                         className="compare__side"),
            ], className="compare"),
            html.Div(id=ids.SAMPLES_STATS),
            html.Div(id=ids.SAMPLES_NOTES),
        ], className="panel"),
        html.Div(dcc.Graph(id=ids.SAMPLES_ACCURACY_GRAPH, config={"displaylogo": False, "responsive": True},
                           className="chart__graph"), className="chart chart--wide"),
        dcc.Store(id=ids.SAMPLES_STATE, data=None),
    ], className="page page--samples")
