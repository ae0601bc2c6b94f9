"""Trainboard's entry point: ``python app.py --base-dir DIR`` serves the live dashboard on 127.0.0.1:8081.

``create_app()`` builds the Dash app (pages, callbacks, the live run store); ``main()`` parses the
command line. Nothing imports this module.
"""
from __future__ import annotations

import argparse
import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import dash
import flask
from dash import Dash

from callbacks import alerts, overview, recover, runs, samples, shell, snapshots, svd
from components.layout import PLOTLY_ASSETS_IGNORE, PLOTLY_BUNDLE, build_index_string, build_shell, with_page_chunks
from services.cachedir import make_cache_dir
from services.cachegc import start_collector as start_cache_gc
from services.catalog import RunCatalog
from services.context import attach_catalog
from services.memory import keep_large_blocks_mapped
from services.notify_watch import DashboardNotifier
from services.push import install_push
from services.security import (MIN_TOKEN_CHARS, TOKEN_ENV, install_error_guard, install_host_guard,
                               install_token_guard, is_ip_literal, is_loopback)
from services.seriescache import default_cache

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
HERE = Path(__file__).resolve().parent
IMPORT_ROOT = Path(__file__).resolve().parents[len(__package__.split(".")) if __package__ else 0]
"""The folder on sys.path that holds this code: the checkout (app.py) or site-packages (trainboard.app)."""
PAGE_MODULES = (overview, samples, alerts, snapshots, runs, svd)
"""Each page's callbacks module; its ``register(app)`` registers the page and its callbacks."""


def create_app(base_dir: str | os.PathLike[str], *, poll: bool = False, token: str | None = None,
               host: str = DEFAULT_HOST, allow_hosts: Sequence[str] = (), notifier: Any = None) -> Dash:
    """Build the dashboard for ``base_dir`` (a run, or a root of runs one level down). Requests must name
    a loopback address, ``localhost``, ``host`` or one of ``allow_hosts`` in ``Host``; with ``token``,
    every request must carry it (see services.security and docs/security.md). With ``notifier`` (a
    :class:`collectors.notify.Notifier`), the incidents the dashboard detects in runs without a
    collector are sent through it (services.notify_watch)."""
    import diskcache

    keep_large_blocks_mapped()  # a drawing's large temporaries go back to the system (services/memory.py)
    cache = diskcache.Cache(str(make_cache_dir()))  # removed at exit (services.cachedir)
    app = Dash(__name__, use_pages=True, pages_folder="", assets_folder=str(HERE / "assets"), title="Trainboard",
               update_title=None, assets_ignore=PLOTLY_ASSETS_IGNORE,
               suppress_callback_exceptions=True, background_callback_manager=dash.DiskcacheManager(cache))
    install_host_guard(app.server, host, allow_hosts)  # first: a foreign Host is refused before anything else
    install_error_guard(app.server)  # no request gets a 500 with a traceback
    if token:
        install_token_guard(app.server, token)
    store = RunCatalog(base_dir, poll=poll)
    attach_catalog(app, store)
    install_push(app.server, store.changes)  # file changes reach the pages at once, not at the next tick
    for module in PAGE_MODULES:
        module.register(app)
    recover.register(app)  # the Recover panel, shown by the Snapshots page (and embeddable elsewhere)
    shell.register(app)
    nav = [(p["name"], p["path"]) for p in sorted(dash.page_registry.values(), key=lambda p: p.get("order") or 0)]

    def serve_layout() -> Any:
        """Per page load: the run picker arrives filled, and the page itself drawn (round trips fewer)."""
        href = flask.request.headers.get(shell.PAGE_HEADER) if flask.has_request_context() else None
        first = shell.first_page(href, app.strip_relative_path, dash.page_registry.values())
        requested = first.query.get("run") if first is not None else None
        return build_shell(nav, str(store.base), shell.drawn_container(first, dash.page_container, app.title),
                           *shell.picker_state(store, requested))

    app.layout = serve_layout
    import numpy.ma  # noqa: F401 - plotly's JSON encoder imports it lazily: ~70 ms of the first page otherwise
    import pandas  # noqa: F401 - before any reader thread: imported by one later (pyarrow, tbparse), it is half-
    # initialised in sys.modules for a moment, and plotly serialising a page then fails (services/catalog.py warm)
    # plotly.js and dcc's chunks requested early (docs/scaling.md)
    app.index_string = build_index_string(app.get_asset_url(PLOTLY_BUNDLE), app.config.requests_pathname_prefix)
    base_index = app.interpolate_index

    def interpolate_index(**parts: Any) -> str:
        """The page template, plus the chunks of the page this address opens (the Runs table's code)."""
        chunks = shell.page_chunks(flask.request.path, app.strip_relative_path, dash.page_registry.values()) \
            if flask.has_request_context() else ()
        return with_page_chunks(base_index(**parts), chunks, app.config.requests_pathname_prefix)

    app.interpolate_index = interpolate_index  # type: ignore[method-assign]
    store.warm()  # read the most recent run now, not when the first browser asks
    start_cache_gc(default_cache())  # cache files of deleted runs are removed off the request path
    if notifier is not None:
        watcher = DashboardNotifier(store, notifier).start()
        atexit.register(watcher.stop)
    return app


def parse_args(argv: Sequence[str] | None = None, prog: str = "python app.py") -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Trainboard: a live local dashboard for PyTorch / Transformers training. It watches a run "
                    "directory written by collectors.MonitorCallback or collectors.Monitor (or a folder of them).")
    p.add_argument("--base-dir", default=None,
                   help="run directory to watch, or a folder whose subfolders are runs (default: ./runs)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default %(default)s: this machine only; other hosts need a token)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a further name the dashboard may be reached by (repeatable), e.g. this machine's name "
                        "or a reverse proxy's; loopback addresses, localhost and --host are always accepted, other "
                        "Host headers get 403 (DNS rebinding guard, see docs/security.md)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on (default %(default)s)")
    p.add_argument("--poll", action="store_true",
                   help="watch files by polling instead of inotify (network filesystems, some containers)")
    p.add_argument("--demo", action="store_true",
                   help="start the demo training (tiny GPT-2 on CPU) in a subprocess writing a fresh run under "
                        "--base-dir, and serve the dashboard on it")
    p.add_argument("--demo-steps", type=int, default=3000, help="optimizer steps of the demo training (default %(default)s)")
    p.add_argument("--debug", action="store_true", help="Dash debug mode (reloader off): for developing Trainboard")
    p.add_argument("--notify", action="append", default=[], metavar="URL",
                   help="send the incidents the dashboard detects in runs without the collector to this apprise "
                        "URL (slack://..., discord://..., ntfy://..., json://host/path; repeatable; "
                        "$TRAINBOARD_NOTIFY adds more). Collector runs notify from the training itself")
    p.add_argument("--notify-min-severity", default="high", choices=("critical", "high", "medium", "low"),
                   help="lowest severity that is sent (default %(default)s)")
    p.add_argument("--public-url", default=None, metavar="URL",
                   help="the dashboard's address as people reach it (e.g. https://gpu-box:8081): messages link to "
                        "the run's Alerts page")
    p.add_argument("--token", default=None,
                   help=f"access token every request must carry (required when --host is not loopback; default: "
                        f"${TOKEN_ENV}); open the dashboard once with ?token=...")
    args = p.parse_args(argv)
    args.token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.token is not None and len(args.token) < MIN_TOKEN_CHARS:
        p.error(f"--token must have at least {MIN_TOKEN_CHARS} characters")
    if not is_loopback(args.host) and not args.token:
        p.error(f"--host {args.host} lets other machines reach the dashboard (which can delete snapshots): "
                f"set a token with --token or ${TOKEN_ENV}")
    if not 0 < args.port < 65536:
        p.error(f"--port must be between 1 and 65535; got {args.port}")
    if args.demo_steps <= 0:
        p.error(f"--demo-steps must be a positive integer; got {args.demo_steps}")
    base = Path(args.base_dir or "runs").expanduser()
    if base.exists() and not base.is_dir():
        p.error(f"--base-dir {str(base)!r} is a file, not a directory")
    if args.base_dir is not None and not base.exists() and not args.demo:
        p.error(f"--base-dir {str(base)!r} does not exist (create it, or start a training that writes there)")
    for name in args.allow_host:
        if not name.strip() or any(c in name for c in " /@\\") or (":" in name and not is_ip_literal(name.strip("[]"))):
            p.error(f"--allow-host takes a host name or address without port or scheme; got {name!r}")
    if args.public_url is not None and not args.public_url.startswith(("http://", "https://")):
        p.error(f"--public-url must start with http:// or https://; got {args.public_url!r}")
    try:
        from collectors.notify import notifier_from_settings

        args.notifier = notifier_from_settings(args.notify or None, min_severity=args.notify_min_severity,
                                               public_url=args.public_url, run_name=base.name)
    except ValueError as exc:
        p.error(f"--notify: {exc}")
    args.base_dir = base
    return args


def start_demo(base: Path, steps: int) -> tuple[subprocess.Popen, Path]:
    """Start the demo training in a subprocess writing ``base/demo-<time>``; it is stopped at exit."""
    run_dir = base / time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = open(run_dir / "demo_training.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "collectors.demo", "--base-dir", str(run_dir), "--max-steps",
                             str(steps)], cwd=IMPORT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    atexit.register(lambda: proc.poll() is None and proc.terminate())
    return proc, run_dir


def main(argv: Sequence[str] | None = None, prog: str = "python app.py") -> int:
    """The command line of ``python app.py`` and of ``trainboard serve`` / ``trainboard demo`` (``prog``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["enable"]:  # `python app.py enable train.py [--undo]` (issue 4)
        from collectors.enable import main as enable_main

        return enable_main(argv[1:], prog="python app.py enable")
    args = parse_args(argv, prog)
    if args.demo:
        proc, run_dir = start_demo(args.base_dir, args.demo_steps)
        print(f"Demo training started (pid {proc.pid}) writing {run_dir}")
    args.base_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (kill, systemd, a test's terminate()) exits like Ctrl-C, so atexit cleanup runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = create_app(args.base_dir, poll=args.poll, token=args.token, host=args.host, allow_hosts=args.allow_host,
                     notifier=args.notifier)
    if args.notifier is not None:
        print(f"Notifications: incidents the dashboard detects are sent to {len(args.notifier.urls)} receiver(s)",
              flush=True)
    print(f"Trainboard watching {args.base_dir.resolve()} on http://{args.host}:{args.port}", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
