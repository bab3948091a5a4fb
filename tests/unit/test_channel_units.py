"""Channel building blocks that need no server: delivery state rules, the visitor's IP
behind proxies, rate limits, subject threading keys, HTML to text."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from channels.email import html_to_text
from channels.webchat import RateLimiter, client_ip, origin_allowed
from contact_centre.channel_service import normalise_subject
from contact_centre.deliveries import MAX_ATTEMPTS, Delivery, DeliveryStatus, backoff
from contact_centre.privacy import Sealed
from infra.config import ConfigError, Settings

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def delivery() -> Delivery:
    sealed = Sealed("conversation:x", "t")
    return Delivery.request(
        uuid4(), uuid4(), uuid4(), "sms", "twilio", "agent:a", sealed, sealed, NOW
    )


def test_an_attempt_needs_a_pending_due_delivery_and_late_reports_never_go_backwards() -> None:
    d = delivery()
    attempt = d.start_attempt(NOW)
    assert (attempt, d.status) == (1, DeliveryStatus.SENDING)
    with pytest.raises(Exception, match="not pending"):
        d.start_attempt(NOW)  # never two attempts in flight
    assert d.accept(1, Sealed("conversation:x", "ref"), "queued", NOW)
    assert d.report_status(DeliveryStatus.DELIVERED, "delivered", None, None, NOW)
    assert not d.report_status(DeliveryStatus.SENT, "sent", None, None, NOW)  # a late callback
    assert not d.report_status(DeliveryStatus.DELIVERED, "delivered", None, None, NOW)  # a retry
    assert d.report_status(DeliveryStatus.FAILED, "undelivered", "30003", None, NOW)
    assert not d.report_status(DeliveryStatus.DELIVERED, "delivered", None, None, NOW)
    assert (d.status, d.error_code) == (DeliveryStatus.FAILED, "30003")


def test_transient_failures_back_off_until_the_attempts_run_out() -> None:
    d = delivery()
    moment = NOW
    for attempt in range(1, MAX_ATTEMPTS + 1):
        moment = d.due_at or moment
        assert d.start_attempt(moment) == attempt
        assert d.fail_attempt(attempt, "503", True, moment)
    assert d.status is DeliveryStatus.FAILED
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 9)] == [2, 4, 8, 300]


def test_a_status_callback_resolves_an_attempt_whose_answer_was_lost() -> None:
    d = delivery()
    d.start_attempt(NOW)
    assert d.report_status(DeliveryStatus.DELIVERED, "delivered", None, Sealed("s", "r"), NOW)
    assert d.provider_ref == Sealed("s", "r")
    assert not d.accept(1, Sealed("s", "other"), "queued", NOW + timedelta(seconds=1))


TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),  # untrusted peer: header ignored
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "1.2.3.4, 203.0.113.9, 10.0.0.7", "203.0.113.9"),  # spoofed left part
        ("10.0.0.5", "not-an-ip", "10.0.0.5"),
        ("10.0.0.5", None, "10.0.0.5"),
    ],
)
def test_the_visitor_ip_trusts_forwarded_for_only_from_trusted_proxies(
    peer: str, forwarded: str | None, expected: str
) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_the_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.allow("ip", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("ip", 1.0)
    assert not limiter.allow("ip", 1.0)
    assert limiter.allow("other", 1.0)


def test_origins_match_exactly() -> None:
    allowed = ["https://shop.example"]
    assert origin_allowed("https://shop.example/", allowed)
    assert not origin_allowed("https://shop.example.evil.com", allowed)
    assert not origin_allowed("http://shop.example", allowed)
    assert not origin_allowed(None, allowed)


def test_subjects_thread_without_reply_prefixes() -> None:
    assert normalise_subject("Re: FWD: AW:  Invoice   5120") == "invoice 5120"
    assert normalise_subject("Re[2]: Invoice 5120") == "invoice 5120"
    assert normalise_subject("Refund please") == "refund please"


def test_html_becomes_readable_text() -> None:
    html = "<p>Hello&nbsp;<b>there</b></p><ul><li>one</li><li>two</li></ul><style>x{}</style>"
    assert html_to_text(html) == "Hello there\n\none\n\ntwo"


def test_channel_settings_come_from_cc_environment_variables() -> None:
    settings = Settings.from_env(
        {
            "CC_PUBLIC_BASE_URL": "https://cc.example.com",
            "CC_SMTP_PORT": "2525",
            "CC_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
            "CC_TWILIO_API_BASE": "http://127.0.0.1:9000",
            "CC_WEBCHAT_MESSAGES_PER_MINUTE": "5",
        }
    )
    assert settings.base_url == "https://cc.example.com"
    assert (settings.smtp_port, settings.trusted_proxies) == (2525, ("10.0.0.0/8", "192.0.2.1"))
    assert (settings.twilio_api_base, settings.webchat_messages_per_minute) == (
        "http://127.0.0.1:9000",
        5,
    )
    assert Settings.from_env({}).smtp_port is None  # no SMTP listener unless asked for
    for bad in ({"CC_TRUSTED_PROXIES": "the proxy"}, {"CC_SMTP_PORT": "70000"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
