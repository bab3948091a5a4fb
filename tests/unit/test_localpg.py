"""The benchmark server's report of how its shared memory is paged."""

from __future__ import annotations

import os
from pathlib import Path

from infra.localpg import LocalPostgres, huge_pages_in

SMAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:01 1234 /usr/lib/postgresql/15/bin/postgres
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
7f3a00000000-7f3b8a000000 rw-s 00000000 00:10 5678 /anon_hugepage (deleted)
Size:            6455296 kB
KernelPageSize:     2048 kB
MMUPageSize:        2048 kB
7f3c00000000-7f3c00021000 rw-p 00000000 00:00 0
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
"""


def test_only_mappings_in_pages_larger_than_4_kb_are_counted_as_huge() -> None:
    assert huge_pages_in(SMAPS) == 6455296
    assert huge_pages_in(SMAPS.replace("2048 kB", "4 kB")) == 0


def test_a_process_without_huge_mappings_reports_zero_and_no_server_reports_unknown(
    tmp_path: Path,
) -> None:
    server = LocalPostgres.__new__(LocalPostgres)  # no cluster: only its data directory
    server.data = tmp_path
    assert server.huge_pages_kib() is None  # no postmaster.pid: not running
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    this_process = huge_pages_in(Path("/proc/self/smaps").read_text())
    assert server.huge_pages_kib() == this_process
