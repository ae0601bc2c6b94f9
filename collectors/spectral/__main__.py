"""``python -m collectors.spectral``: the spectral monitor's command line (see :mod:`collectors.spectral.monitor`)."""
from __future__ import annotations

import sys

from collectors.spectral.monitor import main

if __name__ == "__main__":
    sys.exit(main())
