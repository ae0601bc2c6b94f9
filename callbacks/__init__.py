"""Callbacks, one module per page, each with ``register(app)``: thin wrappers over pure functions."""
