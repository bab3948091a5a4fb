"""Twilio: Programmable Voice, SMS and WhatsApp (Messaging), in and out.

Inbound webhooks are verified with the SDK's :class:`RequestValidator` against the public
URL Twilio called; outbound messages go through the SDK's REST client with a status
callback URL that names the delivery, so a status report can resolve an attempt whose
outcome was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from channels.base import ChannelOptions, ProviderConfig, ProviderSender, forbidden, malformed
from contact_centre.deliveries import DeliveryStatus, OutboundJob, SendResult
from contact_centre.errors import ValidationError
from contact_centre.interaction import (
    Attachment,
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
)

log = logging.getLogger(__name__)

PROVIDER = "twilio"
TWILIO_API = "https://api.twilio.com"
MAX_MEDIA = 10  # Twilio sends at most 10 media items per message

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
DEFAULT_HELP = "Reply STOP to stop messages from us, START to start again."
DEFAULT_GREETING = "Thank you for calling."
DEFAULT_VOICEMAIL = "Nobody can take your call right now. Please leave a message after the tone."

# Message statuses from status callbacks, as delivery states; the others (accepted,
# queued, sending, scheduled) say nothing beyond "the provider has it".
MESSAGE_STATUSES = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "undelivered": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
}
CALL_STATUSES = {
    "queued": "queued",
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    "answered": "answered",
    "completed": "completed",
    "busy": "busy",
    "failed": "failed",
    "no-answer": "no-answer",
    "canceled": "canceled",
}


# -- inbound ------------------------------------------------------------------------------
def verify(config: ProviderConfig, url: str, params: Mapping[str, Any], signature: str) -> None:
    """Raise 403 unless ``signature`` is Twilio's signature of ``url`` and ``params``."""
    token = config.secret("auth_token")
    if not token or not signature:
        raise forbidden()
    if not RequestValidator(token).validate(url, params, signature):
        raise forbidden()
    account = config.text("account_sid")
    if account and params.get("AccountSid") != account:
        raise forbidden("the request is for another Twilio account")


def _field(params: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise malformed(f"{name} is missing")
        return ""
    if not isinstance(value, str) or len(value) > 100_000:
        raise malformed(f"{name} is not a valid value")
    return value


def _our_number(config: ProviderConfig, raw: str) -> str:
    """The configured number a message or call was addressed to, or 422."""
    number = raw.removeprefix("whatsapp:").strip()
    ours = {n.removeprefix("whatsapp:").strip() for n in config.strings("phone_numbers")}
    if number not in ours:
        raise ValidationError("the To number is not one of this tenant's phone_numbers")
    return number


@dataclass(frozen=True, slots=True)
class InboundMessage:
    interaction: Interaction
    keyword: str | None  # STOP/START/HELP family, upper-cased
    opted_out: bool | None  # True for STOP..., False for START..., None otherwise


def parse_message(
    config: ProviderConfig, params: Mapping[str, Any], now: datetime
) -> InboundMessage:
    """An inbound SMS, MMS or WhatsApp message (``whatsapp:`` addresses)."""
    sid = _field(params, "MessageSid")
    sender = _field(params, "From")
    to = _field(params, "To")
    channel = Channel.WHATSAPP if sender.startswith("whatsapp:") else Channel.SMS
    _our_number(config, to)
    try:
        count = int(params.get("NumMedia") or 0)
    except ValueError:
        raise malformed("NumMedia is not a number") from None
    if not 0 <= count <= MAX_MEDIA:
        raise malformed(f"NumMedia must be between 0 and {MAX_MEDIA}")
    attachments = tuple(
        Attachment(
            name=_field(params, f"MediaUrl{i}").rsplit("/", 1)[-1],
            content_type=_field(params, f"MediaContentType{i}", required=False)
            or "application/octet-stream",
            url=_field(params, f"MediaUrl{i}"),
        )
        for i in range(count)
    )
    body = _field(params, "Body", required=False)
    word = body.strip().upper()
    keyword = word if word in OPT_OUT | OPT_IN | HELP else None
    opted_out = True if word in OPT_OUT else False if word in OPT_IN else None
    name = _field(params, "ProfileName", required=False) or None
    interaction = Interaction(
        tenant_id=config.tenant_id,
        channel=channel,
        direction=Direction.INBOUND,
        provider=PROVIDER,
        provider_message_id=sid,
        sender=Identity(IdentityKind.PHONE, sender, name),
        recipient=Identity(IdentityKind.PHONE, to),
        body=body,
        occurred_at=now,
        attachments=attachments,
    )
    return InboundMessage(interaction, keyword, opted_out)


def parse_call(config: ProviderConfig, params: Mapping[str, Any], now: datetime) -> Interaction:
    """An incoming call: it opens (or continues) the caller's voice conversation."""
    sid = _field(params, "CallSid")
    sender = _field(params, "From")
    to = _field(params, "To")
    _our_number(config, to)
    name = _field(params, "CallerName", required=False) or None
    return Interaction(
        tenant_id=config.tenant_id,
        channel=Channel.VOICE,
        direction=Direction.INBOUND,
        provider=PROVIDER,
        provider_message_id=sid,
        sender=Identity(IdentityKind.PHONE, sender, name),
        recipient=Identity(IdentityKind.PHONE, to),
        body="",
        occurred_at=now,
    )


def help_reply(config: ProviderConfig) -> str:
    response = MessagingResponse()
    response.message(config.text("help_text", DEFAULT_HELP))
    return str(response)


def empty_messaging_reply() -> str:
    return str(MessagingResponse())


def call_answer(config: ProviderConfig, options: ChannelOptions, agents_online: bool) -> str:
    """TwiML for an incoming call: greeting, then the tenant's queue when agents are
    online, else voicemail with transcription."""
    voice = config.settings.get("voice")
    voice = voice if isinstance(voice, dict) else {}
    response = VoiceResponse()
    response.say(str(voice.get("greeting") or DEFAULT_GREETING))
    if agents_online:
        queue = str(voice.get("queue_name") or "support")
        wait_url = voice.get("wait_url")
        if wait_url:
            response.enqueue(queue, wait_url=str(wait_url), wait_url_method="POST")
        else:
            response.enqueue(queue)
    else:
        response.say(str(voice.get("voicemail_prompt") or DEFAULT_VOICEMAIL))
        response.record(
            max_length=int(voice.get("voicemail_max_seconds") or 120),
            play_beep=True,
            transcribe=True,
            transcribe_callback=options.webhook_url(config.tenant_id, "twilio/voice/transcription"),
            recording_status_callback=options.webhook_url(
                config.tenant_id, "twilio/voice/recording"
            ),
            recording_status_callback_event="completed",
        )
        response.hangup()
    return str(response)


def agents_online(config: ProviderConfig) -> bool:
    """Whether calls queue for agents or go to voicemail. Until presence exists (the
    routing work), the tenant's admin says so in the twilio settings' ``voice``."""
    voice = config.settings.get("voice")
    return bool(voice.get("agents_online", True)) if isinstance(voice, dict) else True


@dataclass(frozen=True, slots=True)
class CallStatus:
    call_sid: str
    status: str
    duration_seconds: int | None


def _seconds(params: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        raw = params.get(name)
        if raw not in (None, ""):
            try:
                value = int(str(raw))
            except ValueError:
                raise malformed(f"{name} is not a number of seconds") from None
            if value < 0:
                raise malformed(f"{name} is negative")
            return value
    return None


def parse_call_status(params: Mapping[str, Any]) -> CallStatus:
    sid = _field(params, "CallSid")
    raw = _field(params, "CallStatus")
    status = CALL_STATUSES.get(raw)
    if status is None:
        raise malformed(f"unknown CallStatus {raw[:32]!r}")
    return CallStatus(sid, status, _seconds(params, "CallDuration"))


@dataclass(frozen=True, slots=True)
class Recording:
    call_sid: str
    recording_sid: str
    url: str
    duration_seconds: int | None


def parse_recording(params: Mapping[str, Any]) -> Recording:
    return Recording(
        call_sid=_field(params, "CallSid"),
        recording_sid=_field(params, "RecordingSid"),
        url=_field(params, "RecordingUrl"),
        duration_seconds=_seconds(params, "RecordingDuration"),
    )


@dataclass(frozen=True, slots=True)
class Transcription:
    call_sid: str
    transcription_sid: str
    text: str
    completed: bool


def parse_transcription(params: Mapping[str, Any]) -> Transcription:
    return Transcription(
        call_sid=_field(params, "CallSid"),
        transcription_sid=_field(params, "TranscriptionSid"),
        text=_field(params, "TranscriptionText", required=False),
        completed=params.get("TranscriptionStatus") == "completed",
    )


@dataclass(frozen=True, slots=True)
class MessageStatus:
    message_sid: str
    status: DeliveryStatus | None  # None: an interim status that changes nothing
    provider_status: str
    error_code: str | None


def parse_message_status(params: Mapping[str, Any]) -> MessageStatus:
    sid = _field(params, "MessageSid")
    raw = _field(params, "MessageStatus")
    if len(raw) > 32:
        raise malformed("MessageStatus is not a status")
    error = _field(params, "ErrorCode", required=False) or None
    return MessageStatus(sid, MESSAGE_STATUSES.get(raw), raw, error)


# -- outbound -----------------------------------------------------------------------------
class RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # untyped SDK base
    """The SDK's own HTTP client, sending to another base URL (a local stand-in in tests,
    a regional edge or an egress proxy in production)."""

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


class TwilioSender(ProviderSender):
    """Sends SMS and WhatsApp replies (and replies to callers, by SMS)."""

    provider = PROVIDER
    credential = "auth_token"  # the name of the secret setting

    def send(self, job: OutboundJob) -> SendResult:
        credentials = self.credentials(job.tenant_id)
        if credentials is None or not credentials[0].text("account_sid"):
            return SendResult.failed("not_configured")
        config, token = credentials
        if job.route.sender is None:
            return SendResult.failed("no_sender_number")
        prefix = "whatsapp:" if job.channel == Channel.WHATSAPP else ""
        client = Client(
            config.text("account_sid"),
            token,
            http_client=RebasedHttpClient(self.options.twilio_api_base, self.options.http_timeout),
            environment={},  # configuration comes from the tenant, never the environment
        )
        callback = status_callback_url(self.options, job.tenant_id, job.delivery_id)
        try:
            message = client.messages.create(
                to=prefix + job.route.to,
                from_=prefix + job.route.sender,
                body=job.body,
                status_callback=callback,
            )
        except TwilioRestException as error:
            transient = error.status == 429 or error.status >= 500
            return SendResult.failed(str(error.code or error.status), transient=transient)
        except requests.exceptions.ConnectTimeout:
            return SendResult.failed("connect_timeout", transient=True)
        except requests.exceptions.ReadTimeout:
            return SendResult.doubtful("timeout")
        except requests.exceptions.ConnectionError as error:
            if _never_connected(error):
                return SendResult.failed("connection_refused", transient=True)
            return SendResult.doubtful("connection_lost")
        return SendResult.accepted(str(message.sid), str(message.status or "queued"))


def _never_connected(error: requests.exceptions.ConnectionError) -> bool:
    text = repr(error.args)
    return "NewConnectionError" in text or "Connection refused" in text


def status_callback_url(options: ChannelOptions, tenant_id: UUID, delivery_id: UUID) -> str:
    return options.webhook_url(tenant_id, f"twilio/sms/status?delivery={delivery_id}")


# -- routing: connecting a waiting call to the agent who accepted it ----------------------
def agent_client(agent_id: UUID) -> str:
    """The Twilio Client identity of an agent's device (softphone): ``agent-<id>``."""
    return f"agent-{agent_id}"


def connect_twiml(agent_id: UUID) -> str:
    """TwiML that takes the caller out of the queue and rings the agent's device."""
    response = VoiceResponse()
    dial = response.dial()
    dial.client(agent_client(agent_id))
    return str(response)


class TwilioCallConnector(ProviderSender):
    """Redirects a queued call (Calls resource ``update(url=…)``) to our connect TwiML,
    which dials the agent who accepted it; the call leaves its ``<Enqueue>``."""

    provider = PROVIDER
    credential = "auth_token"  # the name of the secret setting

    def connect(self, tenant_id: UUID, call_sid: str, agent_id: UUID) -> bool:
        credentials = self.credentials(tenant_id)
        if credentials is None or not credentials[0].text("account_sid"):
            return False
        config, token = credentials
        client = Client(
            config.text("account_sid"),
            token,
            http_client=RebasedHttpClient(self.options.twilio_api_base, self.options.http_timeout),
            environment={},
        )
        url = self.options.webhook_url(tenant_id, f"twilio/voice/connect?agent={agent_id}")
        try:
            client.calls(call_sid).update(url=url, method="POST")
        except (TwilioRestException, requests.exceptions.RequestException) as error:
            log.warning(
                "connecting a call for tenant %s failed: %s", tenant_id, type(error).__name__
            )
            return False
        return True
