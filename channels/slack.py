"""Slack (Events API): messages in a shared customer channel become conversations, one per
Slack thread; replies go back into the thread with ``chat.postMessage``."""

from __future__ import annotations

import json
import logging
import urllib.error
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from channels.base import ProviderConfig, ProviderSender, forbidden, malformed, unreachable
from contact_centre.deliveries import OutboundJob, SendResult
from contact_centre.interaction import (
    Attachment,
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
)

log = logging.getLogger(__name__)

PROVIDER = "slack"
# Message subtypes that are a person writing; every other subtype (edits, deletions,
# joins, bot messages...) is not a new customer message.
PERSON_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})


def verify(config: ProviderConfig, body: bytes, timestamp: str, signature: str) -> None:
    """Raise 403 unless the request is signed with the tenant's signing secret within
    Slack's 5-minute replay window (the SDK's verifier checks both)."""
    secret = config.secret("signing_secret")
    if not secret or not timestamp or not signature:
        raise forbidden()
    try:
        valid = SignatureVerifier(secret).is_valid(body, timestamp, signature)
    except ValueError:  # a timestamp that is not a number
        valid = False
    if not valid:
        raise forbidden()


@dataclass(frozen=True, slots=True)
class SlackEvent:
    """What one Events API request asks of us."""

    challenge: str | None = None  # url_verification
    interaction: Interaction | None = None  # a customer's message
    echo_ref: str | None = None  # our own bot's message appearing in the channel


def parse(config: ProviderConfig, body: bytes) -> SlackEvent:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise malformed("not a Slack Events API payload")
    if doc["type"] == "url_verification":
        challenge = doc.get("challenge")
        if not isinstance(challenge, str) or not challenge or len(challenge) > 500:
            raise malformed("url_verification without a challenge")
        return SlackEvent(challenge=challenge)
    if doc["type"] != "event_callback":
        return SlackEvent()
    event = doc.get("event")
    if not isinstance(event, dict):
        raise malformed("event_callback without an event")
    if event.get("type") != "message":
        return SlackEvent()
    channel = _str(event, "channel")
    ts = _str(event, "ts")
    allowed = config.strings("channel_ids")
    if allowed and channel not in allowed:
        return SlackEvent()  # a channel the tenant did not connect: not ours to record
    if event.get("bot_id") or event.get("subtype") == "bot_message":
        return SlackEvent(echo_ref=f"{channel}:{ts}")
    if event.get("subtype") not in PERSON_SUBTYPES:
        return SlackEvent()
    user = _str(event, "user")
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else ts
    text = event.get("text")
    text = text if isinstance(text, str) else ""
    files = event.get("files")
    files = files if isinstance(files, list) else []
    try:
        occurred = datetime.fromtimestamp(float(ts), UTC)
    except ValueError:
        raise malformed("ts is not a Slack timestamp") from None
    return SlackEvent(
        interaction=Interaction(
            tenant_id=config.tenant_id,
            channel=Channel.SOCIAL,
            direction=Direction.INBOUND,
            provider=PROVIDER,
            provider_message_id=f"{channel}:{ts}",
            sender=Identity(IdentityKind.HANDLE, f"slack:{user}"),
            recipient=Identity(IdentityKind.HANDLE, f"slack:{channel}"),
            thread_key=f"slack:{channel}:{thread_ts}",
            body=text,
            occurred_at=occurred,
            attachments=tuple(_attachment(f) for f in files[:20] if isinstance(f, dict)),
        )
    )


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise malformed(f"event.{name} is missing")
    return value


def _attachment(doc: dict[str, Any]) -> Attachment:
    size = doc.get("size")
    return Attachment(
        name=str(doc.get("name") or "")[:256],
        content_type=str(doc.get("mimetype") or "application/octet-stream")[:255],
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        url=str(doc["url_private"])[:2000] if isinstance(doc.get("url_private"), str) else None,
    )


class SlackSender(ProviderSender):
    """Posts a reply into the Slack thread the conversation is."""

    provider = PROVIDER
    credential = "bot_token"  # the name of the secret setting

    def send(self, job: OutboundJob) -> SendResult:
        credentials = self.credentials(job.tenant_id)
        if credentials is None:
            return SendResult.failed("not_configured")
        _, token = credentials
        _, channel, thread_ts = (job.route.thread or "::").split(":", 2)
        if not channel or not thread_ts:
            return SendResult.failed("no_thread")
        kwargs: dict[str, Any] = {"token": token, "timeout": int(self.options.http_timeout)}
        if self.options.slack_api_base:
            kwargs["base_url"] = self.options.slack_api_base.rstrip("/") + "/"
        client = WebClient(**kwargs)
        try:
            response = client.chat_postMessage(channel=channel, text=job.body, thread_ts=thread_ts)
        except SlackApiError as error:
            status = error.response.status_code
            code = str(error.response.get("error") or status)
            return SendResult.failed(code, transient=status == 429 or status >= 500)
        except (TimeoutError, urllib.error.URLError) as error:
            return unreachable(error)
        return SendResult.accepted(f"{channel}:{response['ts']}", "sent")


class SlackAlerter(ProviderSender):
    """Posts supervisor alerts into the tenant's alerts channel (``alerts_channel_id`` of
    its Slack settings) with the bot token. Alerts carry no personal data."""

    provider = PROVIDER
    credential = "bot_token"  # the name of the secret setting

    def post(self, tenant_id: UUID, text: str) -> bool:
        credentials = self.credentials(tenant_id)
        if credentials is None:
            return False
        config, token = credentials
        channel = config.text("alerts_channel_id")
        if not channel:
            return False
        kwargs: dict[str, Any] = {"token": token, "timeout": int(self.options.http_timeout)}
        if self.options.slack_api_base:
            kwargs["base_url"] = self.options.slack_api_base.rstrip("/") + "/"
        try:
            WebClient(**kwargs).chat_postMessage(channel=channel, text=text)
        except (SlackApiError, TimeoutError, urllib.error.URLError) as error:
            log.warning("slack alert for tenant %s failed: %s", tenant_id, type(error).__name__)
            return False
        return True
