"""Process-level tuning for moving large values.

glibc serves allocations above its mmap threshold with fresh ``mmap`` pages, and every first touch of
such a page faults: a 1 MiB ``bytes`` built per request then costs about as much as the copy itself
(fresh allocations fault in at about 1.3 GB/s here; DESIGN.md section 2). Raising the threshold keeps
buffers of up to 32 MiB in the heap, where freed memory is reused without faults. The server calls
this at start; client processes that move large values may call it too.

Pooled memory is not given back, so the number of heaps matters: glibc gives each busy thread its own
arena (up to 8 per core), and with 16 RPC threads each one kept its own freed request buffers. Two
arenas bound that: in a 10 s flood of 1 MiB puts from 8 clients into 80 MiB of budgets, the server's
RSS growth fell from 1.5x its budgets to 0.9x (tests/test_flood_service.py, then with those budgets).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
_done = False


def pool_large_allocations(
    mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20, arena_max: int = 2
) -> bool:
    """Ask glibc to keep large buffers in the heap; False where that is not possible (not glibc)."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = (
            libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
            and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
            and libc.mallopt(M_ARENA_MAX, arena_max) == 1
        )
    except (OSError, AttributeError):
        return False
    _done = bool(ok)
    return _done
