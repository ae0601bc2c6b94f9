"""``trainboard serve --notify URL --public-url URL``: incidents the dashboard detects in a run without the
collector (a Hugging Face output dir) reach a local receiver, once, with a link to the run's Alerts page;
what the run held before the dashboard started is not sent."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from app import parse_args
from tests.helpers.http_receiver import Receiver

pytestmark = pytest.mark.integration


def _write_state(out: Path, steps: int, nan_at: int | None = None) -> None:
    """A trainer_state.json as Trainer writes it (json.dumps: a NaN loss is a bare NaN token)."""
    hist = []
    for s in range(1, steps + 1):
        loss = float("nan") if s == nan_at else 2.0 * 0.99 ** s
        grad = 90.0 if s in (6, 7) else 1.0  # an old explosion in the history: never sent
        hist.append({"step": s, "epoch": s / 100, "loss": loss, "grad_norm": grad, "learning_rate": 1e-3})
    doc = {"global_step": steps, "max_steps": 100, "log_history": hist, "logging_steps": 1}
    tmp = out / "trainer_state.json.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out / "trainer_state.json")


def test_dashboard_detections_are_sent(tmp_path: Path, dashboard) -> None:
    out = tmp_path / "base" / "hf-run"
    out.mkdir(parents=True)
    _write_state(out, 30)
    with Receiver() as rx:
        srv = dashboard(tmp_path / "base", "--notify", rx.url("json", "/ok"), "--public-url", "http://gpu-box:8081")
        time.sleep(8)  # the first check takes the history in silently
        assert rx.received("/ok") == [], [r.data for r in rx.received("/ok")]
        _write_state(out, 40, nan_at=36)
        got = rx.wait_for("/ok", 1, timeout=90)
        time.sleep(6)
        got = rx.received("/ok")
    assert len(got) == 1, [g.data for g in got]
    body = got[0].data.get("title", "") + "\n" + got[0].data.get("message", "")
    assert "non_finite_loss" in body and "hf-run" in body and "36" in body
    assert "http://gpu-box:8081/alerts?run=hf-run" in body
    assert "Notifications:" in srv.log()


def test_serve_notify_bad_input_is_a_clear_error(capsys) -> None:
    for argv, words in ((["--notify", "nosuchscheme://x"], "nosuchscheme"),
                        (["--public-url", "gpu-box:8081"], "--public-url must start with http")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert words in capsys.readouterr().err


def test_a_notification_link_selects_its_run(tmp_path: Path) -> None:
    from callbacks.shell import picker_state
    from collectors import Monitor
    from services.catalog import RunCatalog

    for name in ("a", "b"):
        with Monitor(tmp_path / name, anomaly=False) as mon:
            mon.log(1, loss=1.0)
    cat = RunCatalog(tmp_path, watch=False)
    default = picker_state(cat)[1]
    other = "a" if default == "b" else "b"
    assert picker_state(cat, other)[1] == other  # ?run=<listed run> selects it
    assert picker_state(cat, "../etc")[1] == default  # anything else is ignored
