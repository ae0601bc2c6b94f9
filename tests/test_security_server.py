"""Issue 14's repros as tests against a real ``python app.py`` on 127.0.0.1: each request is what an attacker
on this machine (or a web page in the user's browser) would send, shaped like the page's own requests.

Covered: a foreign ``Host`` (DNS rebinding) or ``Origin`` is refused and deletes nothing; crafted threshold
posts get "Not saved: ..." and never a 500; a symlinked ``snapshots/`` or ``metadata.json`` leading out of the
base dir is refused and the outside files stay; "Snapshot now" on something that is not a listed run is
refused; the ``?token=`` visit is redirected without the token and the token never reaches the log; the
callback cache folder is removed at exit; run files get the umask's mode.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dash._utils import clean_property_name, split_callback_id

from collectors import Monitor, runformat as rf
from collectors import snapshots as S
from components import ids
from tests.conftest import REPO

POLL_TIMEOUT_S = 120


# --------------------------------------------------------------------------- a small Dash client

class DashClient:
    """Sends callback requests the way the Dash renderer does, with chosen headers (Host, Origin, Cookie)."""

    def __init__(self, port: int, host: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}" if host is None else host
        self.headers = headers or {}
        self._deps: list[dict[str, Any]] | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers={"Host": self.host, **self.headers, **(headers or {})})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def deps(self) -> list[dict[str, Any]]:
        if self._deps is None:
            status, _, body = self.request("GET", "/_dash-dependencies", headers={"Host": f"127.0.0.1:{self.port}"})
            assert status == 200, body[:300]
            self._deps = json.loads(body)
        return self._deps

    def callback_for(self, input_id: str) -> dict[str, Any]:
        """The callback that has ``input_id`` (a plain id, or a pattern's ``type``) among its inputs."""
        for d in self.deps():
            for i in d["inputs"]:
                if i["id"] == input_id or (i["id"].startswith("{") and json.loads(i["id"]).get("type") == input_id):
                    return d
        raise AssertionError(f"no callback takes {input_id}")

    def body(self, dep: dict[str, Any], values: dict[str, Any], changed: list[str]) -> dict[str, Any]:
        """The request body: ``values`` by plain id, or (pattern inputs) the list of ``{id, property, value}``."""
        def fill(items: list[dict[str, Any]]) -> list[Any]:
            return [values[i["id"]] if i["id"].startswith("{") else
                    {"id": i["id"], "property": i["property"], "value": values.get(i["id"])} for i in items]
        parsed = split_callback_id(dep["output"])
        outs = [{"id": p["id"], "property": clean_property_name(p["property"])}
                for p in (parsed if isinstance(parsed, list) else [parsed])]
        return {"output": dep["output"], "outputs": outs if isinstance(parsed, list) else outs[0],
                "inputs": fill(dep["inputs"]), "state": fill(dep["state"]), "changedPropIds": changed}

    def post(self, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None,
             query: str = "") -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _, out = self.request("POST", "/_dash-update-component" + query, data,
                                      {"Content-Type": "application/json", **(headers or {})})
        return status, out

    def call(self, input_id: str, values: dict[str, Any], changed: list[str],
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One callback request; a background callback ("Snapshot now") is polled until it answers."""
        dep = self.callback_for(input_id)
        body = self.body(dep, values, changed)
        status, out = self.post(body, headers)
        if status != 200 or not out.startswith(b"{") or b'"cacheKey"' not in out:
            return status, out
        job = json.loads(out)
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while time.monotonic() < deadline:
            time.sleep(0.3)
            status, out = self.post(body, headers, f"?cacheKey={job['cacheKey']}&job={job['job']}")
            if status != 200 or b'"response"' in out:
                return status, out
        raise TimeoutError(f"background callback gave no result within {POLL_TIMEOUT_S} s: {out[:300]!r}")


def _make_run(run: Path, n_snapshots: int = 1) -> list[str]:
    """A real run written by the collector, with ``n_snapshots`` manual snapshots made by the real code."""
    with Monitor(run, anomaly=False) as mon:
        for i in range(1, 4):
            mon.log(i, loss=2.0 / i)
    names = []
    for _ in range(n_snapshots):
        names.append(S.create_snapshot(run, kind="manual", reason=None, metadata={"reason": "manual", "step": 3},
                                       status={"step": 3}, write_model=lambda d: (d / "w").write_text("w")).name)
        time.sleep(1.05)  # names carry the second
    return names


def _delete_values(run_id: str, name: str) -> tuple[dict[str, Any], list[str]]:
    values = {ids.SNAPSHOTS_PIN_BUTTON: None, ids.SNAPSHOTS_UNPIN_BUTTON: None, ids.SNAPSHOTS_DELETE_CONFIRM: 1,
              ids.SNAPSHOTS_SELECTED: name, ids.SHELL_RUN_PICKER: run_id, ids.SNAPSHOTS_REFRESH: 0}
    return values, [f"{ids.SNAPSHOTS_DELETE_CONFIRM}.submit_n_clicks"]


def _text(out: bytes) -> str:
    return out.decode("utf-8", "replace")


# --------------------------------------------------------------------------- 1. DNS rebinding

def test_foreign_host_or_origin_gets_403_and_deletes_nothing(tmp_path: Path, dashboard: Any) -> None:
    base = tmp_path / "base"
    run = base / "run-a"
    names = _make_run(run, 2)
    srv = dashboard(base, "--allow-host", "trainboard.test")
    port = srv.port
    evil = DashClient(port, host=f"evil.test:{port}")
    values, changed = _delete_values("run-a", names[0])

    # the repro: the Snapshots page's delete request under a foreign Host
    status, out = evil.post(DashClient(port).body(DashClient(port).callback_for(ids.SNAPSHOTS_DELETE_CONFIRM),
                                                  values, changed))
    assert status == 403, out
    assert _text(out).count("\n") == 1 and "evil.test" in _text(out) and "--allow-host" in _text(out)
    status, _, out = evil.request("GET", "/")
    assert status == 403 and "DNS rebinding" in _text(out)
    for bad in ("evil.test", "127.0.0.1.evil.test", "localhost.evil.test", "", "a b"):
        assert DashClient(port, host=bad).request("GET", "/_dash-layout")[0] == 403, bad
    assert sorted(i.name for i in S.list_snapshots(run)) == sorted(names)

    # the right Host, but a state-changing request from another origin (a page on another port or site)
    local = DashClient(port, host=f"localhost:{port}")
    for origin in (f"http://evil.test:{port}", "http://localhost:8888", "null", f"http://127.0.0.1:{port}"):
        status, out = local.call(ids.SNAPSHOTS_DELETE_CONFIRM, values, changed, {"Origin": origin})
        assert status == 403 and "cross-origin" in _text(out), (origin, out)
    assert sorted(i.name for i in S.list_snapshots(run)) == sorted(names)

    # accepted: every loopback spelling, localhost, --allow-host, any port; the page's own origin
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "127.0.0.2", f"[::1]:{port}",
                 f"trainboard.test:{port}", "localhost."):
        assert DashClient(port, host=host).request("GET", "/_dash-layout")[0] == 200, host
    status, out = local.call(ids.SNAPSHOTS_DELETE_CONFIRM, values, changed, {"Origin": f"http://localhost:{port}"})
    assert status == 200 and f"Deleted {names[0]}" in _text(out), out
    status, out = DashClient(port, host=f"trainboard.test:{port}").call(
        ids.SNAPSHOTS_DELETE_CONFIRM, *_delete_values("run-a", names[1]))
    assert status == 200 and f"Deleted {names[1]}" in _text(out), out
    assert S.list_snapshots(run) == []


# --------------------------------------------------------------------------- 2. control-file validation

CRAFTED = [  # (key, value, what the message must name)
    ("stop_on_critical", True, "stop_on_critical"),
    ("nodot", 1.0, "nodot"),
    ("smart.nonexistent", 1.0, "smart.nonexistent"),
    ("smart.loss_window", 3, "smart.loss_window"),
    ("smart.best_model_metric", "loss", "smart.best_model_metric"),
    ("snapshots.min_steps_between_saves", 10**24, "between 0 and 5000"),
    ("snapshots.min_steps_between_saves", 12.5, "an integer"),
    ("smart.loss_spike_threshold", 0.0, "between 0.05 and 2"),
    ("smart.loss_spike_threshold", 99.0, "between 0.05 and 2"),
    ("smart.loss_spike_threshold", "0.5", "must be a number"),
    ("smart.loss_spike_threshold", [0.5], "must be a number"),
    ("smart.loss_spike_threshold", {"a": 1}, "must be a number"),
    ("gradient.explosion_threshold", False, "must be a number"),
    (["list"], 1.0, "is not a threshold"),
]


def _threshold_body(client: DashClient, key: Any, value: Any, run_id: str = "run-a") -> dict[str, Any]:
    dep = client.callback_for(ids.ALERTS_THRESHOLD_TYPE)
    pid = {"type": ids.ALERTS_THRESHOLD_TYPE, "key": key}
    values = {dep["inputs"][0]["id"]: [{"id": pid, "property": "value", "value": value}], ids.SHELL_RUN_PICKER: run_id}
    return client.body(dep, values, [json.dumps(pid, sort_keys=True, separators=(",", ":")) + ".value"])


def test_crafted_threshold_posts_get_a_message_and_no_500(tmp_path: Path, dashboard: Any) -> None:
    base = tmp_path / "base"
    run = base / "run-a"
    _make_run(run, 0)
    srv = dashboard(base)
    client = DashClient(srv.port)
    thresholds = rf.RunPaths.of(run).thresholds
    for key, value, named in CRAFTED:
        status, out = client.post(_threshold_body(client, key, value))
        assert status == 200, (key, value, out[:500])
        assert "Not saved:" in _text(out) and named in _text(out), (key, value, out[:500])
        assert not thresholds.exists(), (key, value)
    # NaN and Infinity arrive as bare JSON tokens
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        raw = json.dumps(_threshold_body(client, "smart.loss_spike_threshold", 0.123456)).encode()
        status, out = client.post(raw.replace(b"0.123456", token))
        assert status == 200 and b"Not saved:" in out, (token, out[:300])
    # shaped wrong: the fired id names a key the inputs do not hold, a run that is not listed
    body = _threshold_body(client, "smart.loss_spike_threshold", 0.5)
    body["changedPropIds"] = ['{"key":"gradient.explosion_threshold","type":"alerts-threshold"}.value']
    status, out = client.post(body)
    assert status in (200, 204), out[:300]
    status, out = client.post(_threshold_body(client, "smart.loss_spike_threshold", 0.5, run_id="../run-a"))
    assert status == 200 and b"Not saved:" in out and b"is not a run listed" in out, out[:300]
    assert not thresholds.exists()
    # envelopes Dash itself cannot parse: one line, 400, never a 500 with a traceback
    for raw in (b"{}", b"[]", b'"s"', b'{"output": "nope.children"}',
                json.dumps({**body, "inputs": "zz"}).encode(), json.dumps({**body, "state": [{"id": 1}]}).encode()):
        status, out = client.post(raw)
        assert status == 400 and out.count(b"\n") == 1 and b"request refused" in out, (raw, status, out[:300])
    assert "Traceback" not in srv.log(), srv.log()[-3000:]
    # the page's own request still works
    status, out = client.post(_threshold_body(client, "snapshots.min_steps_between_saves", 250))
    assert status == 200 and b"Saved snapshots.min_steps_between_saves = 250" in out, out[:300]
    assert json.loads(thresholds.read_text())["snapshots"]["min_steps_between_saves"] == 250


# --------------------------------------------------------------------------- 3. symlinks

def test_symlinked_snapshots_dir_and_metadata_are_refused(tmp_path: Path, dashboard: Any) -> None:
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    # run-a's snapshots/ is a symlink to another run's snapshots/ outside the base dir
    out_names = _make_run(outside / "victim", 1)
    run_a = base / "run-a"
    _make_run(run_a, 0)
    os.symlink(rf.RunPaths.of(outside / "victim").snapshots_dir, rf.RunPaths.of(run_a).snapshots_dir)
    # run-b has a real snapshot whose metadata.json is a symlink to an outside file
    run_b = base / "run-b"
    [name_b] = _make_run(run_b, 1)
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"reason": "SECRET-CONTENT", "step": 7}))
    meta_b = rf.RunPaths.of(run_b).snapshots_dir / name_b / rf.SNAPSHOT_METADATA
    meta_b.unlink()
    os.symlink(secret, meta_b)
    secret_before = secret.read_bytes()

    srv = dashboard(base)
    client = DashClient(srv.port)
    # delete through the symlinked snapshots/: refused, the outside snapshot stays
    status, out = client.call(ids.SNAPSHOTS_DELETE_CONFIRM, *_delete_values("run-a", out_names[0]))
    assert status == 200 and "leads outside the base directory" in _text(out) and "Deleted" not in _text(out), out
    assert [i.name for i in S.list_snapshots(outside / "victim")] == out_names
    # the table says why instead of listing the outside snapshots
    table = {ids.SHELL_TICK: 1, ids.SHELL_RUN_PICKER: "run-a", ids.SNAPSHOTS_REFRESH: 0, ids.SNAPSHOTS_STATE: None,
             ids.SNAPSHOTS_SELECTED: None}
    status, out = client.call(ids.SNAPSHOTS_REFRESH, table, [f"{ids.SHELL_RUN_PICKER}.value"])
    assert status == 200 and "leads outside the base directory" in _text(out) and out_names[0] not in _text(out), out
    # the detail panel does not show the outside file; the table does not list the snapshot
    detail = {ids.SNAPSHOTS_SELECTED: name_b, ids.SNAPSHOTS_REFRESH: 0, ids.SHELL_RUN_PICKER: "run-b"}
    dep = next(d for d in client.deps() if d["output"].startswith(ids.SNAPSHOTS_DETAIL + "."))
    status, out = client.post(client.body(dep, detail, [f"{ids.SNAPSHOTS_SELECTED}.data"]))
    assert status == 200 and "SECRET-CONTENT" not in _text(out) and "refused" in _text(out), out
    status, out = client.call(ids.SNAPSHOTS_REFRESH, {**table, ids.SHELL_RUN_PICKER: "run-b"},
                              [f"{ids.SHELL_RUN_PICKER}.value"])
    assert status == 200 and "SECRET-CONTENT" not in _text(out) and name_b not in _text(out), out
    # pin and delete of that snapshot are refused too, and nothing outside changed
    for button in (ids.SNAPSHOTS_PIN_BUTTON, ids.SNAPSHOTS_DELETE_CONFIRM):
        values, _ = _delete_values("run-b", name_b)
        values.update({ids.SNAPSHOTS_PIN_BUTTON: 1 if button == ids.SNAPSHOTS_PIN_BUTTON else None,
                       ids.SNAPSHOTS_DELETE_CONFIRM: 1 if button == ids.SNAPSHOTS_DELETE_CONFIRM else None})
        prop = "n_clicks" if button == ids.SNAPSHOTS_PIN_BUTTON else "submit_n_clicks"
        status, out = client.call(ids.SNAPSHOTS_DELETE_CONFIRM, values, [f"{button}.{prop}"])
        assert status == 200 and "leads outside the base directory" in _text(out), out
    assert secret.read_bytes() == secret_before and sorted(p.name for p in outside.iterdir()) == ["secret.json", "victim"]
    assert (rf.RunPaths.of(run_b).snapshots_dir / name_b).is_dir()


# --------------------------------------------------------------------------- 4. "snapshot now" on a non-run

def test_snapshot_now_on_a_non_run_id_is_refused(tmp_path: Path, dashboard: Any) -> None:
    base = tmp_path / "base"
    run = base / "run-a"
    _make_run(run, 0)
    hf = run / "hf_output"
    (hf / "checkpoint-3").mkdir(parents=True)
    (hf / "checkpoint-3" / "model.safetensors").write_text("w")
    srv = dashboard(base)
    client = DashClient(srv.port)
    for run_id in ("run-a/hf_output", "run-a/logs", "run-a/hf_output/checkpoint-3", "../base/run-a", "run-a/"):
        status, out = client.call(ids.SNAPSHOTS_NOW_BUTTON, {ids.SNAPSHOTS_NOW_BUTTON: 1, ids.SHELL_RUN_PICKER: run_id},
                                  [f"{ids.SNAPSHOTS_NOW_BUTTON}.n_clicks"])
        assert status == 200 and "Snapshot not saved" in _text(out) and "is not a run listed" in _text(out), (run_id, out)
    for d in (hf, run / "logs", hf / "checkpoint-3"):
        assert not (d / rf.SNAPSHOTS_DIR).exists() and not (d / rf.CONTROL_DIR).exists(), d
    assert S.list_snapshots(run) == []


# --------------------------------------------------------------------------- 5. token hygiene

def test_token_visit_redirects_without_the_token_and_the_log_never_shows_it(tmp_path: Path, dashboard: Any) -> None:
    base = tmp_path / "base"
    base.mkdir()
    token = "s3cret-Token-4242"
    srv = dashboard(base, "--token", token, wait_headers={"X-Trainboard-Token": token})
    client = DashClient(srv.port)
    status, headers, _ = client.request("GET", f"/alerts?a=1&token={token}&b=two")
    assert status == 302 and headers["location"] == "/alerts?a=1&b=two", headers
    cookie = headers["set-cookie"]
    assert f"trainboard_token={token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, _ = client.request("GET", f"/?token={token}")
    assert status == 302 and headers["location"] == "/" and token not in headers["location"]
    assert client.request("GET", "/", headers={"Cookie": f"trainboard_token={token}"})[0] == 200
    assert client.request("GET", "/")[0] == 401
    assert client.request("GET", "/?token=" + token[:-1] + "X")[0] == 401
    assert client.request("GET", "/?token=" + token + "X")[0] == 401
    time.sleep(0.5)
    log = srv.log()
    assert "token=[redacted]" in log, log[-2000:]
    assert token not in log and token[:-1] not in log, log[-2000:]


# --------------------------------------------------------------------------- 6. leftovers, 7. file modes

def test_cache_dir_is_removed_at_exit_and_dead_leftovers_at_start(tmp_path: Path, dashboard: Any) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp / f"trainboard-cache-{dead.pid}-oldrun"
    (leftover / "sub").mkdir(parents=True)
    alive = tmp / f"trainboard-cache-{os.getpid()}-inuse"  # a running dashboard's: kept
    alive.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    srv = dashboard(base, env={"TMPDIR": str(tmp)})
    mine = sorted(p.name for p in tmp.glob(f"trainboard-cache-{srv.proc.pid}-*"))
    assert len(mine) == 1 and not leftover.exists() and alive.exists()
    srv.stop()
    assert srv.proc.returncode == 0
    assert sorted(p.name for p in tmp.iterdir()) == [alive.name]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_run_files_get_the_umask_mode(tmp_path: Path, umask: int, mode: int) -> None:
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from collectors import Monitor\n"
            "with Monitor(sys.argv[1], anomaly=False) as m: m.log(1, loss=1.0)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), oct(umask)], cwd=REPO, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    status = rf.RunPaths.of(tmp_path / "run").status
    assert status.stat().st_mode & 0o777 == mode
    assert rf.RunPaths.of(tmp_path / "run").metrics.stat().st_mode & 0o777 == mode  # as the JSONL appends
