"""The console script, run as users run it."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.config import Settings
from infra.http.app import create_app
from infra.localpg import free_port
from infra.runtime import build
from tests.helpers import Api

CLI = [sys.executable, "-m", "infra.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    env = {"CC_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["CC_DATABASE_URL"] = settings.database_url
        assert settings.master_key is not None
        env["CC_MASTER_KEY"] = base64.b64encode(settings.master_key).decode()
    return env


def test_help_lists_the_commands() -> None:
    result = run_cli("--help", env={})
    assert result.returncode == 0
    for command in ("serve", "demo", "tenant"):
        assert command in result.stdout
    assert "CC_DATABASE_URL" in result.stdout


def test_tenant_create_prints_the_id_and_a_working_admin_token(settings: Settings) -> None:
    result = run_cli("tenant", "create", "Acme Support", env=cli_env(settings))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"tenant_id", "admin_token"}
    runtime = build(settings)
    try:
        principal = runtime.app.authenticate(printed["admin_token"])
        assert principal is not None
        assert str(principal.tenant_id) == printed["tenant_id"]
        assert principal.role.value == "admin"
    finally:
        runtime.close()


def test_a_bad_configuration_is_reported_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli(
        "tenant",
        "create",
        "X",
        env={"CC_DATABASE_URL": "mysql://nope", "CC_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert "Traceback" not in result.stderr


async def test_demo_shows_conversations_on_all_six_channels(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    result = run_cli(
        "demo", "--exit-after-feeding", "--port", "0", "--data-dir", str(data), env={}, timeout=120
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["admin_token"].startswith("cc_")
    runtime = build(Settings(data_dir=data))
    server = TestServer(create_app(runtime), host="127.0.0.1")
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        runtime.catch_up()
        api = Api(client, printed["admin_token"], printed["tenant_id"])
        status, body = await api.get("/v1/conversations?limit=200")
        assert status == 200
        channels = {item["channel"] for item in body["items"]}
        assert channels == {"voice", "sms", "whatsapp", "email", "webchat", "social"}
        assert any(item["last_message"]["direction"] == "outbound" for item in body["items"])
    finally:
        await client.close()
        runtime.close()


@pytest.mark.timeout(60)
def test_serve_answers_health_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--data-dir", str(tmp_path / "serve")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    assert json.loads(answer.read()) == {"status": "ok"}
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_projections_rebuild_prints_a_final_count_and_restores_the_rows(settings: Settings) -> None:
    runtime = build(settings)
    try:
        tenant, _ = runtime.app.register_tenant("Acme")
        from datetime import UTC, datetime

        from contact_centre.interaction import (
            Channel,
            Direction,
            Identity,
            IdentityKind,
            Interaction,
        )

        for i in range(3):
            runtime.app.receive(
                Interaction(
                    tenant_id=tenant,
                    channel=Channel.SMS,
                    direction=Direction.INBOUND,
                    provider="t",
                    provider_message_id=str(i),
                    sender=Identity(IdentityKind.PHONE, f"+44770090012{i}"),
                    occurred_at=datetime.now(UTC),
                )
            )
        runtime.catch_up()
        latest = runtime.app.recorder.max_notification_id()
    finally:
        runtime.close()
    result = run_cli("projections", "rebuild", "inbox", env=cli_env(settings))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["projection"] == "inbox"
    assert report["events"] == latest
    runtime = build(settings)
    try:
        with runtime.readdb.read() as tx:
            tx.execute("SELECT COUNT(*) FROM rm_messages")
            assert tx.fetchone() == (3,)
    finally:
        runtime.close()
    together = run_cli("projections", "rebuild", "all", "--quiet", env=cli_env(settings))
    assert together.returncode == 0, together.stderr
    reports = [json.loads(line) for line in together.stdout.splitlines()]
    assert {r["projection"] for r in reports} >= {"inbox", "crm", "timeline", "webhooks"}
    assert all(r["events"] == latest for r in reports)
    runtime = build(settings)
    try:
        names = [c.name for c in runtime.consumers]
        assert [r["projection"] for r in reports] == names
        with runtime.readdb.read() as tx:
            tx.execute("SELECT COUNT(*) FROM rm_messages")
            assert tx.fetchone() == (3,)
            tx.execute("SELECT COUNT(*) FROM rm_crm_contacts")
            assert tx.fetchone() == (3,)
    finally:
        runtime.close()
    unknown = run_cli("projections", "rebuild", "nope", env=cli_env(settings))
    assert unknown.returncode == 2
    assert "no projection" in unknown.stderr
