"""Email over real SMTP both ways: an aiosmtpd listener in, aiosmtplib out to a local
aiosmtpd relay; threading by Message-ID, References and subject; bounces; robots."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from infra.config import Settings
from infra.runtime import Runtime
from tests.channels.fakes import free_port
from tests.channels.support import configure, wait_for_delivery
from tests.helpers import Api, settle

MAILBOX = "support@acme.example"
CUSTOMER = "dev.patel@example.com"


class Relay:
    """The tenant's outbound SMTP server: records what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = BytesParser(policy=default_policy).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 2.0.0 queued"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(smtp_port=free_port(), smtp_host="127.0.0.1")


async def configure_email(api: Api, relay_port: int) -> None:
    await configure(
        api,
        "email",
        {
            "addresses": [MAILBOX],
            "from_name": "Acme Support",
            "smtp_host": "127.0.0.1",
            "smtp_port": relay_port,
            "smtp_security": "none",
        },
    )


def mail(subject: str, body: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Dev Patel <{CUSTOMER}>"
    message["To"] = MAILBOX
    message["Subject"] = subject
    message["Message-ID"] = headers.pop("message_id", make_msgid(domain="example.com"))
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


async def smtp_send(runtime: Runtime, message: EmailMessage, to: str = MAILBOX) -> None:
    await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=runtime.settings.smtp_port,
        sender=CUSTOMER,
        recipients=[to],
        start_tls=False,
    )


async def email_conversations(api: Api) -> list[dict[str, Any]]:
    _, listing = await api.get("/v1/conversations?channel=email")
    return list(listing["items"])


async def test_mail_in_by_smtp_threads_and_the_reply_goes_out_with_threading_headers(
    api: Api,
    client: TestClient[Any, Any],
    runtime: Runtime,
    relay: tuple[Relay, int],
) -> None:
    outbox, relay_port = relay
    await configure_email(api, relay_port)
    first = mail("Invoice for order 5120", "Could you send me a VAT invoice?")
    await smtp_send(runtime, first)
    await settle(runtime)
    [item] = await email_conversations(api)
    _, detail = await api.get(f"/v1/conversations/{item['id']}")
    [message] = detail["messages"]
    assert (message["subject"], message["body"]) == (
        "Invoice for order 5120",
        "Could you send me a VAT invoice?",
    )
    assert message["from"] == {"kind": "email", "address": CUSTOMER, "display_name": "Dev Patel"}

    _, reply = await api.post(f"/v1/conversations/{item['id']}/replies", {"body": "Attached."})
    await wait_for_delivery(api, item["id"], reply["message_id"], "sent")
    [(envelope, sent)] = outbox.messages
    assert envelope.rcpt_tos == [CUSTOMER]
    assert sent["From"] == f"Acme Support <{MAILBOX}>"
    assert (sent["To"], sent["Subject"]) == (CUSTOMER, "Re: Invoice for order 5120")
    assert sent["In-Reply-To"] == first["Message-ID"]
    assert first["Message-ID"] in sent["References"]
    assert sent.get_content().strip() == "Attached."

    # The customer answers our reply: threaded by In-Reply-To / References.
    answer = mail(
        "Re: Invoice for order 5120",
        "Thanks! Please use Patel Ltd.",
        In_Reply_To=sent["Message-ID"],
        References=f"{first['Message-ID']} {sent['Message-ID']}",
    )
    await smtp_send(runtime, answer)
    # A client that drops the headers still threads by sender and subject.
    await smtp_send(runtime, mail("RE: invoice for order  5120", "One more thing"))
    # A new subject is a new conversation.
    await smtp_send(runtime, mail("Broken zip", "The zip on my bag broke"))
    await settle(runtime)
    conversations = await email_conversations(api)
    assert len(conversations) == 2
    _, detail = await api.get(f"/v1/conversations/{item['id']}")
    assert [m["body"] for m in detail["messages"] if m["direction"] == "inbound"] == [
        "Could you send me a VAT invoice?",
        "Thanks! Please use Patel Ltd.",
        "One more thing",
    ]


async def test_a_bounce_fails_the_reply_it_bounces_and_robots_are_ignored(
    api: Api,
    client: TestClient[Any, Any],
    runtime: Runtime,
    relay: tuple[Relay, int],
) -> None:
    outbox, relay_port = relay
    await configure_email(api, relay_port)
    await smtp_send(runtime, mail("Refund", "Where is my refund?"))
    await settle(runtime)
    [item] = await email_conversations(api)
    _, reply = await api.post(f"/v1/conversations/{item['id']}/replies", {"body": "Soon."})
    await wait_for_delivery(api, item["id"], reply["message_id"], "sent")
    [(_, sent)] = outbox.messages

    await settle(runtime)
    before = runtime.app.recorder.max_notification_id()
    for robot in (
        mail("Out of office", "I am away", Auto_Submitted="auto-replied"),
        mail("Newsletter", "Our sale", Precedence="bulk"),
    ):
        await smtp_send(runtime, robot)
    assert runtime.app.recorder.max_notification_id() == before

    dsn = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        f"To: {MAILBOX}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "Message-ID: <dsn-1@mx.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {CUSTOMER}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {sent['Message-ID']}\r\nSubject: Re: Refund\r\n"
        "--B--\r\n"
    ).encode()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=runtime.settings.smtp_port)
    async with smtp:
        await smtp.sendmail("", [MAILBOX], dsn)  # bounces come from the null sender
    failed = await wait_for_delivery(api, item["id"], reply["message_id"], "failed")
    assert (failed["error_code"], failed["provider_status"]) == ("5.1.1", "failed")
    _, detail = await api.get(f"/v1/conversations/{item['id']}")
    assert len(detail["messages"]) == 2  # the bounce is not a customer message


async def test_raw_upload_parses_html_and_attachments_and_refuses_unknown_recipients(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, relay: tuple[Relay, int]
) -> None:
    _, relay_port = relay
    await configure_email(api, relay_port)
    message = mail("Photos", "")
    message.clear_content()
    message.add_alternative(
        "<html><head><style>p{}</style></head><body><p>Hello <b>team</b>,</p>"
        "<p>see the photos &amp; receipt.</p><script>x()</script></body></html>",
        subtype="html",
    )
    message.add_attachment(b"\x89PNG fake", maintype="image", subtype="png", filename="a.png")
    path = f"/v1/channels/{api.tenant_id}/email/raw"
    headers = {"Content-Type": "message/rfc822"}
    status, body = await api.call("POST", path, data=message.as_bytes(), headers=headers)
    assert status == 201, body
    status, again = await api.call("POST", path, data=message.as_bytes(), headers=headers)
    assert (status, again["duplicate"], again["message_id"]) == (200, True, body["message_id"])
    _, detail = await api.get(f"/v1/conversations/{body['conversation_id']}")
    [received] = detail["messages"]
    assert received["body"] == "Hello team,\n\nsee the photos & receipt."
    [attachment] = received["attachments"]
    assert (attachment["name"], attachment["content_type"], attachment["size"]) == (
        "a.png",
        "image/png",
        9,
    )
    assert len(attachment["sha256"]) == 64

    stranger = mail("Hi", "Wrong door")
    del stranger["To"]
    stranger["To"] = "someone@else.example"
    before = runtime.app.recorder.max_notification_id()
    status, body = await api.call("POST", path, data=stranger.as_bytes(), headers=headers)
    assert (status, body["error"]) == (422, "invalid")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await smtp_send(runtime, stranger, to="someone@else.example")
    assert runtime.app.recorder.max_notification_id() == before
