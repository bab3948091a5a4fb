"""Shared benchmark plumbing: a server subprocess on SQLite or a durable PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import secrets
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
