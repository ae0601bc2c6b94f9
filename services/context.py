"""Where callbacks find the app's RunStore: on the Flask server's config, set once by ``create_app``."""
from __future__ import annotations

from typing import Any

from services.runstore import RunStore

STORE_KEY = "TRAINBOARD_STORE"


def attach_store(app: Any, store: RunStore) -> None:
    app.server.config[STORE_KEY] = store


def store_for(app: Any) -> RunStore:
    """The RunStore of ``app``; raises a clear error if create_app did not attach one (a programming error)."""
    store = app.server.config.get(STORE_KEY)
    if store is None:
        raise RuntimeError("no RunStore attached to this app: build it with app.create_app(base_dir=...)")
    return store
