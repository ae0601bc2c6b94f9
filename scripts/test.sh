#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the whole test suite
# (units, real training integration, torchrun, and browser tests in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The checkout is imported from its root (tests, their subprocesses, the guides' examples); nothing is
# installed editable, so a second checkout or worktree never imports another's code.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
