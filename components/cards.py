"""Metric cards: a label, a value with its unit, and an optional note (e.g. "stale")."""
from __future__ import annotations

from dataclasses import dataclass

from dash import html

from components import ids


@dataclass(frozen=True)
class CardData:
    """One card's content. ``metric`` names it in the pattern-matching ID; ``stale`` greys it out."""

    metric: str
    label: str
    value: str
    note: str | None = None
    stale: bool = False
    tone: str | None = None
    """Optional modifier class suffix: ``"bad"`` (NaN/crashed), ``"good"`` (finished)."""
    unit: str | None = None
    """Shown small after the value (long units such as "samples/s" would wrap at the value's size)."""


def build_metric_card(card: CardData, id_type: str = ids.OVERVIEW_CARD_TYPE) -> html.Div:
    classes = ["card"]
    if card.stale:
        classes.append("card--stale")
    if card.tone:
        classes.append(f"card--{card.tone}")
    value = html.Div(card.value, className="card__value", id={"type": id_type, "metric": card.metric})
    if card.unit:
        value = html.Div([value, html.Span(card.unit, className="card__unit")], className="card__value-row")
    children = [html.Div(card.label, className="card__label"), value]
    if card.note:
        children.append(html.Div(card.note, className="card__note"))
    return html.Div(children, className=" ".join(classes))


def build_card_grid(cards: list[CardData], id_type: str = ids.OVERVIEW_CARD_TYPE) -> list[html.Div]:
    """Cards of one page; ``id_type`` is the page's pattern-matching card type (Overview by default)."""
    return [build_metric_card(c, id_type) for c in cards]
