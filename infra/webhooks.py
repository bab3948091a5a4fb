"""Wiring of outbound webhooks: the target policy, the HTTP transport and signer, the
dispatcher and the request-due ticker, built once per process from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contact_centre.clock import SystemClock
from infra.feed import LOG_PARTITION, read_tracking
from infra.leader import AdvisoryLeader
from infra.webhook_http import AiohttpWebhookTransport, StandardWebhooksSigner, TargetPolicy
from projections.webhooks import WebhooksProjection
from workflows.privacy import RequestDueTicker
from workflows.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from infra.runtime import Runtime

DISPATCHER_LOCK_KEY = 0x63632D776562686B  # "cc-webhk"


@dataclass
class WebhookServices:
    policy: TargetPolicy
    dispatcher: WebhookDispatcher
    requests_due: RequestDueTicker
    # with PostgreSQL: the lock that makes this process the one dispatcher (given up on
    # stop, so another process, or this one restarted, takes over)
    leader: AdvisoryLeader | None = None


def _always() -> bool:
    return True


def install_webhooks(runtime: Runtime) -> WebhookServices:
    settings = runtime.settings
    policy = TargetPolicy(settings.webhook_allowed_networks)
    transport = AiohttpWebhookTransport(
        policy,
        connect_timeout=float(settings.webhook_connect_timeout_s),
        read_timeout=float(settings.webhook_read_timeout_s),
        concurrency=settings.webhook_concurrency,
    )
    progress = runtime.feed.progress
    readdb = runtime.readdb

    def shows(position: int) -> bool:
        # this process's feed, else (a dispatcher in a process of its own) the tracking row
        if progress.shows(WebhooksProjection.name, position):
            return True
        with readdb.read() as tx:
            tracked = read_tracking(tx, WebhooksProjection.name, LOG_PARTITION)
        return tracked is not None and tracked >= position

    leader: Callable[[], bool] = _always
    advisory = None
    if settings.database_url:
        # processes sharing PostgreSQL: one dispatches at a time (no delivery sent twice)
        advisory = AdvisoryLeader(settings.database_url, DISPATCHER_LOCK_KEY)
        runtime._closers.append(advisory.close)
        leader = advisory
    dispatcher = WebhookDispatcher(
        runtime.make_app(),
        runtime.readdb.read,
        runtime.vault,
        transport,
        StandardWebhooksSigner(),
        shows=shows,
        wall_clock=SystemClock(),
        interval=settings.webhook_interval_ms / 1000,
        concurrency=settings.webhook_concurrency,
        leader=leader,
    )
    if settings.webhook_dispatcher == "inline":
        runtime.add_ticker(dispatcher)
    requests_due = RequestDueTicker(runtime.make_app(), runtime.readdb.read)
    runtime.add_ticker(requests_due)
    runtime._closers.append(dispatcher.close)

    def wake(_recorded: Any) -> None:
        # New events may owe deliveries: look now rather than at the next interval (the
        # writer's listeners run after the feed has applied them to the read models).
        if runtime.tickers is not None:
            runtime.tickers.wake(WebhookDispatcher.name)

    def wake_when_applied(name: str, _position: int) -> None:
        if name == WebhooksProjection.name:  # the projector process applied the outbox
            wake(None)

    if runtime.projections_elsewhere:
        runtime.feed.progress.listeners.append(wake_when_applied)
    else:
        runtime.writer.listeners.append(wake)
    return WebhookServices(
        policy=policy, dispatcher=dispatcher, requests_due=requests_due, leader=advisory
    )
