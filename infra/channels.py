"""Wiring of the channel adapters: settings lookup, senders, the delivery workflow and the
webchat hub, built once per process from :class:`~infra.config.Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from channels.base import ChannelOptions
from channels.email import EmailSender
from channels.meta import MetaSender
from channels.slack import SlackAlerter, SlackSender
from channels.twilio import TwilioCallConnector, TwilioSender
from channels.webchat import RateLimiter, WebchatHub, WebchatSender, parse_networks
from infra.channel_config import ConfigStore
from workflows.delivery import DeliveryPolicy, DeliveryTicker, Sender
from workflows.sla import SlaAlerts
from workflows.voice import VoiceConnect

if TYPE_CHECKING:
    from infra.runtime import Runtime


@dataclass
class ChannelServices:
    configs: ConfigStore
    options: ChannelOptions
    hub: WebchatHub
    delivery: DeliveryTicker
    trusted_proxies: list[IPv4Network | IPv6Network]
    connect_limiter: RateLimiter
    message_limiter: RateLimiter


def install_channels(runtime: Runtime) -> ChannelServices:
    settings = runtime.settings
    configs = ConfigStore(runtime.readdb, runtime.vault)
    options = ChannelOptions(
        public_base_url=settings.base_url,
        twilio_api_base=settings.twilio_api_base,
        slack_api_base=settings.slack_api_base,
        meta_graph_base=settings.meta_graph_base,
        http_timeout=float(settings.provider_timeout_s),
    )
    hub = WebchatHub()
    senders: dict[str, Sender] = {
        "twilio": TwilioSender(configs, options),
        "slack": SlackSender(configs, options),
        "meta": MetaSender(configs, options),
        "smtp": EmailSender(configs, timeout=float(settings.provider_timeout_s) * 3),
        "webchat": WebchatSender(hub, runtime.clock.now),
    }
    runtime.add_policy(DeliveryPolicy())
    runtime.add_policy(SlaAlerts(SlackAlerter(configs, options), settings.base_url))
    runtime.add_policy(VoiceConnect({"twilio": TwilioCallConnector(configs, options)}))
    ticker = DeliveryTicker(runtime.make_app(), runtime.readdb.read, senders)
    runtime.add_ticker(ticker)
    return ChannelServices(
        configs=configs,
        options=options,
        hub=hub,
        delivery=ticker,
        trusted_proxies=list(parse_networks(settings.trusted_proxies)),
        connect_limiter=RateLimiter(settings.webchat_connects_per_minute / 60, 10),
        message_limiter=RateLimiter(settings.webchat_messages_per_minute / 60, 20),
    )
