"""Pure layout factories: ``build_*`` functions that turn plain data into Dash components (no I/O)."""
