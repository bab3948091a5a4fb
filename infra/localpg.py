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

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            ),
            capture_output=True,
        )
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
