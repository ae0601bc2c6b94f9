"""The dashboard process's memory: large temporary arrays go back to the system when freed.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB) with its own mapping, unmapped when freed,
but it raises that threshold each time such a block is freed, up to 32 MiB. After the first large run is
drawn, the 8-16 MB numpy temporaries of each later drawing then come from the heap, and a heap does not
shrink: the server kept ~40-90 MB more after opening a 10-million-value run than the drawing ever held at
once. Fixing the threshold keeps large blocks on their own mappings (and lets a growing ``array`` column be
remapped instead of copied).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h); setting it also turns the dynamic adjustment off."""
MMAP_THRESHOLD_BYTES = 128 << 10
"""glibc's default threshold, kept fixed."""


def keep_large_blocks_mapped() -> bool:
    """Fix glibc's mmap threshold for this process; False where there is no glibc (macOS, musl, Windows)
    or it refused. Safe to call more than once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
