"""Notifications wired into the collector: Monitor(notify=...) and MonitorCallback(notify=...) send each
alert of at least the minimum severity to local receivers, and a hanging or failing one never holds up
the training."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from collectors import Monitor, MonitorCallback
from collectors import runformat as rf
from tests.helpers.http_receiver import Receiver


def test_monitor_sends_critical_alerts_and_counts_in_status(tmp_path: Path) -> None:
    with Receiver(hang_s=20) as rx:
        # sent in this order on the notifier thread: the hanging one last, so close() gives up on it alone
        urls = [rx.url("json", "/ok"), rx.url("json", "/fail"), rx.url("json", "/hang")]
        t0 = time.monotonic()
        with Monitor(tmp_path / "run", notify=urls) as mon:
            for step in range(1, 30):
                mon.log(step, loss=2.0 - 0.01 * step, grad_norm=1.0, lr=1e-3)
            mon.log(30, loss=math.nan, grad_norm=1.0, lr=1e-3)  # critical
            for step in range(31, 40):
                mon.log(step, loss=1.7, grad_norm=1.0, lr=1e-3)
            logging_s = time.monotonic() - t0
        got = rx.wait_for("/ok", 1)
        assert logging_s < 10, "a hanging receiver held up the training loop"
        assert len(got) == 1  # one message: the critical NaN (low events are below the default minimum)
        body = got[0].data
        assert "non_finite_loss" in (body.get("title", "") + body.get("message", "")) and "30" in body.get("message", "")
        assert rx.received("/fail")  # tried, failed, counted
    status, _ = rf.read_json(rf.RunPaths.of(tmp_path / "run").status)
    assert status["notify"]["sent"] >= 1 and status["notify"]["failed"] >= 1


def test_bad_notify_url_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nosuchscheme"):
        Monitor(tmp_path, notify="nosuchscheme://x")
    with pytest.raises(ValueError, match="nosuchscheme"):
        MonitorCallback(base_dir=tmp_path, notify=["nosuchscheme://x"])


@pytest.mark.integration
def test_trainer_callback_notifies_a_hidden_nan(tmp_path: Path) -> None:
    import torch
    from transformers import Trainer, TrainerCallback

    from collectors.demo import build_demo, training_arguments

    class PoisonWeights(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **_):
            if state.global_step == 19:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float("nan"))

    with Receiver() as rx:
        setup = build_demo(seed=0, n_train=200, n_eval=16)
        args = training_arguments(str(tmp_path / "hf"), 25, logging_steps=5, eval_steps=1000)
        trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, eval_dataset=setup.eval,
                          processing_class=setup.tokenizer,
                          callbacks=[PoisonWeights(), MonitorCallback(base_dir=tmp_path / "run",
                                                                      notify=rx.url("json", "/ok"))])
        trainer.train()
        got = rx.wait_for("/ok", 1)
    assert got and "non_finite" in got[0].data.get("message", "") + got[0].data.get("title", "")
    assert "run" in got[0].data.get("message", "") + got[0].data.get("title", "")
