"""``contact-centre worker relay|projections|workflows``: the scaled mode's processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from infra.config import ConfigError, Settings
from infra.kafka.client import bootstrap, topic
from infra.runtime import (
    EVENTS_TABLE,
    Runtime,
    all_policies,
    build,
    freeze_startup_heap,
    partitioned_projections,
)

log = logging.getLogger(__name__)

WORKER_HELP = """\
Scaled mode (CC_DATABASE_URL and CC_KAFKA_BOOTSTRAP set): run one relay and any number
of projection and workflow workers; they share the partitions of {prefix}.events through
Kafka consumer groups. Each runs until SIGINT or SIGTERM. See docs/scaled.md.
"""


def add_commands(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="scaled mode: the Kafka relay and workers (needs CC_KAFKA_BOOTSTRAP)",
        description=WORKER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = worker.add_subparsers(dest="worker_kind", required=True, metavar="KIND")
    relay = kinds.add_parser(
        "relay", help="publish the event log to Kafka in order (one active, others stand by)"
    )
    relay.set_defaults(handler=cmd_relay)
    projections = kinds.add_parser(
        "projections", help="run projections from Kafka into the read-model database"
    )
    projections.add_argument(
        "names", nargs="*", metavar="NAME", help="projections to run (default: all)"
    )
    projections.set_defaults(handler=cmd_projections)
    workflows = kinds.add_parser("workflows", help="run workflow policies from Kafka")
    workflows.add_argument("names", nargs="*", metavar="NAME", help="policies (default: all)")
    workflows.set_defaults(handler=cmd_workflows)


def _scaled_settings() -> Settings:
    settings = Settings.from_env()
    bootstrap(settings)  # raises ConfigError without Kafka and PostgreSQL
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return settings


def _until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    freeze_startup_heap()  # a long-lived process, as serve

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(run())


def _chosen(kind: str, wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(
            f"no {kind} named {', '.join(unknown)} (known: {', '.join(available) or 'none'})"
        )
    return list(wanted) or list(available)


def cmd_relay(args: argparse.Namespace) -> int:
    from infra.kafka.relay import Relay

    settings = _scaled_settings()
    runtime = build(settings)
    try:
        channel = str(getattr(runtime.app.recorder, "channel_name", EVENTS_TABLE))
        app = runtime.app
        relay = Relay(settings, app.recorder, app.mapper, runtime.readdb, listen_channel=channel)
        _until_signal(relay.run)
    finally:
        runtime.close()
    return 0


def projection_targets(runtime: Runtime, names: Sequence[str] = ()) -> list[Any]:
    from infra.kafka.targets import ProjectionTarget

    projections = {p.name: p for p in partitioned_projections(runtime.vault)}
    chosen = _chosen("projection", names, list(projections))
    name = topic(runtime.settings)
    return [
        ProjectionTarget(projections[n], runtime.readdb, runtime.app.mapper, name) for n in chosen
    ]


def cmd_projections(args: argparse.Namespace) -> int:
    from infra.kafka.worker import run_workers

    settings = _scaled_settings()
    runtime = build(settings)
    try:
        targets = projection_targets(runtime, args.names)
        log.info("running projections %s", ", ".join(t.name for t in targets))
        _until_signal(lambda stop: run_workers(settings, targets, stop))
    finally:
        runtime.close()
    return 0


def cmd_workflows(args: argparse.Namespace) -> int:
    from infra.kafka.targets import PolicyTarget
    from infra.kafka.worker import run_workers

    settings = _scaled_settings()
    runtime = build(settings)
    try:
        policies = {p.name: p for p in all_policies(runtime)}
        chosen = _chosen("workflow", args.names, list(policies))
        name = topic(settings)
        targets = [PolicyTarget(policies[n], runtime.make_app(), name) for n in chosen]
        if not targets:
            log.info("no workflow policies are registered: idle until stopped")
        _until_signal(lambda stop: run_workers(settings, targets, stop))
    finally:
        runtime.close()
    return 0
