"""Notifications (issue 10): pure units for formatting, filtering, rate limit and settings, then real local
HTTP receivers (apprise json:// and form:// to 127.0.0.1) including one that hangs and one that returns 500,
and a real PyTorch loop that keeps training while its receiver hangs.

Timing bounds are deliberately generous (the machine is shared): a submit must return in well under a
second while the receiver holds each request for 30 s, and close() within a few seconds of its timeout.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from collectors.notify import (
    ALERT_GROUP_GAP_STEPS,
    DEFAULT_MIN_SEVERITY,
    DEFAULT_RATE_LIMIT_PER_MIN,
    ENV_VAR,
    Notifier,
    RateLimiter,
    dashboard_link,
    format_message,
    format_value,
    normalize_severity,
    notifier_from_settings,
    parse_notify_urls,
    severity_passes,
)
from tests.helpers.http_receiver import Receiver

FAST_S = 0.5  # a submit (no I/O on the caller's thread) must return well within this
HANG_S = 30.0  # the hanging receiver holds a request this long (released at teardown)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(hang_s=HANG_S) as rec:
        yield rec


def incident(i: int = 1, *, state: str = "open", severity: str = "high", rule: str = "loss_spike",
             run: str = "gpt2-run") -> dict:
    return {"id": f"inc-{i}", "rule": rule, "severity": severity, "run": run, "first_step": 100 + i,
            "last_step": 120 + i, "count": 3, "worst_value": 4.25, "message": f"loss jumped ({i})",
            "state": state}


def alert(step: int, *, rule: str = "loss_spike", severity: str = "high", value: float = 2.5) -> dict:
    return {"rule": rule, "category": "loss", "severity": severity, "step": step, "value": value,
            "threshold": 1.3, "message": f"{rule} at {step}", "metadata": {}, "reason": rule}


def wait_stats(n: Notifier, key: str, at_least: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = n.stats()
        if s[key] >= at_least:
            return s
        time.sleep(0.05)
    return n.stats()


# ------------------------------------------------------------------------------------------------
# pure units
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    (None, []),
    ("", []),
    ("json://h/a", ["json://h/a"]),
    ("json://h/a,json://h/b", ["json://h/a", "json://h/b"]),
    ("json://h/a  form://h/b\n", ["json://h/a", "form://h/b"]),
    ("json://h/a, json://h/a", ["json://h/a"]),
    ("mailto://u:p@gmail.com?to=a@x.org,b@y.org,slack://T/B/C",
     ["mailto://u:p@gmail.com?to=a@x.org,b@y.org", "slack://T/B/C"]),
    (["json://h/a", " form://h/b "], ["json://h/a", "form://h/b"]),
    (("ntfy://topic",), ["ntfy://topic"]),
], ids=["none", "empty", "one", "comma", "whitespace", "dedupe", "comma-inside-url", "list", "tuple"])
def test_parse_notify_urls(value, expected):
    assert parse_notify_urls(value) == expected


@pytest.mark.parametrize("value,match", [
    (123, "URL string"),
    ([1], "item 0 is a int"),
    ("hooks.slack.com/abc", "not a notification URL"),
    (["json://ok", "nope"], "not a notification URL"),
], ids=["int", "int-item", "no-scheme", "bad-item"])
def test_parse_notify_urls_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        parse_notify_urls(value)


@pytest.mark.parametrize("value,expected", [
    ("critical", "critical"), ("HIGH", "high"), ("warning", "medium"), ("info", "low"), ("error", "high"),
    (None, "low"), ("bogus", "low"),
], ids=lambda v: str(v))
def test_normalize_severity(value, expected):
    assert normalize_severity(value) == expected


@pytest.mark.parametrize("severity,minimum,passes", [
    ("critical", "high", True), ("high", "high", True), ("medium", "high", False), ("low", "high", False),
    ("medium", "medium", True), ("low", "low", True), ("high", "critical", False),
], ids=lambda v: str(v))
def test_severity_filter(severity, minimum, passes):
    assert severity_passes(severity, minimum) is passes


@pytest.mark.parametrize("value,text", [
    (0.55443, "0.5544"), (float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "-Inf"), (None, "n/a"),
    (120, "120"), (1.5e-5, "1.5e-05"), ("NaN", "NaN"),
], ids=["float", "nan", "inf", "-inf", "none", "int", "tiny", "string"])
def test_format_value(value, text):
    assert format_value(value) == text


def test_dashboard_link_quotes_the_run():
    assert dashboard_link(None, "r") is None
    assert dashboard_link("http://box:8050/", "exp 1/a&b") == "http://box:8050/alerts?run=exp%201%2Fa%26b"


def test_format_message_opened_names_run_rule_step_value_and_link():
    msg = format_message({"run": "gpt2-run", "rule": "loss_spike", "severity": "high", "state": "open",
                          "step": 121, "value": 4.2512, "threshold": 1.3, "message": "loss jumped"},
                         public_url="http://box:8050")
    assert msg.title == "Trainboard: HIGH loss_spike on gpt2-run"
    assert msg.notify_type == "failure"
    for part in ("Run: gpt2-run", "Rule: loss_spike (high)", "Step: 121", "Value: 4.251 (threshold 1.3)",
                 "loss jumped", "Dashboard: http://box:8050/alerts?run=gpt2-run"):
        assert part in msg.body


def test_format_message_resolved_and_rate_note():
    msg = format_message({"run": "r", "rule": "nan_loss", "severity": "critical", "state": "resolved",
                          "step": 40, "value": float("nan"), "first_step": 30, "last_step": 40, "count": 5},
                         suppressed_before=3)
    assert msg.title == "Trainboard: resolved nan_loss on r"
    assert msg.notify_type == "success"
    assert "Resolved at step 40 (steps 30-40, 5 firing(s))" in msg.body
    assert "Worst value: NaN" in msg.body
    assert "3 more notification(s) were held back" in msg.body
    assert "Dashboard" not in msg.body


def test_format_message_medium_is_a_warning_without_link():
    msg = format_message({"rule": "gradient_variance", "severity": "medium", "step": 3, "value": None})
    assert msg.notify_type == "warning" and "Value: n/a" in msg.body and "Run: run" in msg.body


def test_rate_limiter_sliding_window():
    now = [0.0]
    rl = RateLimiter(2, clock=lambda: now[0])
    assert [rl.allow(), rl.allow(), rl.allow()] == [True, True, False]
    now[0] = 59.0
    assert rl.allow() is False
    now[0] = 60.5
    assert [rl.allow(), rl.allow(), rl.allow()] == [True, True, False]
    assert all(RateLimiter(0).allow() for _ in range(100))
    assert all(RateLimiter(None).allow() for _ in range(100))


# ------------------------------------------------------------------------------------------------
# settings and validation (apprise parses the URLs; nothing is sent)
# ------------------------------------------------------------------------------------------------

def test_settings_none_without_env():
    assert notifier_from_settings(None, env={}) is None
    assert notifier_from_settings([], env={ENV_VAR: "  "}) is None


def test_settings_env_var_comma_and_space_separated():
    n = notifier_from_settings(None, env={ENV_VAR: "json://127.0.0.1:9/a, form://127.0.0.1:9/b json://127.0.0.1:9/c"})
    assert isinstance(n, Notifier)
    assert n.urls == ["json://127.0.0.1:9/a", "form://127.0.0.1:9/b", "json://127.0.0.1:9/c"]
    assert n.min_severity == DEFAULT_MIN_SEVERITY == "high"
    assert n.rate_limit_per_min == DEFAULT_RATE_LIMIT_PER_MIN
    assert n.on_resolved is False


def test_settings_explicit_and_env_are_joined_false_turns_off():
    env = {ENV_VAR: "json://127.0.0.1:9/env"}
    n = notifier_from_settings("json://127.0.0.1:9/arg", env=env, min_severity="medium", run_name="r")
    assert n is not None and n.urls == ["json://127.0.0.1:9/arg", "json://127.0.0.1:9/env"]
    assert n.min_severity == "medium" and n.run_name == "r"
    assert notifier_from_settings(False, env=env) is None
    assert notifier_from_settings(n, env=env) is n


@pytest.mark.parametrize("notify,env,match", [
    (None, {ENV_VAR: "not-a-url"}, ENV_VAR),
    ("bogus://x", {}, "apprise does not know the scheme 'bogus'"),
    ("slack://too-short", {}, r"notify URL #1 \(slack://...\): apprise cannot use this URL"),
    (42, {}, "notify must be"),
], ids=["env-garbage", "unknown-scheme", "invalid-slack", "wrong-type"])
def test_settings_bad_values(notify, env, match):
    with pytest.raises(ValueError, match=match):
        notifier_from_settings(notify, env=env)


@pytest.mark.parametrize("kwargs,match", [
    (dict(min_severity="urgent"), "min_severity must be one of critical, high, medium, low"),
    (dict(rate_limit_per_min=-1), "rate_limit_per_min must be >= 0"),
    (dict(rate_limit_per_min=2.5), "whole number"),
    (dict(send_timeout_s=0), "send_timeout_s must be a positive"),
    (dict(queue_size=0), "queue_size must be a positive"),
    (dict(public_url="box:8050"), "public_url must be"),
], ids=["severity", "negative-rate", "float-rate", "timeout", "queue", "public-url"])
def test_notifier_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Notifier("json://127.0.0.1:9/x", **kwargs)


def test_notifier_needs_a_url():
    with pytest.raises(ValueError, match="at least one notification URL"):
        Notifier([])


def test_secrets_stay_out_of_error_messages():
    with pytest.raises(ValueError) as err:
        Notifier("slack://SECRETTOKEN")
    assert "SECRETTOKEN" not in str(err.value)


def test_importing_the_collector_does_not_import_apprise():
    code = ("import sys, collectors, collectors.notify; from collectors import Notifier; "
            "assert 'apprise' not in sys.modules, 'apprise imported eagerly'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parent.parent),
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_desktop_url_without_its_system_support_is_refused_with_the_reason():
    from apprise.manager_plugins import NotificationManager

    if NotificationManager()["dbus"].enabled:
        pytest.skip("this machine can show dbus desktop notifications")
    with pytest.raises(ValueError, match=r"dbus:// service is disabled on this machine"):
        Notifier("dbus://")


def test_missing_apprise_warns_once_and_training_goes_on(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "apprise", None)  # what `import apprise` sees when it is not installed
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert notifier_from_settings("json://127.0.0.1:9/x", env={}) is None
    warnings = [r for r in caplog.records if "apprise package is not installed" in r.getMessage()]
    assert len(warnings) == 1
    assert notifier_from_settings(None, env={}) is None  # nothing configured: no warning needed


# ------------------------------------------------------------------------------------------------
# real local receivers
# ------------------------------------------------------------------------------------------------

def test_json_and_form_messages_arrive_with_content(receiver):
    n = Notifier([receiver.url("json", "/ok/json"), receiver.url("form", "/ok/form")],
                 public_url="http://gpu-box:8050", send_timeout_s=10)
    assert n.submit_incident_opened(incident(1, severity="critical", rule="nan_loss")) is True
    n.close(timeout=20)
    (js,) = receiver.wait_for("/ok/json", 1)
    (form,) = receiver.wait_for("/ok/form", 1)
    for data in (js.data, form.data):
        assert data["title"] == "Trainboard: CRITICAL nan_loss on gpt2-run"
        assert data["type"] == "failure"
        body = data["message"]
        for part in ("Run: gpt2-run", "Rule: nan_loss (critical)", "Step: 101", "Value: 4.25",
                     "loss jumped (1)", "Dashboard: http://gpu-box:8050/alerts?run=gpt2-run"):
            assert part in body, (part, body)
    assert form.content_type.startswith("application/x-www-form-urlencoded")
    assert n.stats() == {"sent": 2, "failed": 0, "dropped": 0, "suppressed": 0, "rate_limited": 0,
                         "below_severity": 0, "pending": 0}


def test_one_message_per_incident_opened_and_resolved(receiver):
    n = Notifier(receiver.url("json", "/ok"), on_resolved=True)
    assert n.submit(incident(7)) is True
    for _ in range(5):  # the caller re-submits the open incident at every update
        assert n.submit(dict(incident(7), count=9, last_step=200)) is False
    assert n.submit_incident_resolved(incident(7, state="resolved")) is True
    assert n.submit_incident_resolved(incident(7, state="resolved")) is False
    n.close(timeout=20)
    got = receiver.wait_for("/ok", 2)
    assert [r.data["type"] for r in got] == ["failure", "success"]
    assert got[1].data["title"] == "Trainboard: resolved loss_spike on gpt2-run"
    assert "steps 107-127, 3 firing(s)" in got[1].data["message"]
    assert n.stats()["sent"] == 2


def test_resolved_is_off_by_default_and_needs_an_announced_opening(receiver):
    quiet = Notifier(receiver.url("json", "/ok/quiet"))
    assert quiet.submit(incident(1)) is True
    assert quiet.submit(incident(1, state="resolved")) is False
    quiet.close(timeout=20)
    loud = Notifier(receiver.url("json", "/ok/loud"), on_resolved=True)
    assert loud.submit(incident(2, state="resolved")) is False  # nobody was told it opened
    assert loud.submit(incident(3, severity="low")) is False  # below min severity ...
    assert loud.submit(incident(3, severity="low", state="resolved")) is False  # ... so no resolution either
    loud.close(timeout=20)
    assert len(receiver.wait_for("/ok/quiet", 1)) == 1
    assert receiver.received("/ok/loud") == []
    assert loud.stats()["below_severity"] == 1


def test_severity_filter_on_real_sends(receiver):
    default = Notifier(receiver.url("json", "/ok/default"))
    medium = Notifier(receiver.url("json", "/ok/medium"), min_severity="medium")
    for n in (default, medium):
        n.submit(incident(1, severity="medium", rule="gradient_variance"))
        n.submit(incident(2, severity="low", rule="best_model"))
        n.submit(incident(3, severity="critical", rule="nan_loss"))
        n.close(timeout=20)
    rules = lambda prefix: sorted(r.data["title"].split()[2] for r in receiver.received(prefix))  # noqa: E731
    assert rules("/ok/default") == ["nan_loss"]
    assert rules("/ok/medium") == ["gradient_variance", "nan_loss"]
    assert default.stats()["suppressed"] == 2 and medium.stats()["suppressed"] == 1


def test_plain_alerts_grouped_by_run_and_rule_until_resolved(receiver):
    n = Notifier(receiver.url("json", "/ok"), on_resolved=True, run_name="demo")
    assert n.submit(alert(10)) is True
    assert [n.submit(alert(s, value=v)) for s, v in ((11, 3.0), (12, 9.5), (13, 2.0))] == [False] * 3
    assert n.submit(alert(12, rule="gradient_explosion", severity="critical")) is True
    assert n.submit(alert(13 + ALERT_GROUP_GAP_STEPS + 1)) is True  # a long quiet gap: a new group
    assert n.resolve("demo", "gradient_explosion") == 1
    assert n.submit(alert(20, rule="gradient_explosion", severity="critical")) is True  # after resolve: new
    n.close(timeout=20)
    titles = [r.data["title"] for r in receiver.wait_for("/ok", 5)]
    assert titles == ["Trainboard: HIGH loss_spike on demo", "Trainboard: CRITICAL gradient_explosion on demo",
                      "Trainboard: HIGH loss_spike on demo", "Trainboard: resolved gradient_explosion on demo",
                      "Trainboard: CRITICAL gradient_explosion on demo"]
    first = receiver.received("/ok")[0].data["message"]
    assert "Step: 10" in first and "Value: 2.5 (threshold 1.3)" in first


def test_rate_limit_counts_and_mentions_held_back_messages(receiver):
    now = [1000.0]
    n = Notifier(receiver.url("json", "/ok"), rate_limit_per_min=2, clock=lambda: now[0])
    assert [n.submit(incident(i)) for i in range(4)] == [True, True, False, False]
    now[0] += 61
    assert n.submit(incident(9)) is True
    n.close(timeout=20)
    got = receiver.wait_for("/ok", 3)
    assert len(got) == 3
    assert "2 more notification(s) were held back by the rate limit" in got[2].data["message"]
    s = n.stats()
    assert (s["sent"], s["suppressed"], s["rate_limited"]) == (3, 2, 2)


def test_failing_receiver_counted_and_reported_once(receiver, caplog):
    n = Notifier(receiver.url("json", "/fail"), rate_limit_per_min=0)
    with caplog.at_level(logging.DEBUG):
        for i in range(3):
            t0 = time.perf_counter()
            assert n.submit(incident(i)) is True
            assert time.perf_counter() - t0 < FAST_S
        stats = wait_stats(n, "failed", 3)
        n.close(timeout=10)
    assert stats["failed"] == 3 and stats["sent"] == 0
    assert len(receiver.received("/fail")) == 3
    ours = [r for r in caplog.records if r.name == "trainboard" and "notify URL #1" in r.getMessage()]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "error=500" in ours[0].getMessage() or "500" in ours[0].getMessage()
    assert [r for r in caplog.records if r.name.startswith("apprise")] == []  # no per-message console noise


def test_hanging_receiver_never_blocks_submit_and_close_keeps_its_timeout(receiver):
    n = Notifier(receiver.url("json", "/hang"), send_timeout_s=5, rate_limit_per_min=0)
    t0 = time.perf_counter()
    assert n.submit(incident(1)) is True
    assert time.perf_counter() - t0 < FAST_S
    deadline = time.monotonic() + 30
    while receiver.hanging < 1 and time.monotonic() < deadline:  # the sender is now stuck in that request
        time.sleep(0.05)
    assert receiver.hanging == 1
    for i in (2, 3):
        t0 = time.perf_counter()
        assert n.submit(incident(i)) is True
        assert time.perf_counter() - t0 < FAST_S
    t0 = time.perf_counter()
    n.close(timeout=1.0)
    assert time.perf_counter() - t0 < 4.0  # 1 s asked, far below the 30 s hang
    assert n.stats()["dropped"] == 2  # the two queued behind the hung one
    assert wait_stats(n, "failed", 1)["failed"] == 1  # the hung send hits its own 5 s timeout
    assert n.submit(incident(4)) is False and n.stats()["dropped"] == 3  # after close nothing is sent


def test_full_queue_drops_and_counts(receiver, caplog):
    n = Notifier(receiver.url("json", "/hang"), send_timeout_s=5, rate_limit_per_min=0, queue_size=2)
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        results = [n.submit(incident(i)) for i in range(10)]
    assert results.count(True) <= 3  # one in flight at most, two waiting
    assert n.stats()["dropped"] == results.count(False) >= 7
    assert len([r for r in caplog.records if "queue is full" in r.getMessage()]) == 1
    t0 = time.perf_counter()
    n.close(timeout=0.5)
    assert time.perf_counter() - t0 < 4.0


def test_bad_record_never_raises(receiver, caplog):
    n = Notifier(receiver.url("json", "/ok"))
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert n.submit(object()) is False
        assert n.submit_incident_opened(42) is False
    assert len([r for r in caplog.records if "could not be used" in r.getMessage()]) == 1
    n.close(timeout=5)


@pytest.mark.integration
def test_plain_pytorch_loop_keeps_training_while_the_receiver_hangs(receiver):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1)
    notifier = notifier_from_settings(None, env={ENV_VAR: receiver.url("json", "/hang")}, run_name="loop",
                                      send_timeout_s=5, rate_limit_per_min=0)
    assert notifier is not None
    worst_submit = 0.0
    losses: list[float] = []
    loop_t0 = time.perf_counter()
    for step in range(300):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        t0 = time.perf_counter()
        if step % 10 == 0:  # a new incident every 10 steps, plus a plain alert every step
            notifier.submit_incident_opened({"id": f"i{step}", "rule": "loss_spike", "severity": "high",
                                             "run": "loop", "first_step": step, "last_step": step, "count": 1,
                                             "worst_value": losses[-1], "message": "test", "state": "open"})
        notifier.submit({"rule": "gradient_explosion", "severity": "critical", "step": step,
                         "value": 1e4, "threshold": 10.0, "message": "big", "metadata": {}, "reason": "g"})
        worst_submit = max(worst_submit, time.perf_counter() - t0)
    loop_s = time.perf_counter() - loop_t0
    assert losses[-1] < losses[0] * 0.5  # it trained normally
    assert worst_submit < FAST_S
    assert receiver.hanging >= 1  # the receiver really was holding a request during the loop
    assert loop_s < HANG_S  # the loop never waited on the hung receiver
    t0 = time.perf_counter()
    notifier.close(timeout=1.0)
    assert time.perf_counter() - t0 < 4.0
    s = notifier.stats()
    assert s["sent"] == 0 and s["dropped"] >= 1
