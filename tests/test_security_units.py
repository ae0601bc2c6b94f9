"""Pure parts of issue 14's hardening: Host/Origin decisions, token helpers, path containment, listed runs,
the threshold schema and the cache-folder cleanup. The real-server proofs are in test_security_server.py."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callbacks.alerts import save_threshold, triggered_slider
from callbacks.snapshots import apply_action, snapshot_detail
from collectors import runformat as rf
from collectors import snapshots as S
from components.alerts import SLIDERS
from services.cachedir import stale_cache_dirs
from services.catalog import RunCatalog as RunStore
from services.security import (PathRefused, TokenRedactingFilter, allowed_host_names, host_refusal, inside_base,
                               origin_refusal, redact_tokens, require_listed_run, safe_run_root, safe_snapshot,
                               split_host, token_ok, without_token)
from services.validation import EDITABLE_THRESHOLDS, THRESHOLDS_BY_KEY, ThresholdRefused, validate_threshold

NAMES = allowed_host_names("127.0.0.1", ["trainboard.test"])


# --------------------------------------------------------------------------- hosts

@pytest.mark.parametrize("value,want", [
    ("localhost:8081", ("localhost", 8081)), ("LocalHost", ("localhost", None)), ("[::1]:80", ("::1", 80)),
    ("::1", ("::1", None)), ("127.0.0.1:1", ("127.0.0.1", 1)), ("localhost.:8081", ("localhost", 8081)),
    ("", None), (None, None), ("a b", None), ("x:0", None), ("x:65536", None), ("x:8o", None), ("[::1", None),
    ("[::1]x", None), ("u@evil.test", None), ("evil.test/x", None), (":8081", None),
], ids=lambda v: repr(v))
def test_split_host(value, want) -> None:
    assert split_host(value) == want


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1:8081", True), ("127.9.9.9", True), ("localhost:1234", True), ("[::1]:8081", True),
    ("trainboard.test:8081", True), ("TRAINBOARD.TEST.", True),
    ("evil.test:8081", False), ("localhost.evil.test", False), ("127.0.0.1.nip.io", False),
    ("192.168.1.5:8081", False), ("", False), (None, False),
], ids=lambda v: repr(v))
def test_host_refusal(host, ok: bool) -> None:
    reason = host_refusal(host, NAMES)
    assert (reason is None) is ok
    if not ok:
        assert reason.startswith("refused:") and "\n" not in reason


def test_wildcard_bind_accepts_address_literals_but_not_names() -> None:
    names = allowed_host_names("0.0.0.0")
    assert names == frozenset({"localhost"})
    assert host_refusal("192.168.1.5:8081", names, any_ip=True) is None
    assert host_refusal("[fe80::1]:8081", names, any_ip=True) is None
    assert host_refusal("evil.test:8081", names, any_ip=True) is not None
    assert host_refusal("192.168.1.5:8081", names) is not None
    assert "mybox" in allowed_host_names("MyBox.")


@pytest.mark.parametrize("method,origin,host,ok", [
    ("POST", None, "localhost:8081", True),
    ("GET", "http://evil.test", "localhost:8081", True),  # reading is guarded by Host and the token
    ("POST", "http://localhost:8081", "localhost:8081", True),
    ("POST", "http://LOCALHOST:8081", "localhost:8081", True),
    ("POST", "http://example.com", "example.com", True),
    ("POST", "https://example.com", "example.com:443", True),
    ("POST", "http://evil.test:8081", "localhost:8081", False),
    ("POST", "http://localhost:8888", "localhost:8081", False),
    ("DELETE", "http://127.0.0.1:8081", "localhost:8081", False),
    ("POST", "null", "localhost:8081", False),
    ("POST", "file://", "localhost:8081", False),
    ("POST", "http://localhost:99999", "localhost:8081", False),
    ("PUT", "http://localhost:8081", None, False),
])
def test_origin_refusal(method: str, origin, host, ok: bool) -> None:
    assert (origin_refusal(method, origin, host) is None) is ok


# --------------------------------------------------------------------------- tokens

def test_token_ok_is_exact() -> None:
    assert token_ok("secret-token", None, "secret-token")
    assert not token_ok("secret-token", None, "secret-tokeN", "", "secret-token ", "secret-tok")
    assert not token_ok("secret-token")
    assert token_ok("sécret-tökén", "sécret-tökén") and not token_ok("sécret-tökén", "\udcff")


@pytest.mark.parametrize("path,query,want", [
    ("/", "token=abc", "/"), ("/alerts", "a=1&token=abc&b=2", "/alerts?a=1&b=2"), ("/", "", "/"),
    ("/x", "tok%65n=abc&q=%2F", "/x?q=%2F"), ("/", "token=a&token=b", "/"), ("/", "tokens=1", "/?tokens=1"),
])
def test_without_token(path: str, query: str, want: str) -> None:
    assert without_token(path, query) == want


def test_redaction_of_request_lines() -> None:
    line = '127.0.0.1 - - [x] "GET /alerts?a=1&token=s3cret-xyz&b=2 HTTP/1.1" 302 -'
    assert redact_tokens(line) == '127.0.0.1 - - [x] "GET /alerts?a=1&token=[redacted]&b=2 HTTP/1.1" 302 -'
    assert redact_tokens("GET /?TOKEN=abc HTTP/1.1") == "GET /?TOKEN=[redacted] HTTP/1.1"
    assert redact_tokens("mytoken=abc") == "mytoken=abc"
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"%s" %s %s',
                               ("GET /?token=s3cret-xyz HTTP/1.1", "302", "-"), None)
    assert TokenRedactingFilter().filter(record) and "s3cret" not in record.getMessage()


# --------------------------------------------------------------------------- paths

@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "run" / "snapshots").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.json").write_text('{"reason": "SECRET"}')
    return {"base": base, "outside": outside, "run": base / "run"}


def test_inside_base_follows_symlinks(tree: dict[str, Path]) -> None:
    base, outside, run = tree["base"], tree["outside"], tree["run"]
    assert inside_base(base, run / "not-yet" / "file") == run / "not-yet" / "file"
    os.symlink(outside, run / "link")
    os.symlink(run, base / "inner-link")  # a link that stays inside is fine
    assert inside_base(base, base / "inner-link" / "snapshots")
    for bad in (run / "link", run / "link" / "secret.json", run / "link" / "missing", base / ".." / "outside", Path("/etc")):
        with pytest.raises(PathRefused, match="leads outside the base directory"):
            inside_base(base, bad)
    os.symlink(run / "loop", run / "loop")
    with pytest.raises(PathRefused):
        inside_base(base, run / "loop" / "x")


def test_safe_run_root_and_snapshot_refuse_each_level(tree: dict[str, Path]) -> None:
    base, outside, run = tree["base"], tree["outside"], tree["run"]
    assert safe_run_root(base, run) == run
    name = S.create_snapshot(run, kind="manual", reason=None, metadata={"reason": "manual"}, status={},
                             write_model=lambda d: (d / "w").write_text("w")).name
    snap = run / "snapshots" / name
    assert safe_snapshot(base, snap) == snap
    (snap / rf.SNAPSHOT_METADATA).unlink()
    os.symlink(outside / "secret.json", snap / rf.SNAPSHOT_METADATA)
    with pytest.raises(PathRefused, match="metadata.json"):
        safe_snapshot(base, snap)
    assert "SECRET" not in str(snapshot_detail(run, name, base)) and "refused" in str(snapshot_detail(run, name, base))
    msg, ok = apply_action(run, name, "delete", base)
    assert not ok and "leads outside" in msg and snap.is_dir()
    os.symlink(outside, run / "control")
    with pytest.raises(PathRefused, match="control folder"):
        safe_run_root(base, run)


def test_require_listed_run_only_accepts_the_store_list(tmp_path: Path) -> None:
    base = tmp_path / "base"
    for rid in ("a", "b"):
        rf.write_json_atomic(rf.RunPaths.of(base / rid).status, {"step": 1})
    (base / "a" / "hf_output").mkdir()
    store = RunStore(base, watch=False)
    assert require_listed_run(store, "a") == store.base / "a"
    for bad in ("a/hf_output", "a/logs", "../base/a", "a/", "/etc", "", None, ["a"], {"a": 1}, "c"):
        with pytest.raises(PathRefused):
            require_listed_run(store, bad)
    os.symlink(tmp_path, base / "b" / "snapshots")
    with pytest.raises(PathRefused, match="snapshots folder"):
        require_listed_run(store, "b")
    single = RunStore(base / "a", watch=False)
    assert require_listed_run(single, ".") == single.base


def test_run_store_lock_is_fresh_in_a_forked_child(tmp_path: Path) -> None:
    """"Snapshot now" runs in a forked process: a lock held by the watchdog thread at fork time must not
    hang it."""
    rf.write_json_atomic(rf.RunPaths.of(tmp_path / "a").status, {"step": 1})
    store = RunStore(tmp_path, watch=False)
    store._lock.acquire()  # as if another thread held it when the process forked
    try:
        pid = os.fork()
        if pid == 0:  # child: must answer, not hang
            os._exit(0 if store.run_ids() == ["a"] else 1)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung on the store's lock")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        store._lock.release()


# --------------------------------------------------------------------------- thresholds

def test_sliders_match_the_schema() -> None:
    assert [(s.key, s.min, s.max) for s in SLIDERS] == [(t.key, t.lo, t.hi) for t in EDITABLE_THRESHOLDS]


@pytest.mark.parametrize("key,value,want", [
    ("smart.loss_spike_threshold", 0.05, 0.05), ("smart.loss_spike_threshold", 2, 2),
    ("snapshots.min_steps_between_saves", 250, 250), ("snapshots.min_steps_between_saves", 250.0, 250),
    ("convergence.plateau_threshold", 0, 0),
])
def test_validate_threshold_accepts(key: str, value, want) -> None:
    spec, got = validate_threshold(key, value)
    assert spec is THRESHOLDS_BY_KEY[key] and got == want and type(got) is type(want)


@pytest.mark.parametrize("key,value", [
    ("stop_on_critical", True), ("nodot", 1), ("smart.nonexistent", 1), ("smart.loss_window", 5),
    ("smart.best_model_metric", "loss"), (None, 1), (["x"], 1), ("smart.loss_spike_threshold", 0.049),
    ("smart.loss_spike_threshold", float("nan")), ("smart.loss_spike_threshold", float("inf")),
    ("smart.loss_spike_threshold", True), ("smart.loss_spike_threshold", "1"), ("smart.loss_spike_threshold", None),
    ("snapshots.min_steps_between_saves", 10**24), ("snapshots.min_steps_between_saves", 10**400),
    ("snapshots.min_steps_between_saves", 1.5), ("snapshots.min_steps_between_saves", -1),
], ids=repr)
def test_validate_threshold_refuses(key, value) -> None:
    with pytest.raises(ThresholdRefused, match=r"^Not saved: "):
        validate_threshold(key, value)


def test_save_threshold_never_writes_a_refused_key(tmp_path: Path) -> None:
    msg, ok = save_threshold(tmp_path, "smart.loss_window", 3)
    assert not ok and msg.startswith("Not saved:") and not rf.RunPaths.of(tmp_path).thresholds.exists()
    msg, ok = save_threshold(tmp_path, "x" * 5000, 3)
    assert not ok and len(msg) < 500


def test_triggered_slider_tolerates_hand_made_requests() -> None:
    item = {"id": {"type": "alerts-threshold", "key": "smart.loss_spike_threshold"}, "property": "value", "value": 0.5}
    assert triggered_slider([[item]], [0.5], {"key": "smart.loss_spike_threshold"}) == ("smart.loss_spike_threshold", 0.5)
    assert triggered_slider([[item]], [0.5], {"key": "other"}) == ("other", None)
    assert triggered_slider([[{"no": "id"}]], [0.5], {"key": "k"}) == ("k", None)
    assert triggered_slider([], [], "not-a-dict") == (None, None)


# --------------------------------------------------------------------------- cache folders

def test_stale_cache_dirs(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f"trainboard-cache-{dead.pid}-a", f"trainboard-cache-{os.getpid()}-b", "trainboard-cache-x-c",
                 f"other-{dead.pid}-d"):
        (tmp_path / name).mkdir()
    (tmp_path / f"trainboard-cache-{dead.pid}-file").write_text("")
    os.symlink(tmp_path / f"trainboard-cache-{dead.pid}-a", tmp_path / f"trainboard-cache-{dead.pid}-link")
    alive = lambda pid: pid != dead.pid  # noqa: E731
    assert stale_cache_dirs(tmp_path, alive, os.getuid()) == [tmp_path / f"trainboard-cache-{dead.pid}-a"]
    assert stale_cache_dirs(tmp_path, alive, os.getuid() + 1) == []
    assert stale_cache_dirs(tmp_path / "missing", alive, None) == []


# --------------------------------------------------------------------------- command line

@pytest.mark.parametrize("argv,ok", [
    (["--allow-host", "mybox"], True), (["--allow-host", "a.test", "--allow-host", "b.test"], True),
    (["--allow-host", "fe80::1"], True), (["--allow-host", "mybox:8081"], False),
    (["--allow-host", "http://mybox"], False), (["--allow-host", ""], False), (["--allow-host", "a b"], False),
])
def test_allow_host_option(tmp_path: Path, argv: list[str], ok: bool, capsys: pytest.CaptureFixture[str]) -> None:
    from app import parse_args

    if ok:
        assert parse_args(["--base-dir", str(tmp_path), *argv]).allow_host == argv[1::2]
    else:
        with pytest.raises(SystemExit) as exc:
            parse_args(["--base-dir", str(tmp_path), *argv])
        assert exc.value.code == 2 and "--allow-host takes a host name" in capsys.readouterr().err
