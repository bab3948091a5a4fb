"""Reserving the heap SQLite's page caches grow into (infra/memory.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.memory import _glibc, reserve_heap

pytestmark = pytest.mark.skipif(_glibc() is None, reason="reserving the heap needs glibc")

ROOT = Path(__file__).resolve().parents[2]

# A process that (maybe) reserves at start, as `build` does, then starts a thread that
# writes 16 MiB of page-sized blocks, as a request's SQLite caches fill: it prints the
# minor page faults that thread took.
PROCESS = """
import ctypes, resource, sys, threading
from infra.memory import _BLOCK, _glibc, reserve_heap
libc = _glibc()
if sys.argv[1] == "reserve":
    assert reserve_heap(17 * 1024)
faults = []
def run():
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(16 * 1024 * 1024 // _BLOCK):
        libc.memset(libc.malloc(_BLOCK), 1, _BLOCK)
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(faults[0])
"""


def _faults_of_a_request_thread(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_heap_reserved_at_start_serves_a_thread_started_later_without_page_faults() -> None:
    cold = _faults_of_a_request_thread("as-is")
    reserved = _faults_of_a_request_thread("reserve")
    assert cold > 3000  # 16 MiB in 4 kB pages, each faulted in on first write
    assert reserved < cold / 10


def test_nothing_is_reserved_for_a_size_of_zero() -> None:
    assert reserve_heap(0) is False
