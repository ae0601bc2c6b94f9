"""Server push of "something changed on disk": the browser refreshes at once instead of at its next tick.

The shell's 1 s tick (components/layout.py) bounds how stale a page can be; alone it adds up to a second to
every update (append -> loss card). The run catalog's file watcher already knows the moment a run's files
change, so it counts changes in a :class:`ChangeFeed`, and :func:`install_push` serves that count as a
Server-Sent Events stream at :data:`PUSH_PATH`. ``assets/push.js`` listens and advances the shell's tick
(at most every :data:`MIN_PUSH_GAP_MS` ms), so every page's usual cheap "anything new?" path runs right away.

Only a counter leaves the server (nothing about the files), the route takes no input, and it passes the
same host and token guards as every other request. A stream ends after :data:`STREAM_MAX_S` and the
browser's EventSource reconnects by itself, so no request thread is held forever. With ``--poll`` (no file
events) nothing is pushed and the tick alone refreshes.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

PUSH_PATH = "/_trainboard/changes"
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies and the browser from dropping an idle stream."""
STREAM_MAX_S = 300.0
"""One stream's life; the browser reconnects (after ``retry``: 2 s)."""
MIN_PUSH_GAP_MS = 200
"""The browser refreshes at most this often on pushes (a training logging every 10 ms must not make the
page redraw 100 times a second). Read by assets/push.js from the stream's first event."""


class ChangeFeed:
    """A change counter that server threads can wait on. ``notify`` is called from the watcher thread."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    @property
    def count(self) -> int:
        return self._count

    def notify(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def wait(self, since: int, timeout: float) -> int:
        """The count once it differs from ``since``, or after ``timeout`` seconds (then maybe unchanged)."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != since, timeout=timeout)
            return self._count


def event_stream(feed: ChangeFeed, *, heartbeat_s: float = HEARTBEAT_S, max_s: float = STREAM_MAX_S,
                 clock: Any = time.monotonic) -> Iterator[str]:
    """The SSE text of one stream: the current count with the reconnect delay and the push gap, then one
    ``data`` line per change (changes that arrive together are one line), keep-alive comments between."""
    last = feed.count
    yield f"retry: 2000\nevent: hello\ndata: {{\"count\": {last}, \"min_gap_ms\": {MIN_PUSH_GAP_MS}}}\n\n"
    end = clock() + max_s
    while True:
        left = end - clock()
        if left <= 0:
            return
        n = feed.wait(last, min(heartbeat_s, left))
        if n != last:
            last = n
            yield f"data: {n}\n\n"
        else:
            yield ": keep-alive\n\n"


def install_push(server: Any, feed: ChangeFeed) -> None:
    """Serve ``feed`` at :data:`PUSH_PATH` on the Flask ``server``."""
    import flask

    @server.route(PUSH_PATH)
    def _trainboard_changes() -> Any:
        return flask.Response(flask.stream_with_context(event_stream(feed)), mimetype="text/event-stream",
                              headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})
