"""The Snapshots page's disk panel (issue 11): the collector's planner over the listed snapshots, pure."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from callbacks.snapshots import retention_view
from collectors import snapshots as S
from components.snapshots import build_retention, table_rows

MB = 1024 * 1024


def _info(name: str, day: int, role: str = "anomaly", metric: float | None = None, pinned: bool = False,
          size: int = MB) -> S.SnapshotInfo:
    ts = f"202511{day:02d}_000000"
    return S.SnapshotInfo(name, Path(name), "manual" if role == "manual" else "anomaly", ts,
                          time.mktime(time.strptime(ts, S.TS_FORMAT)), name, 1, metric, None, pinned, size,
                          metadata={"weights_step": 5, "last_good": {"step": 3}}, role=role, metric=metric)


def _text(component) -> str:
    out = []

    def walk(c):
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
        elif c is not None and hasattr(c, "children"):
            walk(c.children)
    walk(component)
    return " ".join(out)


def test_view_uses_the_collector_policy_and_names_what_goes_next() -> None:
    infos = [_info("a1", 10), _info("a2", 11), _info("b1", 12, "best_model", 1.0)]
    policy = S.RetentionPolicy(keep_best=3, keep_last=2, budget_bytes=10 * MB)
    view = retention_view(infos, policy, 50 * 1024 * MB, time.time())
    assert view["used_bytes"] == 3 * MB and view["budget_bytes"] == 10 * MB and not view["crowded"]
    assert view["next_out"] == [["a1", "when the next anomaly snapshot is saved (keep_last=2)"]]
    text = _text(build_retention(view))
    assert "3.0 MB used of the 10.0 MB budget (30 %)" in text
    assert "Keeps the 3 best models by loss and the last 2 anomaly snapshots" in text
    assert "a1 — when the next anomaly snapshot is saved" in text and "Free disk: 50.0 GB" in text


def test_view_crowded_by_pinned_and_default_policy() -> None:
    infos = [_info("p", 10, pinned=True, size=6 * MB), _info("m", 11, "manual", size=1 * MB), _info("a", 12)]
    view = retention_view(infos, S.RetentionPolicy(budget_bytes=10 * MB), None, time.time())
    assert view["crowded"] and view["pinned_bytes"] == 7 * MB
    text = _text(build_retention(view))
    assert "crowd out" in text and "Unpin or delete" in text
    # no retention.json yet: the defaults, said so, and no budget
    view = retention_view(infos, None, None, time.time())
    assert view["budget_bytes"] is None and "showing the defaults" in view["rules"]
    assert "no budget" in _text(build_retention(view))


@pytest.mark.parametrize("ws,lg,expected", [(5, 3, (5, 3)), (None, None, ("–", "–"))], ids=["known", "unknown"])
def test_table_shows_weight_and_last_good_steps(ws, lg, expected) -> None:
    row = {"name": "anomaly_20251110_000000_x", "created": 0.0, "reason": "x", "step": 7, "loss": 1.0,
           "size_bytes": MB, "pinned": False, "weights_step": ws, "last_good_step": lg}
    (disp,) = table_rows([row])
    assert (disp["weights"], disp["last_good"]) == expected
