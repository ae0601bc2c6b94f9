"""Where callbacks find the app's RunCatalog: on the Flask server's config, set once by ``create_app``."""
from __future__ import annotations

from typing import Any

from services.catalog import RunCatalog

CATALOG_KEY = "TRAINBOARD_CATALOG"


def attach_catalog(app: Any, catalog: RunCatalog) -> None:
    app.server.config[CATALOG_KEY] = catalog


def catalog_for(app: Any) -> RunCatalog:
    """The RunCatalog of ``app``; raises a clear error if create_app did not attach one (a programming error)."""
    catalog = app.server.config.get(CATALOG_KEY)
    if catalog is None:
        raise RuntimeError("no RunCatalog attached to this app: build it with app.create_app(base_dir=...)")
    return catalog
