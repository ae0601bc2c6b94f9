#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then train the demo model and serve the dashboard
# on http://127.0.0.1:8081 (Ctrl+C stops both).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec python3 app.py --demo --base-dir "${TRAINBOARD_DEMO_DIR:-runs}" "$@"
