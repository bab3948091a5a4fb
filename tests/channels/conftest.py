"""Channel tests: the server listens on a known port with CC_PUBLIC_BASE_URL pointing at
it (providers' callbacks and signatures use it), and the providers' APIs are local
stand-ins (tests/channels/fakes.py) that the real SDKs are pointed at."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.config import Settings
from infra.http.app import PathOnlyAccessLogger, create_app
from infra.runtime import Runtime
from tests.channels.fakes import FakeClouds, free_port


@pytest.fixture
async def clouds() -> AsyncIterator[FakeClouds]:
    fake = FakeClouds()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, clouds: FakeClouds, port: int) -> Settings:
    return settings.with_overrides(
        port=port,
        public_base_url=f"http://127.0.0.1:{port}",
        twilio_api_base=clouds.url("/twilio"),
        slack_api_base=clouds.url("/slack/api/"),
        meta_graph_base=clouds.url("/graph/v21.0"),
        provider_timeout_s=5,
    )


@pytest.fixture
async def client(runtime: Runtime, port: int) -> AsyncIterator[TestClient[Any, Any]]:
    server = TestServer(
        create_app(runtime), host="127.0.0.1", port=port, access_log_class=PathOnlyAccessLogger
    )
    test_client: TestClient[Any, Any] = TestClient(server)
    await test_client.start_server()
    try:
        yield test_client
    finally:
        await test_client.close()
