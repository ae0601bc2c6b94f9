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
SAMPLES_MESSAGE = "samples-message"
SAMPLES_CARDS = "samples-cards"
SAMPLES_HISTORY_LABEL = "samples-history-label"
SAMPLES_SLIDER = "samples-slider"
SAMPLES_FOLLOW = "samples-follow"
SAMPLES_PROMPT = "samples-prompt"
SAMPLES_GOLDEN = "samples-golden"
SAMPLES_PREDICTED = "samples-predicted"
SAMPLES_STATS = "samples-stats"
SAMPLES_NOTES = "samples-notes"
SAMPLES_ACCURACY_GRAPH = "samples-accuracy-graph"
SAMPLES_STATE = "samples-state"
SAMPLES_CARD_TYPE = "samples-card"
"""Pattern-matching type of the Samples page's metric cards."""

# ---------------------------------------------------------------- svd page (issue 5)

# ---------------------------------------------------------------- runs page (issue 6)
RUNS_MESSAGE = "runs-message"
RUNS_TABLE = "runs-table"
RUNS_TABLE_STATE = "runs-table-state"
RUNS_COMPARE = "runs-compare"
RUNS_COMPARE_HINT = "runs-compare-hint"
RUNS_COMPARE_STATE = "runs-compare-state"
RUNS_METRIC = "runs-metric"
RUNS_ALIGN = "runs-align"
RUNS_LOG_Y = "runs-log-y"
RUNS_GRAPH = "runs-graph"
RUNS_GRAPH_NOTE = "runs-graph-note"
RUNS_CSV_BUTTON = "runs-csv-button"
RUNS_CSV_DOWNLOAD = "runs-csv-download"
RUNS_CONFIG_DIFF = "runs-config-diff"
RUNS_RESULTS = "runs-results"
RUNS_CHECKPOINTS = "runs-checkpoints"
