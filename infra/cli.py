"""The ``contact-centre`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from infra.config import ConfigError, Settings
from infra.kafka.commands import add_commands as add_worker_commands
from infra.runtime import build

EPILOG = """\
configuration (environment variables):
  CC_DATA_DIR           embedded data directory (default ./var)
  CC_DATABASE_URL       postgresql://... to use PostgreSQL instead of SQLite
  CC_MASTER_KEY         base64 32-byte key wrapping all data keys (required with PostgreSQL;
                        embedded default: generated once into CC_DATA_DIR/master.key)
  CC_HOST, CC_PORT      where serve listens (default 127.0.0.1:8080)
  CC_PUBLIC_BASE_URL    externally visible base URL (behind a proxy)
  CC_MAX_BODY_BYTES     largest accepted request body (default 1048576)
  CC_LOG_LEVEL          DEBUG, INFO (default), WARNING
  CC_PROJECTION_WAIT_MS how long a write waits for read models to show it (default 2000)

scaled mode (with CC_DATABASE_URL; see docs/scaled.md):
  CC_KAFKA_BOOTSTRAP    host:port[,host:port] of Kafka; serve then runs no projections and
                        `worker relay|projections|workflows` carry the events
  CC_KAFKA_TOPIC_PREFIX topic and consumer-group prefix (default contact-centre)
  CC_KAFKA_PARTITIONS   partitions of {prefix}.events when the relay creates it (default 12)
  CC_KAFKA_REPLICATION_FACTOR  its replication factor (default 1)
  CC_KAFKA_SESSION_TIMEOUT_MS  how soon a silent worker's partitions move on (default 10000)
"""


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "data_dir", None):
        settings = replace(settings, data_dir=Path(args.data_dir))
    if getattr(args, "host", None):
        settings = replace(settings, host=args.host)
    if getattr(args, "port", None) is not None:
        settings = replace(settings, port=args.port)
    return settings


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from infra.http.app import create_app
    from infra.server import serve_until_stopped

    settings = _settings(args)
    _configure_logging(settings)
    runtime = build(settings)
    app = create_app(runtime)

    async def announce(base: str) -> None:
        mode = "PostgreSQL" if settings.is_scaled else f"SQLite in {settings.data_dir}"
        if settings.uses_kafka:
            mode += ", projections in Kafka workers"
        print(f"contact-centre serving on {base} ({mode}); Ctrl-C to stop", file=sys.stderr)

    try:
        asyncio.run(serve_until_stopped(app, settings.host, settings.port, after_start=announce))
    finally:
        runtime.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from infra.demo import feed_demo
    from infra.http.app import create_app
    from infra.server import serve_until_stopped

    settings = _settings(args)
    if not args.data_dir and not settings.is_scaled:
        settings = replace(settings, data_dir=settings.data_dir / "demo")
    _configure_logging(settings)
    runtime = build(settings)
    tenant_id, issued = runtime.app.register_tenant("Demo Shop")
    app = create_app(runtime)
    stop = asyncio.Event() if args.exit_after_feeding else None

    async def after_start(base: str) -> None:
        await feed_demo(base, issued.token)
        print(
            json.dumps(
                {
                    "tenant_id": str(tenant_id),
                    "admin_token": issued.token,
                    "base_url": base,
                    "try": [
                        f"curl -s -H 'Authorization: Bearer {issued.token}' "
                        f"{base}/v1/conversations",
                        f"curl -s -H 'Authorization: Bearer {issued.token}' "
                        f"'{base}/v1/conversations?channel=email'",
                    ],
                },
                indent=2,
            ),
            flush=True,
        )
        if stop is not None:
            stop.set()

    try:
        asyncio.run(
            serve_until_stopped(
                app, settings.host, settings.port, after_start=after_start, stop=stop
            )
        )
    finally:
        runtime.close()
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtime = build(settings)
    try:
        tenant_id, issued = runtime.app.register_tenant(args.name, args.region)
    finally:
        runtime.close()
    print(json.dumps({"tenant_id": str(tenant_id), "admin_token": issued.token}))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="contact-centre",
        description="Omnichannel contact-centre backend (event-sourced, privacy built in).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API (embedded SQLite by default)")
    serve.add_argument("--host", help="interface to listen on (default CC_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default CC_PORT or 8080)")
    serve.add_argument("--data-dir", help="embedded data directory (default CC_DATA_DIR or ./var)")
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo", help="serve with a demo tenant fed interactions on all six channel kinds"
    )
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.add_argument("--data-dir", help="data directory (default CC_DATA_DIR/demo)")
    demo.add_argument(
        "--exit-after-feeding", action="store_true", help="stop once the demo data is in"
    )
    demo.set_defaults(handler=cmd_demo)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    create = tenant_commands.add_parser(
        "create", help='create a tenant; prints {"tenant_id": ..., "admin_token": ...}'
    )
    create.add_argument("name")
    create.add_argument("--region", default="eu", help="data region recorded for the tenant")
    create.add_argument("--data-dir")
    create.set_defaults(handler=cmd_tenant_create)

    add_worker_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"contact-centre: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
