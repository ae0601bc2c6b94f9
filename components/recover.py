"""The Recover panel (issue 11): the last good state of a fault, an editable skip range, the code to run.

Pure builders over the plain dict :func:`services.recovery.panel_data` returns, so any page can embed
the panel (the Snapshots page for a selected snapshot, the Alerts page for an incident): give it that
dict, a ``key`` unique on the page (the snapshot's name) and a ``context`` the callback needs to
rebuild the code when the range is edited (``{"run_id", "snapshot", "run_length"}``). The callback
lives in :mod:`callbacks.recover` (pattern-matching IDs on ``key``).
"""
from __future__ import annotations

from typing import Any, Mapping

from dash import dcc, html

from components import ids

SOURCE_LABELS = {"checkpoint": "a hard-linked copy of the Trainer checkpoint (weights, optimizer, scheduler, RNG)",
                 "rolling": "a rolling copy of the live weights (no optimizer state)"}


def part_id(type_: str, key: str) -> dict[str, str]:
    """The pattern-matching ID of one part of the panel ``key``."""
    return {"type": type_, "key": key}


def build_recover_message(panel: Mapping[str, Any]) -> Any:
    """The line under the range: the problem with the typed range, or the suggestion's reasoning."""
    if panel.get("error"):
        return html.Div(str(panel["error"]), className="recover__error", role="alert")
    notes = [html.Div(n, className="recover__note") for n in panel.get("notes") or ()]
    if panel.get("why"):
        notes.insert(0, html.Div(f"Suggested {panel.get('suggested')}: {panel['why']}.", className="recover__why"))
    return html.Div(notes)


def build_recover_panel(panel: Mapping[str, Any], key: str, context: Mapping[str, Any]) -> html.Div:
    """One Recover panel.

    Args:
        panel: :func:`services.recovery.panel_data`'s dict (``ok``, ``last_good_step``, ``source``,
            ``suggested``, ``skip``, ``code``, ``command``, ``error``, ``notes``).
        key: unique on the page (the snapshot's name).
        context: handed back to the callback on every edit (``run_id``, ``snapshot``, ``run_length``).
    """
    step = panel.get("last_good_step")
    if step is None:
        return html.Div([html.H4("Recover", className="recover__title"),
                         html.Div(str(panel.get("error") or "no last good state in this snapshot"),
                                  className="recover__unavailable")],
                        className="recover recover--unavailable", id=part_id(ids.RECOVER_PANEL_TYPE, key))
    source = SOURCE_LABELS.get(str(panel.get("source")), str(panel.get("source") or "saved state"))
    return html.Div([
        html.H4("Recover", className="recover__title"),
        html.Div([html.Span("Last good state: "), html.Strong(f"step {step}", className="recover__step"),
                  html.Span(f" — {source}")], className="recover__last-good"),
        html.Label([html.Span("Skip the batches of steps "),
                    dcc.Input(id=part_id(ids.RECOVER_SKIP_TYPE, key), type="text", value=panel.get("skip") or "",
                              placeholder="e.g. 31-40", debounce=False, className="recover__skip",
                              spellCheck=False, autoComplete="off"),
                    html.Span(" (optimizer steps as logged; the step keeps counting)", className="recover__hint")],
                   className="recover__range"),
        html.Div(build_recover_message(panel), id=part_id(ids.RECOVER_MESSAGE_TYPE, key), className="recover__message"),
        html.Div("Run this in your training script:", className="recover__label"),
        html.Pre(panel.get("code") or "", id=part_id(ids.RECOVER_CODE_TYPE, key), className="recover__code"),
        html.Div(["or print it with: ", html.Code(panel.get("command") or "", id=part_id(ids.RECOVER_COMMAND_TYPE, key),
                                                  className="recover__command")], className="recover__label"),
        dcc.Store(id=part_id(ids.RECOVER_CONTEXT_TYPE, key), data=dict(context)),
    ], className="recover panel", id=part_id(ids.RECOVER_PANEL_TYPE, key))
