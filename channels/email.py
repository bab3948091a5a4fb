"""Email: RFC 5322 messages in (SMTP listener or raw upload), replies out over SMTP.

Parsing uses the standard library's ``email`` package: text/plain is preferred, HTML is
turned into text, attachments keep only metadata (name, type, size, SHA-256). Auto-replies
and bulk mail are recognised so that two robots cannot loop; delivery-status
notifications (bounces) are recognised and reported against the message they bounce.
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import format_datetime, getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser

import aiosmtplib

from channels.base import ConfigSource, ProviderConfig, malformed
from contact_centre.deliveries import DeliveryStatus, OutboundJob, SendResult
from contact_centre.interaction import (
    Attachment,
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
)

PROVIDER = "smtp"
MAX_ATTACHMENTS = 50
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,500}>")
BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery-status notification about one of our messages."""

    original_message_id: str
    status: DeliveryStatus | None  # None: "delayed", nothing final yet
    action: str
    code: str | None  # the enhanced status code, e.g. 5.1.1


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    message_id: str
    sender: Identity
    recipients: list[str]  # every To / Cc / Delivered-To address, lower-cased
    subject: str
    body: str
    occurred_at: datetime
    references: list[str]  # References then In-Reply-To, oldest first
    attachments: tuple[Attachment, ...]
    automatic: str | None  # why it is an auto-reply or bulk mail, if it is
    bounce: Bounce | None

    def interaction(self, config: ProviderConfig, recipient: str) -> Interaction:
        return Interaction(
            tenant_id=config.tenant_id,
            channel=Channel.EMAIL,
            direction=Direction.INBOUND,
            provider=PROVIDER,
            provider_message_id=self.message_id,
            sender=self.sender,
            recipient=Identity(IdentityKind.EMAIL, recipient),
            subject=self.subject,
            body=self.body,
            occurred_at=self.occurred_at,
            attachments=self.attachments,
        )


def parse(raw: bytes, now: datetime) -> ParsedEmail:
    if not raw.strip():
        raise malformed("the message is empty")
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
    except (ValueError, TypeError, IndexError) as error:
        raise malformed(f"not an RFC 5322 message ({type(error).__name__})") from None
    assert isinstance(message, EmailMessage)
    name, address = parseaddr(str(message.get("From") or ""))
    if "@" not in address:
        raise malformed("the message has no From address")
    ids = _MESSAGE_ID.findall(str(message.get("Message-ID") or ""))
    message_id = ids[0] if ids else f"<sha256.{hashlib.sha256(raw).hexdigest()}@no-message-id>"
    references = _MESSAGE_ID.findall(str(message.get("References") or ""))
    references += [r for r in _MESSAGE_ID.findall(str(message.get("In-Reply-To") or ""))]
    recipients = [
        a.lower()
        for _, a in getaddresses(
            [str(v) for h in ("To", "Cc", "Delivered-To") for v in message.get_all(h, [])]
        )
        if "@" in a
    ]
    return ParsedEmail(
        message_id=message_id,
        sender=Identity(IdentityKind.EMAIL, address, name or None),
        recipients=recipients,
        subject=str(message.get("Subject") or "")[:1000],
        body=_body(message)[:100_000],
        occurred_at=_date(message, now),
        references=list(dict.fromkeys(references)),
        attachments=_attachments(message),
        automatic=_automatic(message),
        bounce=_bounce(message),
    )


def _date(message: EmailMessage, now: datetime) -> datetime:
    raw = message.get("Date")
    try:
        moment = parsedate_to_datetime(str(raw)) if raw else None
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        return now
    return moment.astimezone(UTC)


def _automatic(message: EmailMessage) -> str | None:
    auto = str(message.get("Auto-Submitted") or "").strip().lower()
    if auto and auto != "no":
        return "auto_submitted"
    if str(message.get("Precedence") or "").strip().lower() in BULK_PRECEDENCE:
        return "bulk"
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return "auto_reply"
    return None


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    text = content if isinstance(content, str) else ""
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.replace("\x00", "").strip()


def _attachments(message: EmailMessage) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    for part in message.iter_attachments():
        if len(found) >= MAX_ATTACHMENTS:
            break
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        found.append(
            Attachment(
                name=(part.get_filename() or "")[:256],
                content_type=part.get_content_type()[:255],
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return tuple(found)


_DSN_STATUS = {"failed": DeliveryStatus.FAILED, "delivered": DeliveryStatus.DELIVERED}


def _bounce(message: EmailMessage) -> Bounce | None:
    if message.get_content_type() != "multipart/report":
        return None
    if message.get_param("report-type") != "delivery-status":
        return None
    action, code, original = "", None, None
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            for block in part.get_payload():
                if isinstance(block, Message) and block.get("Action"):
                    action = str(block.get("Action")).strip().lower()
                    code = str(block.get("Status") or "").strip() or None
        elif kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original = original or _first_id(inner[0].get("Message-ID"))
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else ""
            headers = HeaderParser().parsestr(text)
            original = original or _first_id(headers.get("Message-ID"))
    if original is None or not action:
        return None
    return Bounce(original, _DSN_STATUS.get(action), action, code)


def _first_id(value: object) -> str | None:
    ids = _MESSAGE_ID.findall(str(value or ""))
    return ids[0] if ids else None


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [" ".join(line.split()) for line in "".join(extractor.parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def tenant_recipient(config: ProviderConfig, recipients: list[str]) -> str | None:
    """The first of the tenant's mailbox addresses the message was sent to."""
    ours = [a.strip().lower() for a in config.strings("addresses")]
    return next((a for a in recipients if a in ours), None)


# -- outbound -----------------------------------------------------------------------------
def build_reply(config: ProviderConfig, job: OutboundJob, now: datetime) -> EmailMessage:
    route = job.route
    message = EmailMessage()
    sender = route.sender or config.strings("addresses")[0]
    display = config.text("from_name")
    message["From"] = Address(display, addr_spec=sender) if display else sender
    message["To"] = route.to
    message["Subject"] = route.subject or ""
    message["Date"] = format_datetime(now)
    message["Message-ID"] = route.message_ref or f"<{job.delivery_id}@{sender.rpartition('@')[2]}>"
    if route.in_reply_to:
        message["In-Reply-To"] = route.in_reply_to
    if route.references:
        message["References"] = " ".join(route.references)
    message.set_content(job.body)
    return message


class EmailSender:
    """Sends replies through the tenant's outbound SMTP server (``smtp_*`` settings)."""

    def __init__(self, configs: ConfigSource, timeout: float = 30.0) -> None:
        self.configs = configs
        self.timeout = timeout

    def send(self, job: OutboundJob) -> SendResult:
        config = self.configs.get(job.tenant_id, "email")
        if config is None or not config.text("smtp_host") or not config.strings("addresses"):
            return SendResult.failed("not_configured")
        message = build_reply(config, job, datetime.now(UTC))
        return asyncio.run(self._send(config, message))

    async def _send(self, config: ProviderConfig, message: EmailMessage) -> SendResult:
        security = config.text("smtp_security", "starttls")
        port = config.settings.get("smtp_port")
        try:
            await aiosmtplib.send(
                message,
                hostname=config.text("smtp_host"),
                port=int(port) if isinstance(port, int) else None,
                username=config.text("smtp_username") or None,
                password=config.secret("smtp_password"),
                use_tls=security == "tls",
                start_tls=security == "starttls",
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [r.code for r in error.recipients]
            return _smtp_failure(codes[0] if codes else 550)
        except aiosmtplib.SMTPResponseException as error:
            return _smtp_failure(error.code)
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError):
            return SendResult.failed("connect_failed", transient=True)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            return SendResult.doubtful("connection_lost")
        return SendResult.accepted(str(message["Message-ID"]), "sent")


def _smtp_failure(code: int) -> SendResult:
    return SendResult.failed(f"smtp_{code}", transient=400 <= code < 500)
