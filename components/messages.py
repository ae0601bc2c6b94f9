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
