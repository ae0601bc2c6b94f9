"""Honest page states: waiting (what is watched, where), and problems (what is wrong, what still works)."""
from __future__ import annotations

from dash import html

WAITING_TEXT = "Waiting for training data..."


def build_waiting(watched: str, detail: str | None = None) -> html.Div:
    """Shown before any data: the sentence people look for, and the exact path being watched."""
    children: list = [html.Div(WAITING_TEXT, className="message__title"),
                      html.Div(["Watching ", html.Code(watched)], className="message__detail")]
    if detail:
        children.append(html.Div(detail, className="message__detail"))
    return html.Div(children, className="message message--waiting")


def build_problem(problem: str, still_works: str | None = None) -> html.Div:
    """A problem in words, plus what still works, instead of a blank panel or a traceback."""
    children: list = [html.Div(problem, className="message__title")]
    if still_works:
        children.append(html.Div(still_works, className="message__detail"))
    return html.Div(children, className="message message--problem", role="alert")


def build_notice(text: str) -> html.Div:
    """A neutral note about where the data comes from (not a problem, not waiting)."""
    return html.Div(html.Div(text, className="message__detail"), className="message message--notice", role="note")


def build_not_collected(what: str, run_label: str, detail: str | None = None) -> html.Div:
    """A page with nothing to show for a run of this kind says so in words: "this run has no samples:
    the collector was not attached", and what would give them."""
    children: list = [html.Div(f"This run has no {what}: the collector was not attached.", className="message__title"),
                      html.Div(f"{run_label} was written by another tool and is read as it is.", className="message__detail")]
    if detail:
        children.append(html.Div(detail, className="message__detail"))
    return html.Div(children, className="message message--waiting message--not-collected")
