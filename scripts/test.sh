#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the whole test suite
# (units, real training integration, torchrun, and browser tests in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
