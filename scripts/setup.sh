#!/usr/bin/env bash
# Installs everything Trainboard and its tests need on a fresh Debian machine (idempotent):
# Debian's Chromium (browser tests, screenshots) and the Python packages, with torch pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing chromium (Debian) =="
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "== installing Python packages (torch pinned to 2.13.0 by constraints.txt) =="
python3 -m pip install -q -r requirements-dev.txt -c constraints.txt
python3 - <<'PY'
import torch, transformers, dash
assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__} was installed instead of 2.13.0"
print(f"ok: torch {torch.__version__}, transformers {transformers.__version__}, dash {dash.__version__}")
PY
