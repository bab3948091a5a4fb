"""A throwaway PostgreSQL cluster on 127.0.0.1, for tests and benchmarks.

Uses the server binaries of Debian's ``postgresql`` package (``./dev test`` installs them
when missing). When run as root, the cluster runs as the ``postgres`` system user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries, or the server did not start."""


def find_bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresUnavailableError(
        "PostgreSQL server binaries not found (apt-get install postgresql, or set "
        "CC_TEST_POSTGRES_URL to an existing server)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quarter_of_memory_mb() -> int:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(128, memory // 4 // (1 << 20))


def huge_pages_in(smaps: str) -> int:
    """KiB of a process's mappings backed by pages larger than 4 kB, from the text of its
    /proc/PID/smaps (each mapping's ``Size`` comes before its ``KernelPageSize``)."""
    total = size = 0
    for line in smaps.splitlines():
        if line.startswith("Size:"):
            size = int(line.split()[1])
        elif line.startswith("KernelPageSize:") and int(line.split()[1]) > 4:
            total += size
    return total


class LocalPostgres:
    """A cluster in a temporary directory, removed on stop; or, given ``directory``, a
    cluster kept there across runs (benchmarks reuse what they filled)."""

    def __init__(self, *, durable: bool = False, directory: Path | None = None) -> None:
        self.durable = durable
        self.bindir = find_bindir()
        self.port = free_port()
        self.keep = directory is not None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self.dir = directory
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="cc-pg-"))
        self.data = self.dir / "data"
        self._run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailableError(
                    "running as root needs the 'postgres' system user (from Debian's package)"
                ) from None
            self._run_as = "postgres"
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def start(self) -> str:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.dir}'",
            "max_connections = 200",
            # A durable cluster (the benchmarks') is set up as a server for the product
            # would be: its buffers hold the working set, at PostgreSQL's guidance of a
            # quarter of the machine's memory. (On this project's VM that matters more
            # than usual: the host takes idle OS page cache back within seconds, so
            # pages outside the buffers are often read from storage again.) A throwaway
            # test cluster keeps PostgreSQL's default.
            f"shared_buffers = {_quarter_of_memory_mb() if self.durable else 128}MB",
            # PostgreSQL's default, said out loud: its shared memory goes in huge pages
            # when the OS has reserved them (vm.nr_hugepages), else in normal 4 kB ones.
            # With 4 kB pages every server process takes a page fault on each buffer page
            # it touches for the first time (a new connection touches thousands); with
            # 2 MB pages that is a few thousand faults for the whole of a 6 GB pool.
            "huge_pages = try",
        ]
        if not self.durable:
            # A test cluster is thrown away: trade durability for speed.
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        # rewritten on every start: a kept cluster gets a fresh port
        (self.data / "cc-local.conf").write_text("\n".join(settings) + "\n")
        result = subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            log = (
                (self.dir / "server.log").read_text() if (self.dir / "server.log").exists() else ""
            )
            raise PostgresUnavailableError(f"pg_ctl start failed: {result.stderr}\n{log}")
        self._wait_ready()
        return self.url

    def _initdb(self) -> None:
        subprocess.run(
            self._cmd(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ),
            check=True,
            capture_output=True,
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("include = 'cc-local.conf'\n")

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise PostgresUnavailableError("PostgreSQL did not accept connections")

    def huge_pages_kib(self) -> int | None:
        """How much of the running server's memory is mapped in huge pages (its shared
        memory, when the OS had them reserved), or None where that cannot be read."""
        try:
            pid = (self.data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
            return huge_pages_in(Path(f"/proc/{pid}/smaps").read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            ),
            capture_output=True,
        )
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
