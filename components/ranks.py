"""The Overview's Ranks panel (issue 13): a rank × log-step heatmap of time per step, the slowest rank
now, per-rank memory, and which ranks had non-finite values or went silent.

Pure factories over a :class:`services.ranks.RanksView`; the figure is a plain dict (Dash serialises it
fastest) and holds no NaN (missing cells are ``None``, which plotly leaves blank).
"""
from __future__ import annotations

from typing import Any

from dash import dcc, html

from components import ids
from components.format import fmt_ago, fmt_gb, fmt_sig
from services.ranks import RankRow, RanksView

HEATMAP_SCALE = "YlOrRd"
"""Light = fast, dark red = slow: the straggler is the dark row."""


def fmt_s(value: float | None) -> str:
    """Seconds per step with 3 significant digits ("0.0412 s"), a dash when unknown."""
    return "—" if value is None else f"{value:.3g} s"


def build_ranks_heatmap(view: RanksView) -> dict[str, Any]:
    """Rank × log step, coloured by the rank's time per step outside collectives (hover: exact value)."""
    labels = [f"rank {r.rank}" for r in view.rows]
    return {
        "data": [{"type": "heatmap", "z": view.matrix, "x": view.steps, "y": labels, "colorscale": HEATMAP_SCALE,
                  "colorbar": {"title": {"text": "s/step"}}, "hoverongaps": False,
                  "hovertemplate": "step %{x}<br>%{y}: %{z:.4g} s per step<extra></extra>"}],
        "layout": {"title": {"text": "Time per step by rank (data wait + forward: the part no all-reduce waits on)"},
                   "xaxis": {"title": {"text": "step"}}, "yaxis": {"autorange": "reversed"},
                   "margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": max(180, 40 + 28 * len(labels))},
    }


def summary_lines(view: RanksView) -> list[str]:
    """The panel's sentences: the slowest rank now, non-finite ranks, silent and missing ranks (pure)."""
    out: list[str] = []
    n = len(view.rows)
    world = view.world_size or n
    out.append(f"{n} of {world} ranks reporting" if n != world else f"{n} ranks reporting")
    s = view.slowest
    if s is not None:
        ratio = f" ({s['ratio']:.2f}× the others' median {fmt_s(s['median_s'])})" if s.get("ratio") else ""
        out.append(f"Slowest now: rank {s['rank']} at step {s['step']}, {fmt_s(s['time_s'])} per step{ratio}")
    if view.non_finite:
        firsts = ", ".join(f"rank {r.rank} (from step {r.non_finite_step})" for r in view.rows if r.non_finite_step is not None)
        out.append(f"Non-finite values: {firsts}")
    silent = [r for r in view.rows if r.silent]
    if silent:
        out.append("Silent: " + ", ".join(f"rank {r.rank} (last heard {fmt_ago(r.age_s)})" for r in silent))
    if view.missing and [r.rank for r in view.rows] == [0]:
        out.append("Only rank 0 reports: the other ranks run no collector (build the Monitor on every rank, "
                   "or use MonitorCallback, for per-rank health)")
    elif view.missing:
        out.append("Never reported: " + ", ".join(f"rank {r}" for r in view.missing)
                   + " (not started, or its node does not share the run dir's filesystem)")
    return out


def _row(r: RankRow) -> html.Tr:
    cuda = f"{fmt_gb(r.cuda_allocated_gb)} (peak {fmt_gb(r.cuda_peak_gb)})" if r.cuda_allocated_gb is not None else "—"
    state = "finished" if r.finished else ("silent" if r.silent else "reporting")
    classes = "ranks__row" + (" ranks__row--bad" if r.non_finite_step is not None or r.silent else "")
    return html.Tr([html.Td(str(r.rank)), html.Td(f"{r.node}" if r.node is not None else "—"), html.Td(r.host or "—"),
                    html.Td(str(r.step) if r.step is not None else "—"), html.Td(fmt_s(r.time_s)),
                    html.Td(fmt_s(r.data_wait_s)), html.Td(fmt_gb(r.rss_gb)), html.Td(cuda), html.Td(fmt_sig(r.loss)),
                    html.Td("yes, from step " + str(r.non_finite_step) if r.non_finite_step is not None else "no"),
                    html.Td(f"{state}, {fmt_ago(r.age_s)}")], className=classes)


def build_ranks_panel(view: RanksView) -> list[Any]:
    """The panel's children: title, summary, heatmap, per-rank table, problems in words."""
    head = ["rank", "node", "host", "step", "time/step", "data wait", "RSS", "CUDA", "own loss", "non-finite", "last heard"]
    children: list[Any] = [
        html.H3("Ranks", className="ranks__title"),
        html.Ul([html.Li(t) for t in summary_lines(view)], id=ids.OVERVIEW_RANKS_SUMMARY, className="ranks__summary"),
    ]
    if view.steps:
        children.append(dcc.Graph(id=ids.OVERVIEW_RANKS_GRAPH, figure=build_ranks_heatmap(view),
                                  config={"displaylogo": False, "responsive": True}, className="ranks__graph"))
    children.append(html.Div(html.Table([html.Thead(html.Tr([html.Th(h) for h in head])),
                                         html.Tbody([_row(r) for r in view.rows])], id=ids.OVERVIEW_RANKS_TABLE,
                                        className="ranks__table"), className="ranks__table-wrap"))
    if view.problems:
        children.append(html.Div("; ".join(view.problems), className="ranks__problem"))
    return children
