"""Shared fixtures: every storage-touching test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from contact_centre.clock import ShiftedClock
from infra.config import Settings, TestServices
from infra.http.app import PathOnlyAccessLogger, create_app
from infra.localpg import LocalPostgres
from infra.runtime import Runtime, build
from tests.helpers import Api

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@dataclass(frozen=True)
class PostgresServer:
    url: str
    data_dir: Path | None  # known only for the cluster this session started itself


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session: CC_TEST_POSTGRES_URL, or a throwaway cluster.

    A missing PostgreSQL is an error, never a skip.
    """
    given = TestServices.from_env().postgres_url
    if given:
        yield PostgresServer(given, None)
        return
    server = LocalPostgres()
    server.start()
    try:
        yield PostgresServer(server.url, server.data)
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = f"cc_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_server.url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    # Webhook receivers in tests listen on this machine: the operator's exception to the
    # refusal of loopback targets.
    local = ("127.0.0.1/32",)
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        return Settings(
            data_dir=tmp_path / "data",
            database_url=url,
            master_key=os.urandom(32),
            webhook_allowed_networks=local,
        )
    return Settings(data_dir=tmp_path / "data", webhook_allowed_networks=local)


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def runtime(settings: Settings, clock: ShiftedClock) -> Iterator[Runtime]:
    rt = build(settings, clock=clock)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient[Any, Any]]:
    server = TestServer(
        create_app(runtime), host="127.0.0.1", access_log_class=PathOnlyAccessLogger
    )
    test_client: TestClient[Any, Any] = TestClient(server)
    await test_client.start_server()
    try:
        yield test_client
    finally:
        await test_client.close()


@pytest.fixture
async def api(client: TestClient[Any, Any], runtime: Runtime) -> Api:
    """An API client holding a fresh tenant's admin token."""
    return await Api.for_new_tenant(client, runtime, "Acme Support")
