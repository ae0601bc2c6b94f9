"""Snapshots page components (pure builders, issue 3): history table, detail viewer, actions, and the
disk panel of issue 11 (space used, the budget, what retention removes next)."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

from dash import dash_table, dcc, html

from components import ids
from components.format import fmt_sig

TABLE_COLUMNS = (("time", "Time"), ("reason", "Reason"), ("step", "Step"), ("loss", "Loss"), ("size", "Size"),
                 ("weights", "Weights of step"), ("last_good", "Last good step"), ("pinned", "Pinned"), ("name", "Name"))
DETAIL_MAX_CHARS = 20_000
"""A status file can be big (configs): the viewer shows this much and says it cut the rest."""


def fmt_size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for unit, div in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Display rows for :meth:`collectors.snapshots.SnapshotInfo.to_row` dicts (pure)."""
    out = []
    for r in rows:
        out.append({"name": r["name"], "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])),
                    "reason": r.get("reason") or "", "step": r.get("step") if r.get("step") is not None else "–",
                    "loss": fmt_sig(r.get("loss")), "size": fmt_size(r.get("size_bytes")),
                    "weights": _step(r.get("weights_step")), "last_good": _step(r.get("last_good_step")),
                    "pinned": "pinned" if r.get("pinned") else "", "id": r["name"]})
    return out


def _step(v: Any) -> Any:
    return v if isinstance(v, int) and not isinstance(v, bool) else "–"


def build_retention(view: Mapping[str, Any] | None) -> html.Div | str:
    """The disk panel: space used against the budget, the free disk, what retention keeps and removes
    next, and a warning when pinned snapshots crowd out the budget (pure; ``view`` from
    :func:`callbacks.snapshots.retention_view`)."""
    if not view:
        return ""
    used, budget = view.get("used_bytes") or 0, view.get("budget_bytes")
    parts: list[Any] = [html.H3("Disk", className="panel__title")]
    if budget:
        pct = 100.0 * used / budget if budget else 0.0
        parts.append(html.Div([html.Span(f"{fmt_size(used)} used of the {fmt_size(budget)} budget ({pct:.0f} %)"),
                               html.Div(html.Div(className="retention__fill", style={"width": f"{min(pct, 100):.1f}%"}),
                                        className="retention__bar")], className="retention__used"))
    else:
        parts.append(html.Div(f"{fmt_size(used)} used; no budget (max_total_gb=0)", className="retention__used"))
    rules = view.get("rules")
    if rules:
        parts.append(html.Div(rules, className="retention__rules"))
    if view.get("free_bytes") is not None:
        parts.append(html.Div(f"Free disk: {fmt_size(view['free_bytes'])} (snapshots stop at "
                              f"{view.get('floor_text')})", className="retention__free"))
    if view.get("crowded"):
        parts.append(html.Div(f"Pinned and manual snapshots take {fmt_size(view.get('pinned_bytes'))} of the "
                              f"{fmt_size(budget)} budget: they crowd out the automatic snapshots (retention never "
                              "removes them). Unpin or delete some to make room.", className="message message--problem",
                              role="alert"))
    nxt = view.get("next_out") or []
    removing = view.get("remove") or []
    if removing:
        parts.append(html.Div([html.Div("Retention removes at its next run:")] +
                              [html.Div(f"{n} — {why}", className="retention__item") for n, why in removing],
                              className="retention__next"))
    if nxt:
        parts.append(html.Div([html.Div("Removed next:")] +
                              [html.Div(f"{n} — {when}", className="retention__item") for n, when in nxt],
                              className="retention__next"))
    elif not removing:
        parts.append(html.Div("Nothing is due for removal.", className="retention__next"))
    if view.get("problem"):
        parts.append(html.Div(view["problem"], className="message message--problem"))
    return html.Div(parts)


def build_snapshots_layout() -> html.Div:
    return html.Div([
        html.Div(id=ids.SNAPSHOTS_MESSAGE),
        html.Div([
            html.Button("Snapshot now", id=ids.SNAPSHOTS_NOW_BUTTON, className="button button--primary", n_clicks=0),
            html.Span(id=ids.SNAPSHOTS_NOW_PROGRESS, className="snapshots__progress", role="status"),
            html.Div(id=ids.SNAPSHOTS_NOW_RESULT, className="snapshots__result", role="status"),
        ], className="snapshots__actions panel"),
        html.Div(id=ids.SNAPSHOTS_RETENTION, className="panel snapshots__retention"),
        html.Div([
            html.Div([
                html.H3("History", className="panel__title"),
                dash_table.DataTable(id=ids.SNAPSHOTS_TABLE, columns=[{"name": n, "id": c} for c, n in TABLE_COLUMNS],
                                     data=[], row_selectable="single", selected_rows=[], page_size=15,
                                     sort_action="native", style_table={"overflowX": "auto"},
                                     style_cell={"fontSize": "13px", "padding": "4px 8px", "textAlign": "left",
                                                 "maxWidth": "320px", "overflow": "hidden", "textOverflow": "ellipsis"},
                                     # a name (what `trainboard recover` takes) shown whole up to ~60 characters
                                     style_cell_conditional=[{"if": {"column_id": "name"}, "maxWidth": "480px"}],
                                     style_header={"fontWeight": "600"}),
            ], className="panel snapshots__table"),
            html.Div([
                html.H3("Selected snapshot", className="panel__title"),
                html.Div([
                    html.Button("Pin", id=ids.SNAPSHOTS_PIN_BUTTON, className="button", n_clicks=0),
                    html.Button("Unpin", id=ids.SNAPSHOTS_UNPIN_BUTTON, className="button", n_clicks=0),
                    dcc.ConfirmDialogProvider(html.Button("Delete…", id=ids.SNAPSHOTS_DELETE_BUTTON, className="button button--danger"),
                                              id=ids.SNAPSHOTS_DELETE_CONFIRM,
                                              message="Delete this snapshot and its weights? This cannot be undone."),
                ], className="snapshots__buttons"),
                html.Div(id=ids.SNAPSHOTS_ACTION_MESSAGE, className="snapshots__result", role="status"),
                html.Div(id=ids.SNAPSHOTS_RECOVER),  # the Recover panel (callbacks/recover.py), issue 11
                html.Div(id=ids.SNAPSHOTS_DETAIL, className="snapshots__detail"),
            ], className="panel snapshots__side"),
        ], className="snapshots__grid"),
        dcc.Store(id=ids.SNAPSHOTS_STATE, data=None),
        dcc.Store(id=ids.SNAPSHOTS_SELECTED, data=None),
        dcc.Store(id=ids.SNAPSHOTS_REFRESH, data=0),
    ], className="page page--snapshots")


def _pretty(doc: Any) -> str:
    text = json.dumps(doc, indent=2, sort_keys=False, default=str)
    if len(text) > DETAIL_MAX_CHARS:
        text = text[:DETAIL_MAX_CHARS] + f"\n… ({len(text) - DETAIL_MAX_CHARS:,} more characters not shown)"
    return text


def build_detail(name: str | None, metadata: Any, status: Any, problem: str | None = None) -> html.Div | str:
    """Metadata and training status of one snapshot, or a hint to select one."""
    if not name:
        return html.Div("Select a snapshot in the table to see why it was saved and the training status then.",
                        className="snapshots__hint")
    parts: list[Any] = [html.Div(name, className="snapshots__name")]
    if problem:
        parts.append(html.Div(problem, className="message message--problem"))
    parts += [html.H4("metadata.json"), html.Pre(_pretty(metadata), className="snapshots__json"),
              html.H4("training_status.json"), html.Pre(_pretty(status), className="snapshots__json")]
    return html.Div(parts)


def build_result(result: Mapping[str, Any] | None) -> html.Div | str:
    """The outcome of "Snapshot now": what was saved, or what went wrong."""
    if not result:
        return ""
    if result.get("ok"):
        return html.Div(f"Saved {result.get('name')} (by {result.get('handled_by', '?')}).", className="result result--ok")
    return html.Div(f"Snapshot not saved: {result.get('error') or 'unknown error'}", className="result result--bad",
                    role="alert")
