"""Every component ID of the app, in one place. Values are kebab-case, prefixed by page.

Pattern-matching IDs use the ``*_TYPE`` constants as their ``type`` value.
"""
from __future__ import annotations

# ---------------------------------------------------------------- shell (every page)
SHELL_URL = "shell-url"
SHELL_TICK = "shell-tick"
SHELL_RUN_PICKER = "shell-run-picker"
SHELL_RUN_HINT = "shell-run-hint"
SHELL_NAV = "shell-nav"
SHELL_BASE_PATH = "shell-base-path"

# ---------------------------------------------------------------- overview page
OVERVIEW_CARDS = "overview-cards"
OVERVIEW_MESSAGE = "overview-message"
OVERVIEW_UPDATED = "overview-updated"
OVERVIEW_UPDATED_AT = "overview-updated-at"
OVERVIEW_LOSS_GRAPH = "overview-loss-graph"
OVERVIEW_LR_GRAPH = "overview-lr-graph"
OVERVIEW_GRAD_GRAPH = "overview-grad-graph"
OVERVIEW_LOG_Y = "overview-log-y"
OVERVIEW_CHART_STATE = "overview-chart-state"
OVERVIEW_SKIPPED = "overview-skipped"
OVERVIEW_CARD_TYPE = "overview-card"
"""Pattern-matching type of the metric cards: ``{"type": OVERVIEW_CARD_TYPE, "metric": "train_loss"}``."""

# ---------------------------------------------------------------- alerts page (issue 3)

# ---------------------------------------------------------------- snapshots page (issue 3)

# ---------------------------------------------------------------- samples page (issue 4)

# ---------------------------------------------------------------- svd page (issue 5)

# ---------------------------------------------------------------- runs page (issue 6)
