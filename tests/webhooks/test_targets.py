"""Which targets webhooks may call (SSRF): private, loopback and link-local addresses are
refused unless the operator allowed them, at subscription time and at send time."""

from __future__ import annotations

import pytest

from contact_centre.errors import ValidationError
from infra.webhook_http import AiohttpWebhookTransport, TargetPolicy
from tests.helpers import Api

REFUSED = [
    "https://127.0.0.1/hook",
    "https://127.8.9.10/hook",
    "https://10.0.0.5/hook",
    "https://172.16.3.4/hook",
    "https://192.168.1.1/hook",
    "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
    "https://100.64.0.1/hook",  # carrier-grade NAT
    "https://0.0.0.0/hook",
    "https://[::1]/hook",
    "https://[fe80::1]/hook",
    "https://[fc00::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://localhost/hook",
    "https://api.localhost/hook",
    "http://crm.example.com/hook",  # plain http to the internet
    "ftp://crm.example.com/hook",
    "https://user:secret@crm.example.com/hook",
    "not a url",
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_loopback_link_local_and_plain_http_targets_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        TargetPolicy(()).check_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://crm.example.com/hooks/cc", "https://8.8.8.8/hook", "https://[2001:4860::8888]/"],
)
def test_public_https_targets_are_accepted(url: str) -> None:
    assert TargetPolicy(()).check_url(url) == url


def test_the_operator_can_allow_a_network_and_only_that_network() -> None:
    policy = TargetPolicy(("127.0.0.1/32", "10.20.0.0/16"))
    assert policy.check_url("http://127.0.0.1:8080/hook")
    assert policy.check_url("https://10.20.3.4/hook")
    for url in ("http://127.0.0.2/hook", "https://10.21.0.1/hook", "https://[::1]/hook"):
        with pytest.raises(ValidationError):
            policy.check_url(url)


async def test_a_refused_target_is_refused_by_the_api(api: Api) -> None:
    for url in ("https://10.0.0.5/hook", "https://169.254.169.254/", "http://crm.example.com/"):
        status, body = await api.post("/v1/webhooks", {"url": url, "event_types": ["data.erased"]})
        assert (status, body["error"]) == (422, "invalid"), url
    _, listing = await api.get("/v1/webhooks")
    assert listing["items"] == []


async def test_names_that_resolve_to_refused_addresses_are_refused_at_send_time() -> None:
    transport = AiohttpWebhookTransport(TargetPolicy(()), connect_timeout=1, read_timeout=1)
    try:
        # "localhost" resolves (from /etc/hosts) to a loopback address: refused before any
        # connection is made; so is a literal address
        by_name = await transport.post("https://localhost:9/hook", b"{}", {})
        by_address = await transport.post("http://127.0.0.1:9/hook", b"{}", {})
    finally:
        await transport.close()
    assert (by_name.status, by_name.error) == (None, "target_refused")
    assert (by_address.status, by_address.error) == (None, "target_refused")
