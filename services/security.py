"""Request guard for a dashboard reachable from other machines: every request must carry the token.

With ``--host`` other than loopback the dashboard can delete snapshots and write control files, so
``app.py`` refuses to start without a token (``--token`` or ``TRAINBOARD_TOKEN``). The token is
accepted as ``?token=...`` (the first visit; it then sets an HttpOnly cookie so Dash's own requests
carry it), as the cookie, or as an ``X-Trainboard-Token`` header. Anything else gets 401.
"""
from __future__ import annotations

import hmac
import ipaddress
from typing import Any

TOKEN_ENV = "TRAINBOARD_TOKEN"
TOKEN_COOKIE = "trainboard_token"
TOKEN_HEADER = "X-Trainboard-Token"
TOKEN_QUERY = "token"
MIN_TOKEN_CHARS = 8


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_ok(expected: str, *candidates: str | None) -> bool:
    """Constant-time comparison of any candidate with the expected token (pure)."""
    return any(c is not None and hmac.compare_digest(c.encode(), expected.encode()) for c in candidates)


def install_token_guard(server: Any, token: str) -> None:
    """Refuse (401) every Flask request without the token; the first visit with ``?token=`` sets the cookie.

    Raises:
        ValueError: when the token is shorter than :data:`MIN_TOKEN_CHARS`.
    """
    if not token or len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the dashboard token must have at least {MIN_TOKEN_CHARS} characters")
    from flask import request

    @server.before_request
    def _check_token() -> Any:
        if token_ok(token, request.cookies.get(TOKEN_COOKIE), request.headers.get(TOKEN_HEADER)):
            return None
        if token_ok(token, request.args.get(TOKEN_QUERY)):
            request.environ["trainboard.set_cookie"] = True
            return None
        return ("Trainboard: this dashboard needs its access token (open it with ?token=...)", 401,
                {"Content-Type": "text/plain; charset=utf-8"})

    @server.after_request
    def _set_cookie(response: Any) -> Any:
        if request.environ.get("trainboard.set_cookie"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response
