"""Local stand-ins for the providers' clouds, on 127.0.0.1, speaking their wire formats:
the Twilio REST API, Slack's Web API and Meta's Graph Send API. The real SDKs talk to
them; every request is recorded, and a test can queue failures."""

from __future__ import annotations

import itertools
import json
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


@dataclass
class Recorded:
    provider: str
    path: str
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None
    answer: dict[str, Any] = field(default_factory=dict)  # what the stand-in answered


class FakeClouds:
    """One local server for the three HTTP providers (by path prefix)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        # provider -> queued (status, body) answers that replace the next success
        self.failures: dict[str, list[tuple[int, Any]]] = {"twilio": [], "slack": [], "meta": []}
        self._counter = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def sent(self, provider: str) -> list[Recorded]:
        return [r for r in self.requests if r.provider == provider]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/twilio/2010-04-01/Accounts/{sid}/Messages.json", self._twilio)
        app.router.add_post("/twilio/2010-04-01/Accounts/{sid}/Calls/{call}.json", self._call)
        app.router.add_post("/slack/api/chat.postMessage", self._slack)
        app.router.add_post("/graph/v21.0/{page}/messages", self._meta)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _failure(self, provider: str) -> web.Response | None:
        queue = self.failures[provider]
        if not queue:
            return None
        status, body = queue.pop(0)
        return web.json_response(body, status=status)

    async def _twilio(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        recorded = Recorded("twilio", request.path, dict(request.headers), form=form)
        self.requests.append(recorded)
        failure = self._failure("twilio")
        if failure is not None:
            return failure
        sid = f"SM{secrets.token_hex(16)}"
        recorded.answer = {"sid": sid}
        return web.json_response(
            {
                "sid": sid,
                "account_sid": request.match_info["sid"],
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "error_code": None,
            },
            status=201,
        )

    async def _call(self, request: web.Request) -> web.Response:
        """Calls resource update (a live call redirected to new TwiML)."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        recorded = Recorded("twilio", request.path, dict(request.headers), form=form)
        self.requests.append(recorded)
        failure = self._failure("twilio")
        if failure is not None:
            return failure
        return web.json_response(
            {
                "sid": request.match_info["call"],
                "account_sid": request.match_info["sid"],
                "status": "in-progress",
                "direction": "inbound",
            }
        )

    async def _slack(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())  # slack_sdk posts chat.postMessage as JSON
        recorded = Recorded("slack", request.path, dict(request.headers), json=body)
        self.requests.append(recorded)
        failure = self._failure("slack")
        if failure is not None:
            return failure
        ts = f"1800000000.{next(self._counter):06d}"
        recorded.answer = {"ts": ts}
        return web.json_response(
            {"ok": True, "channel": body.get("channel"), "ts": ts, "message": {"ts": ts}}
        )

    async def _meta(self, request: web.Request) -> web.Response:
        body = await request.json()
        recorded = Recorded("meta", request.path, dict(request.headers), json=body)
        self.requests.append(recorded)
        failure = self._failure("meta")
        if failure is not None:
            return failure
        recorded.answer = {"message_id": f"m_{secrets.token_hex(12)}"}
        return web.json_response({"recipient_id": body["recipient"]["id"], **recorded.answer})
