"""The OpenAPI document matches the implementation: every route has an entry and every
entry a route, and schemathesis, against the live server over real HTTP with a real admin
token, finds no 5xx and no answer that violates the document."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contact_centre.clock import ShiftedClock
from infra.config import Settings
from infra.http.app import PathOnlyAccessLogger, create_app
from infra.http.openapi import SCHEMAS, document
from infra.runtime import build
from tests.channels.fakes import free_port


async def test_every_route_has_an_openapi_entry_and_every_entry_a_route(
    client: TestClient[Any, Any],
) -> None:
    routes = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    async with client.get("/v1/openapi.json") as response:
        assert response.status == 200
        served = await response.json()
    documented = {
        (method.upper(), path) for path, item in served["paths"].items() for method in item
    }
    assert served == document()
    assert routes - documented == set(), "routes without an OpenAPI entry"
    assert documented - routes == set(), "OpenAPI entries without a route"


def test_the_document_is_openapi_3_1_with_valid_json_schemas() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            if operation["security"]:  # every authenticated route says who may call it
                assert operation["description"].startswith("Roles: "), (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)


@dataclass
class LiveServer:
    base: str
    token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The real server on 127.0.0.1 (SQLite; the HTTP layer is the same on both backends),
    with a tenant and its admin token. Its tickers are not started: whatever schemathesis
    configures (webhooks, channel settings), nothing leaves this machine."""
    data: Path = tmp_path_factory.mktemp("live") / "data"
    runtime = build(Settings(data_dir=data, projection_wait_ms=200), clock=ShiftedClock())
    runtime.tickers = None
    _, issued = runtime.app.register_tenant("Live")
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        runner = web.AppRunner(create_app(runtime), access_log_class=PathOnlyAccessLogger)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", issued.token)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        runtime.close()


# Raw bodies (an NDJSON import, an email) are sent as the text schemathesis generates.
schemathesis.serializer.alias(["application/x-ndjson", "message/rfc822"], "text/plain")

# The document the server serves (the test above checks it is this one); terminating the
# tenant would turn every later call into a 401, so that one operation is left out.
schema = schemathesis.openapi.from_dict(document()).exclude(
    method="POST", path="/v1/tenant/termination"
)


@schema.parametrize()
@hypothesis_settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_live_server_answers_every_operation_as_documented(case: Any, live: LiveServer) -> None:
    case.call_and_validate(
        base_url=live.base,
        headers={"Authorization": f"Bearer {live.token}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=30,
    )
