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
ALERTS_MESSAGE = "alerts-message"
ALERTS_SUMMARY = "alerts-summary"
ALERTS_FEED = "alerts-feed"
ALERTS_CATEGORY_FILTER = "alerts-category-filter"
ALERTS_SEVERITY_FILTER = "alerts-severity-filter"
ALERTS_STATE = "alerts-state"
ALERTS_THRESHOLDS_MESSAGE = "alerts-thresholds-message"
ALERTS_THRESHOLD_TYPE = "alerts-threshold"
"""Pattern-matching type of the threshold sliders: ``{"type": ALERTS_THRESHOLD_TYPE, "key": "smart.loss_spike_threshold"}``."""

# ---------------------------------------------------------------- snapshots page (issue 3)
SNAPSHOTS_MESSAGE = "snapshots-message"
SNAPSHOTS_TABLE = "snapshots-table"
SNAPSHOTS_STATE = "snapshots-state"
SNAPSHOTS_DETAIL = "snapshots-detail"
SNAPSHOTS_SELECTED = "snapshots-selected"
SNAPSHOTS_NOW_BUTTON = "snapshots-now-button"
SNAPSHOTS_NOW_PROGRESS = "snapshots-now-progress"
SNAPSHOTS_NOW_RESULT = "snapshots-now-result"
SNAPSHOTS_PIN_BUTTON = "snapshots-pin-button"
SNAPSHOTS_UNPIN_BUTTON = "snapshots-unpin-button"
SNAPSHOTS_DELETE_CONFIRM = "snapshots-delete-confirm"
SNAPSHOTS_DELETE_BUTTON = "snapshots-delete-button"
SNAPSHOTS_ACTION_MESSAGE = "snapshots-action-message"
SNAPSHOTS_REFRESH = "snapshots-refresh"

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
