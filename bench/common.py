"""Shared benchmark plumbing: a server subprocess on SQLite or a durable PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.localpg import LocalPostgres, free_port


@dataclass
class Backend:
    name: str
    env: dict[str, str]
    data_dir: Path
    database_url: str | None


@contextmanager
def backend(name: str, postgres_url: str | None = None) -> Iterator[Backend]:
    """A fresh store: a temp SQLite data dir, or a new database on a durable PostgreSQL."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cc-bench-{name}-"))
    try:
        yield from _backend(name, tmp, postgres_url)
    finally:  # a run leaves no store behind (an ingest run's is ~700 MB)
        shutil.rmtree(tmp, ignore_errors=True)


def _backend(name: str, tmp: Path, postgres_url: str | None) -> Iterator[Backend]:
    if name == "sqlite":
        yield Backend(name, {"CC_DATA_DIR": str(tmp / "data")}, tmp / "data", None)
        return
    server = None
    if postgres_url is None:
        server = LocalPostgres(durable=True)  # fsync and synchronous_commit on
        postgres_url = server.start()
        print(f"  {shared_memory(server)}", flush=True)
    dbname = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{dbname}"
    key = base64.b64encode(os.urandom(32)).decode()
    try:
        yield Backend(
            name,
            {"CC_DATA_DIR": str(tmp / "data"), "CC_DATABASE_URL": url, "CC_MASTER_KEY": key},
            tmp / "data",
            url,
        )
    finally:
        if server is not None:
            server.stop()
        else:  # a server we were given: leave it as we found it
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def shared_memory(server: LocalPostgres) -> str:
    """Whether the benchmark server's shared buffers sit in huge pages: with 4 kB pages
    each new server process faults on every buffer page it touches first, which shows
    in the first requests of every connection (README: reserving huge pages)."""
    kib = server.huge_pages_kib()
    if kib:
        return f"PostgreSQL shared memory: {kib / 1024:,.0f} MB in huge pages"
    if kib == 0:
        return "PostgreSQL shared memory: in 4 kB pages (no huge pages reserved)"
    return "PostgreSQL shared memory: page size unknown"


def cli(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@contextmanager
def server(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "serve", "--port", str(port)],
        env={**os.environ, **env, "CC_LOG_LEVEL": "WARNING"},
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- where the CPU went -------------------------------------------------------------------
def _command_group(cmdline: str) -> str:
    """The group a process's CPU time is reported under, by its command line."""
    words = cmdline.split()
    if "infra.cli" in words:  # contact-centre SUBCOMMAND [SUBCOMMAND] --options
        rest = words[words.index("infra.cli") + 1 :]
        sub = " ".join(w for w in rest[:2] if not w.startswith("-"))
        return f"contact-centre {sub}".strip()
    if words and (words[0].startswith("postgres") or words[0].endswith("/postgres")):
        return "PostgreSQL"
    if words and words[0].endswith("java") and "kafka.Kafka" in words:
        return "Kafka broker"
    return "other"


def _process_ticks() -> dict[int, tuple[str, int]]:
    """pid → (group, user + system clock ticks so far) of every process (Linux /proc)."""
    me = os.getpid()
    found: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        pid = int(entry)
        group = "bench client" if pid == me else _command_group(cmdline)
        found[pid] = (group, int(fields[11]) + int(fields[12]))
    return found


def _machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """Where the machine's CPU time went between :meth:`start` and :meth:`stop`, by group of
    processes (``serve``, PostgreSQL, the Kafka broker, this benchmark's client...), from
    Linux's per-process counters; a process that starts or ends inside the window counts
    for what it used inside it as far as seen, and the rest of the machine's busy time
    shows as ``other``. Linux only (the benchmarks' machine)."""

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK")
        self._cores = os.cpu_count() or 1
        self._before: dict[int, tuple[str, int]] = {}
        self._machine = (0, 0)
        self.seconds = 0.0
        self.used: dict[str, float] = {}  # group → CPU seconds
        self.idle = 0.0  # CPU seconds no process used
        self._started = 0.0

    def start(self) -> None:
        self._before = _process_ticks()
        self._machine = _machine_ticks()
        self._started = time.perf_counter()

    def stop(self) -> None:
        after = _process_ticks()
        busy, total = _machine_ticks()
        self.seconds = time.perf_counter() - self._started
        used: dict[str, float] = {}
        for pid, (group, ticks) in after.items():
            _, earlier = self._before.get(pid, (group, 0))
            used[group] = used.get(group, 0.0) + (ticks - earlier) / self._hz
        busy_s = (busy - self._machine[0]) / self._hz
        counted = sum(v for g, v in used.items() if g != "other")
        used["other"] = max(0.0, busy_s - counted)
        self.used = {g: v for g, v in used.items() if v > 0}
        self.idle = max(0.0, (total - self._machine[1] - (busy - self._machine[0])) / self._hz)

    def report(self, work: float, unit: str, main: str = "contact-centre serve") -> list[str]:
        """Lines for the report: each group's share of the cores, and CPU time per unit of
        ``work`` done in the window, with the rate at which the machine's cores would all
        be busy (and ``main``, one Python process, its one core)."""
        cores = self._cores
        span = self.seconds or 1.0
        shares = ", ".join(
            f"{group} {100 * s / span:.0f}%"
            for group, s in sorted(self.used.items(), key=lambda kv: -kv[1])
            if s / span >= 0.005
        )
        idle = 100 * self.idle / span
        lines = [f"CPU ({cores} cores = {100 * cores}%): {shares}; idle {idle:.0f}%"]
        if work > 0:
            total_ms = 1000 * sum(self.used.values()) / work
            line = f"CPU per {unit}: {total_ms:.2f} ms in all"
            if main in self.used:
                main_ms = 1000 * self.used[main] / work
                line += (
                    f" ({main} {main_ms:.2f} ms): all {cores} cores busy at about"
                    f" {1000 * cores / total_ms:,.0f} {unit}s/s, {main} at a full core"
                    f" at {1000 / main_ms:,.0f}/s"
                )
            lines.append(line)
        return lines


def create_tenant(env: dict[str, str]) -> dict[str, str]:
    return dict(json.loads(cli(["tenant", "create", "Bench"], env)))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms, "
        f"mean {statistics.fmean(values):.1f} ms"
        if values
        else "no samples"
    )
