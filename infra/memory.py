"""Fault in, at start-up, the C heap that SQLite's page caches will grow into.

Each SQLite connection keeps up to its ``cache_size`` of pages in memory it takes from
the C allocator as it reads them. Memory the process touches for the first time costs a
page fault per 4 kB page, and on this project's VM a fault costs ~25 µs: a fresh
process's first erasures on a store of 1,000,000 events took ~1,000 of them each
(~25 ms) until the caches were full, then almost none. A server running for a while has
that memory in place; :func:`reserve_heap` puts it in place at start-up (what
``-XX:+AlwaysPreTouch`` does for a JVM's heap). It allocates page-sized blocks, writes to
them and frees them, and tells glibc's allocator to keep freed memory rather than hand it
back to the OS, and to serve every thread from that one heap (``M_ARENA_MAX`` 1, the
``MALLOC_ARENA_MAX`` many Python services set anyway), so the caches of whichever thread
runs a request reuse it without faults. glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
_M_ARENA_MAX = -8
_BLOCK = 4096 + 256  # a page of SQLite's cache and its header
_KEEP = 1 << 30  # free memory the allocator keeps at the top of a heap before trimming


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    try:
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
    except AttributeError:
        return None
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.restype = ctypes.c_void_p
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def reserve_heap(kib: int) -> bool:
    """Fault in ``kib`` of the C heap and keep it for later allocations of every thread
    started afterwards. Call it early, before other threads allocate. False where that
    cannot be done (not glibc)."""
    libc = _glibc()
    if libc is None or kib <= 0:
        return False
    if libc.mallopt(_M_ARENA_MAX, 1) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, _KEEP) != 1:
        return False
    blocks = []
    try:
        for _ in range(kib * 1024 // _BLOCK):
            block = libc.malloc(_BLOCK)
            if not block:
                break
            libc.memset(block, 0, _BLOCK)
            blocks.append(block)
    finally:
        for block in blocks:
            libc.free(block)
    log.debug("reserved %d KiB of heap", len(blocks) * _BLOCK // 1024)
    return True
