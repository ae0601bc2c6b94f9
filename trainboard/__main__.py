"""``python -m trainboard ...``: the same command line as the ``trainboard`` console command."""
from __future__ import annotations

import sys

from trainboard.cli import main

sys.exit(main())
