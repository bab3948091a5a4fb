"""The inbound SMTP listener (aiosmtpd): mail to a tenant's mailbox address becomes an
email interaction. Unknown recipients are refused at RCPT (550), so nothing is written
for them; a message the core refuses gets a 5xx, an overloaded writer a 4xx (the sending
server retries later, and the retry is recorded once)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from channels.base import WebhookError
from contact_centre.errors import DomainError
from infra.writer import OverloadedError

if TYPE_CHECKING:
    from infra.runtime import Runtime

log = logging.getLogger(__name__)


class InboundMail:
    """The aiosmtpd handler."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        tenant = await asyncio.to_thread(self.runtime.app.claimed_tenant, "mailbox", address)
        if tenant is None:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        from infra.http.channel_routes import ingest_email, services

        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        rt = self.runtime
        try:
            for address in envelope.rcpt_tos:
                tenant = await asyncio.to_thread(rt.app.claimed_tenant, "mailbox", address)
                config = (
                    await asyncio.to_thread(services(rt).configs.get, tenant, "email")
                    if tenant
                    else None
                )
                if config is None:
                    return "550 5.1.1 no such mailbox here"
                await ingest_email(rt, config, raw, envelope_recipient=address.lower())
        except OverloadedError:
            return "451 4.3.0 busy, try again later"
        except WebhookError as error:
            return f"554 5.6.0 {error.code}"
        except DomainError as error:
            return f"554 5.6.0 {error.code}"
        return "250 2.0.0 accepted"


class SmtpListener:
    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.controller = Controller(
            InboundMail(runtime),
            hostname=settings.smtp_host,
            port=settings.smtp_port or 8025,
            data_size_limit=settings.smtp_max_bytes,
            server_hostname="contact-centre",
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
