"""Meta Messenger and Instagram (Graph webhooks and the Send API)."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from channels.base import ProviderConfig, ProviderSender, forbidden, malformed, unreachable
from contact_centre.deliveries import DeliveryStatus, OutboundJob, SendResult
from contact_centre.interaction import (
    Attachment,
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
)

PROVIDER = "meta"
PLATFORMS = {"page": "messenger", "instagram": "instagram"}
# Graph error codes that mean "not now" (rate limits, temporary unavailability).
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 613})


def verify_subscription(config: ProviderConfig, mode: str, token: str) -> None:
    """The ``hub.challenge`` GET: 403 unless it carries the tenant's verify token."""
    expected = config.secret("verify_token")
    if (
        mode != "subscribe"
        or not expected
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        raise forbidden("hub.verify_token does not match")


def verify(config: ProviderConfig, body: bytes, header: str) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC of the raw body with the app secret>``,
    compared in constant time."""
    secret = config.secret("app_secret")
    scheme, _, given = header.partition("=")
    if not secret or scheme != "sha256" or not given:
        raise forbidden()
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise forbidden()


@dataclass(frozen=True, slots=True)
class StatusReport:
    mid: str
    status: DeliveryStatus


@dataclass(frozen=True, slots=True)
class MetaBatch:
    interactions: list[Interaction] = field(default_factory=list)
    statuses: list[StatusReport] = field(default_factory=list)


def parse(config: ProviderConfig, body: bytes) -> MetaBatch:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entry"), list):
        raise malformed("not a Graph webhook payload (no entry list)")
    platform = PLATFORMS.get(str(doc.get("object")))
    if platform is None:
        raise malformed("object must be page or instagram")
    pages = set(config.strings("page_ids"))
    batch = MetaBatch()
    for entry in doc["entry"][:100]:
        if not isinstance(entry, dict):
            raise malformed("an entry is not an object")
        if pages and str(entry.get("id")) not in pages:
            continue  # a page the tenant did not connect
        events = entry.get("messaging")
        if not isinstance(events, list):
            continue
        for item in events[:1000]:
            _parse_item(config, platform, item, batch)
    return batch


def _id(doc: Any, name: str) -> str:
    inner = doc.get(name) if isinstance(doc, dict) else None
    value = inner.get("id") if isinstance(inner, dict) else None
    if not isinstance(value, str | int) or not str(value) or len(str(value)) > 100:
        raise malformed(f"{name}.id is missing")
    return str(value)


def _parse_item(config: ProviderConfig, platform: str, item: Any, batch: MetaBatch) -> None:
    if not isinstance(item, dict):
        raise malformed("a messaging item is not an object")
    delivery = item.get("delivery")
    if isinstance(delivery, dict):
        mids = delivery.get("mids")
        mids = mids if isinstance(mids, list) else []
        batch.statuses.extend(
            StatusReport(str(m), DeliveryStatus.DELIVERED) for m in mids if isinstance(m, str)
        )
        return
    message, postback = item.get("message"), item.get("postback")
    if not isinstance(message, dict) and not isinstance(postback, dict):
        return  # reads, reactions, referrals...: nothing to record
    sender, page = _id(item, "sender"), _id(item, "recipient")
    timestamp = item.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise malformed("timestamp must be milliseconds since the epoch")
    attachments: tuple[Attachment, ...] = ()
    if isinstance(message, dict):
        if message.get("is_echo"):
            return  # our own page's message coming back
        mid = message.get("mid")
        text = message.get("text")
        text = text if isinstance(text, str) else ""
        raw = message.get("attachments")
        raw = raw if isinstance(raw, list) else []
        attachments = tuple(_attachment(a) for a in raw[:20] if isinstance(a, dict))
    else:
        assert isinstance(postback, dict)
        mid = postback.get("mid") or f"postback:{sender}:{timestamp}"
        text = str(postback.get("title") or postback.get("payload") or "")
    if not isinstance(mid, str) or not mid:
        raise malformed("message.mid is missing")
    batch.interactions.append(
        Interaction(
            tenant_id=config.tenant_id,
            channel=Channel.SOCIAL,
            direction=Direction.INBOUND,
            provider=PROVIDER,
            provider_message_id=mid,
            sender=Identity(IdentityKind.HANDLE, f"{platform}:{sender}"),
            recipient=Identity(IdentityKind.HANDLE, f"{platform}:{page}"),
            thread_key=f"meta:{platform}:{page}:{sender}",
            body=text[:100_000],
            occurred_at=datetime.fromtimestamp(timestamp / 1000, UTC),
            attachments=attachments,
        )
    )


def _attachment(doc: dict[str, Any]) -> Attachment:
    payload = doc.get("payload")
    url = payload.get("url") if isinstance(payload, dict) else None
    kind = str(doc.get("type") or "file")[:32]
    return Attachment(
        name=kind,
        content_type=f"{kind}/*"
        if kind in ("image", "video", "audio")
        else "application/octet-stream",
        url=url[:2000] if isinstance(url, str) else None,
    )


class MetaSender(ProviderSender):
    """Replies through the Send API of the page (or Instagram account) written to."""

    provider = PROVIDER
    credential = "page_access_token"  # the name of the secret setting

    def send(self, job: OutboundJob) -> SendResult:
        credentials = self.credentials(job.tenant_id)
        if credentials is None:
            return SendResult.failed("not_configured")
        _, token = credentials
        parts = (job.route.thread or "").split(":")
        if len(parts) != 4:
            return SendResult.failed("no_thread")
        _, _, page, recipient = parts
        request = urllib.request.Request(  # noqa: S310 (an https Graph URL from settings)
            f"{self.options.meta_graph_base.rstrip('/')}/{page}/messages",
            data=json.dumps(
                {
                    "recipient": {"id": recipient},
                    "messaging_type": "RESPONSE",
                    "message": {"text": job.body},
                }
            ).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.options.http_timeout) as response:  # noqa: S310
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return _graph_error(error)
        except (TimeoutError, urllib.error.URLError) as error:
            return unreachable(error)
        mid = answer.get("message_id") if isinstance(answer, dict) else None
        if not isinstance(mid, str):
            return SendResult.doubtful("no_message_id")
        return SendResult.accepted(mid, "sent")


def _graph_error(error: urllib.error.HTTPError) -> SendResult:
    try:
        doc = json.loads(error.read() or b"{}")
    except ValueError:
        doc = {}
    details = doc.get("error") if isinstance(doc, dict) else None
    code = details.get("code") if isinstance(details, dict) else None
    transient = error.code == 429 or error.code >= 500 or code in TRANSIENT_CODES
    return SendResult.failed(str(code if code is not None else error.code), transient=transient)
