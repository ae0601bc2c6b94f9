"""Who may talk to the dashboard, and what a request may touch (the threat model is docs/security.md).

The dashboard can delete snapshots and change what a running training does, so it refuses everyone who
is not the person at the keyboard, including a web page in that person's own browser:

* **Host allow-list** (DNS rebinding): a page on ``http://evil.test:PORT`` whose name an attacker re-points
  at 127.0.0.1 reaches a loopback dashboard with ``Host: evil.test:PORT``. Only loopback addresses,
  ``localhost`` (any port), the ``--host`` name and the ``--allow-host`` names are accepted; others get 403
  with a one-line reason. State-changing requests (POST, ...) that carry an ``Origin`` must come from the
  dashboard's own origin. Jupyter's ``local_hostnames`` / ``allow_remote_access`` is the precedent.
* **Token** (``--token`` / ``TRAINBOARD_TOKEN``, required off loopback): every request carries it as a
  cookie, an ``X-Trainboard-Token`` header or, on the first visit, ``?token=``; that visit sets an HttpOnly
  SameSite=Strict cookie and is redirected to the same URL without the token, so it leaves the address
  bar and the history. The access log never shows a token. Comparison is constant-time.
* **Paths**: every path a request leads to is resolved (symlinks followed) and refused unless it stays
  inside the base directory: the run dir, its ``snapshots/`` and ``control/``, each snapshot, each file
  read from a snapshot. Actions only ever act on runs the run store lists (:func:`require_listed_run`).

All decisions are pure functions (unit-tested); ``install_*`` only wire them into Flask hooks.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Protocol
from urllib.parse import unquote_plus, urlsplit

TOKEN_ENV = "TRAINBOARD_TOKEN"
TOKEN_COOKIE = "trainboard_token"
TOKEN_HEADER = "X-Trainboard-Token"
TOKEN_QUERY = "token"
MIN_TOKEN_CHARS = 8
LOCAL_HOSTNAMES = frozenset({"localhost"})
"""Names always accepted in ``Host`` (besides loopback addresses): browsers resolve them to this machine
themselves, so no DNS answer can re-point them."""
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
REDACTED = "[redacted]"
_TOKEN_IN_TEXT = re.compile(r"(?i)((?:^|[?&\s;])token=)[^&\s\"';]*")
ACCESS_LOGGER = "werkzeug"
"""The logger of Werkzeug's development server, which writes the access log."""


# --------------------------------------------------------------------------- hosts (pure)

def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host.strip().lower() in LOCAL_HOSTNAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str | None) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header value (``"localhost:8081"``, ``"[::1]:8081"``), lower-cased and
    without a trailing dot; ``None`` when it is empty or malformed."""
    if not value or any(c in value for c in " /\\@\x00\t\r\n"):
        return None
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_s = rest[1:] if rest else None
    elif v.count(":") > 1:  # a bare IPv6 address (no port possible without brackets)
        name, port_s = v, None
    else:
        name, _, port_s = v.partition(":")
        port_s = port_s if ":" in v else None
    if port_s is not None and not (port_s.isdigit() and 0 < int(port_s) < 65536):
        return None
    name = name.rstrip(".")
    if not name:
        return None
    return name, int(port_s) if port_s is not None else None


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def allowed_host_names(bind_host: str, allow_hosts: Iterable[str] = ()) -> frozenset[str]:
    """The names accepted in ``Host`` besides loopback addresses: ``localhost``, the bind address (unless
    it is a wildcard) and every ``--allow-host`` name (lower-cased, trailing dot dropped)."""
    names = set(LOCAL_HOSTNAMES)
    for h in (bind_host, *allow_hosts):
        h = h.strip().strip("[]").lower().rstrip(".")
        if h and h not in WILDCARD_BINDS:
            names.add(h)
    return frozenset(names)


def host_refusal(host_header: str | None, names: frozenset[str], *, any_ip: bool = False) -> str | None:
    """Why a request with this ``Host`` is refused, or ``None`` when it is accepted (pure).

    Args:
        host_header: the request's ``Host`` value.
        names: :func:`allowed_host_names`.
        any_ip: accept any IP-address literal too (a wildcard bind such as ``--host 0.0.0.0``): rebinding
            needs a DNS name, and a browser that sends an address literal really connected to it.
    """
    parsed = split_host(host_header)
    if parsed is None:
        return f"refused: malformed Host header {host_header!r}"
    name, _port = parsed
    if name in names or is_loopback(name) or (any_ip and is_ip_literal(name)):
        return None
    return (f"refused: Host {name!r} is not this dashboard's name (DNS rebinding guard); "
            f"start it with --allow-host {name} if that name is yours")


def origin_refusal(method: str, origin: str | None, host_header: str | None) -> str | None:
    """Why a state-changing request with this ``Origin`` is refused, or ``None`` (pure).

    A missing ``Origin`` is accepted (curl, old browsers: the Host check and the token still apply); a
    present one must name the same host and port as ``Host`` (``Origin: null`` never does).
    """
    if method.upper() not in STATE_CHANGING_METHODS or origin is None:
        return None
    host = split_host(host_header)
    try:
        parts = urlsplit(origin.strip())
        o_name = (parts.hostname or "").rstrip(".")
        o_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        o_name, o_port = "", None
    if host is not None and o_name and parts.scheme in DEFAULT_PORTS:
        h_port = host[1] or DEFAULT_PORTS.get(parts.scheme)
        if (o_name, o_port) == (host[0], h_port):
            return None
    return f"refused: cross-origin request from {origin!r}"


# --------------------------------------------------------------------------- tokens (pure)

def token_ok(expected: str, *candidates: str | None) -> bool:
    """Whether any candidate equals the expected token, in constant time (pure).

    Both sides are hashed first, so the comparison takes the same time whatever the lengths.
    """
    want = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    ok = False
    for c in candidates:
        if c is not None:
            got = hashlib.sha256(c.encode("utf-8", "surrogatepass")).digest()
            ok |= hmac.compare_digest(got, want)
    return ok


def without_token(path: str, query_string: str) -> str:
    """The same URL (path + query) without any ``token=`` parameter: where ``?token=`` visits redirect (pure).

    Other parameters keep their order and spelling.
    """
    kept = [p for p in query_string.split("&") if p and unquote_plus(p.partition("=")[0]) != TOKEN_QUERY]
    return path + ("?" + "&".join(kept) if kept else "")


def redact_tokens(text: str) -> str:
    """``text`` with the value of every ``token=`` parameter replaced by ``[redacted]`` (pure)."""
    return _TOKEN_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites log records that mention ``token=`` (the access log's request line) before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as it is
            return True
        if "token=" in msg.lower():
            record.msg, record.args = redact_tokens(msg), None
        return True


def install_log_redaction(logger_name: str = ACCESS_LOGGER) -> None:
    """Add :class:`TokenRedactingFilter` to the access logger once (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, TokenRedactingFilter) for f in logger.filters):
        logger.addFilter(TokenRedactingFilter())


# --------------------------------------------------------------------------- Flask hooks

def install_host_guard(server: Any, bind_host: str, allow_hosts: Iterable[str] = ()) -> frozenset[str]:
    """Refuse (403, one line of text) requests whose ``Host`` is not this dashboard's, and state-changing
    requests from another origin. Installed before the token guard, so it runs first. Returns the names."""
    names = allowed_host_names(bind_host, allow_hosts)
    any_ip = bind_host.strip().strip("[]") in WILDCARD_BINDS
    from flask import request

    @server.before_request
    def _check_host() -> Any:
        host = request.headers.get("Host")
        reason = host_refusal(host, names, any_ip=any_ip) or origin_refusal(request.method, request.headers.get("Origin"), host)
        if reason is None:
            return None
        return f"Trainboard: {reason}\n", 403, {"Content-Type": "text/plain; charset=utf-8"}

    return names


def install_error_guard(server: Any) -> None:
    """Answer a request that raised (a hand-made callback request Dash cannot parse, input no check
    foresaw) with 400 and one line naming the error, instead of a 500 and a traceback; the server log
    gets one line too. In debug mode (``--debug``) the exception propagates as usual, traceback and all.
    """
    from flask import current_app, request
    from werkzeug.exceptions import HTTPException

    log = logging.getLogger("trainboard")

    @server.errorhandler(Exception)
    def _refuse(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            return exc
        if current_app.debug:
            raise exc
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        log.error("Trainboard: %s %s refused: %s", request.method, request.path, what)
        return (f"Trainboard: request refused: malformed or unexpected input ({what})\n", 400,
                {"Content-Type": "text/plain; charset=utf-8"})


def install_token_guard(server: Any, token: str) -> None:
    """Refuse (401) every Flask request without the token; a visit with a valid ``?token=`` sets the cookie
    and (GET/HEAD) is redirected to the same URL without the token.

    Raises:
        ValueError: when the token is shorter than :data:`MIN_TOKEN_CHARS`.
    """
    if not token or len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the dashboard token must have at least {MIN_TOKEN_CHARS} characters")
    install_log_redaction()
    from flask import redirect, request

    @server.before_request
    def _check_token() -> Any:
        if token_ok(token, request.args.get(TOKEN_QUERY)):
            request.environ["trainboard.set_cookie"] = True
            if request.method in ("GET", "HEAD"):
                # relative Location: the browser stays on the host it used
                response = redirect(without_token(request.path, request.query_string.decode("latin-1")), code=302)
                response.autocorrect_location_header = False
                response.headers["Cache-Control"] = "no-store"
                return response
            return None
        if token_ok(token, request.cookies.get(TOKEN_COOKIE), request.headers.get(TOKEN_HEADER)):
            return None
        return ("Trainboard: this dashboard needs its access token (open it with ?token=...)\n", 401,
                {"Content-Type": "text/plain; charset=utf-8"})

    @server.after_request
    def _set_cookie(response: Any) -> Any:
        if request.environ.get("trainboard.set_cookie"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response


# --------------------------------------------------------------------------- paths (pure)

class PathRefused(ValueError):
    """A path that resolves outside the base directory; the message says which, in words."""


def inside_base(base: str | os.PathLike[str], path: str | os.PathLike[str], what: str = "path") -> Path:
    """``path`` if its real path (symlinks followed) is ``base`` or below it; else :class:`PathRefused`.

    A missing path is checked through its nearest existing parent (``resolve`` is not strict), so a
    file about to be created is refused when its directory leads outside.
    """
    try:
        b = Path(base).resolve()
        real = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable component
        raise PathRefused(f"{what} {os.fspath(path)!r} cannot be resolved ({exc})") from None
    if real != b and b not in real.parents:
        raise PathRefused(f"{what} {os.fspath(path)!r} leads outside the base directory (to {str(real)!r}): refused")
    return Path(path)


def safe_run_root(base: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """The run dir ``root`` after checking that it, its ``snapshots/`` and its ``control/`` (the folders the
    dashboard writes into) stay inside ``base``. Raises :class:`PathRefused`."""
    from collectors import runformat as rf

    paths = rf.RunPaths.of(root)
    inside_base(base, paths.root, "run directory")
    inside_base(base, paths.snapshots_dir, "snapshots folder")
    inside_base(base, paths.control_dir, "control folder")
    return paths.root


def safe_snapshot(base: str | os.PathLike[str], snapshot: str | os.PathLike[str]) -> Path:
    """A snapshot directory after checking that it and the files the dashboard reads or writes in it
    (metadata.json, status.json, the pin marker) stay inside ``base``. Raises :class:`PathRefused`."""
    from collectors import runformat as rf

    path = Path(snapshot)
    inside_base(base, path, "snapshot")
    for name in (rf.SNAPSHOT_METADATA, rf.SNAPSHOT_STATUS, rf.SNAPSHOT_PIN):
        inside_base(base, path / name, f"snapshot file {name}")
    return path


def snapshot_refusal(base: str | os.PathLike[str], snapshot: str | os.PathLike[str]) -> str | None:
    """:func:`safe_snapshot` as a message (``None`` when the snapshot is safe), for listings (pure)."""
    try:
        safe_snapshot(base, snapshot)
        return None
    except PathRefused as exc:
        return str(exc)


# --------------------------------------------------------------------------- listed runs

class ListsRuns(Protocol):
    """What :func:`require_listed_run` needs of the run store (``services.catalog.RunCatalog``)."""

    base: Path

    def run_ids(self) -> list[str]: ...


def require_listed_run(store: ListsRuns, run_id: Any) -> Path:
    """The directory of run ``run_id`` when the run store lists it and it stays inside the base dir.

    The one place that decides which runs an action (snapshot now, delete, pin, thresholds) may touch:
    a run id from the browser is only a key into the store's own list, never a path.

    Raises:
        PathRefused: ``run_id`` is not a listed run, or its folders lead outside the base directory.
    """
    if not isinstance(run_id, str) or not run_id:
        raise PathRefused("no run selected")
    if run_id not in store.run_ids():
        raise PathRefused(f"{run_id!r} is not a run listed under the base directory: refused")
    from services.catalog import BASE_RUN_ID

    base = Path(store.base)
    root = base if run_id == BASE_RUN_ID else base / run_id
    return safe_run_root(base, root)
