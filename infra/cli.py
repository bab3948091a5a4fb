"""The ``contact-centre`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from infra.config import ConfigError, Settings
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
  CC_SMTP_PORT          port of the inbound SMTP listener (default: not started)
  CC_SMTP_HOST          address it binds (default 127.0.0.1)
  CC_SMTP_MAX_BYTES     largest accepted email (default 10485760)
  CC_TRUSTED_PROXIES    comma-separated CIDRs whose X-Forwarded-For is believed (webchat)
  CC_TWILIO_API_BASE, CC_SLACK_API_BASE, CC_META_GRAPH_BASE
                        provider API base URLs (default: the providers' own)
  CC_PROVIDER_TIMEOUT_S timeout of calls to provider APIs (default 10)
  CC_WEBCHAT_CONNECTS_PER_MINUTE, CC_WEBCHAT_MESSAGES_PER_MINUTE
                        per-IP webchat limits (default 30 and 60)
  CC_WEBHOOK_ALLOWED_NETWORKS
                        comma-separated CIDRs outbound webhooks may reach although
                        private, loopback or link-local (default: none)
  CC_WEBHOOK_CONNECT_TIMEOUT_S, CC_WEBHOOK_READ_TIMEOUT_S
                        timeouts of a webhook attempt (default 5 and 15)
  CC_WEBHOOK_LOG_DAYS   days the webhook delivery log is kept (default 30)
  CC_WEBHOOK_INTERVAL_MS, CC_WEBHOOK_CONCURRENCY
                        how often the dispatcher looks for due deliveries and how many
                        it sends at once (default 200 and 64)
  CC_IMPORT_MAX_LINES   lines of one NDJSON contact import (default 100000)
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


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtime = build(settings)
    try:
        names = [c.name for c in runtime.consumers]
        wanted = names if args.name == "all" else [args.name]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(
                f"contact-centre: no projection {unknown[0]!r}; one of: {', '.join(names)}, all",
                file=sys.stderr,
            )
            return 2
        total = runtime.app.recorder.max_notification_id() or 0
        for name in wanted:
            started = time.monotonic()
            bar = ProgressBar(f"rebuilding {name}", total, enabled=not args.quiet)
            read = runtime.feed.rebuild(runtime.consumer(name), bar.progress)
            bar.done()
            elapsed = time.monotonic() - started
            print(json.dumps({"projection": name, "events": read, "seconds": round(elapsed, 2)}))
    finally:
        runtime.close()
    return 0


class ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, label: str, total: int, *, enabled: bool = True, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(total, 1), width
        self.enabled = enabled and sys.stderr.isatty()

    def show(self, position: int) -> None:
        if not self.enabled:
            return
        share = min(position / self.total, 1.0)
        filled = int(share * self.width)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{share:4.0%} {position}/{self.total}"
        )
        sys.stderr.flush()

    def progress(self, position: int, _read: int) -> None:
        self.show(position)

    def done(self) -> None:
        if self.enabled:
            self.show(self.total)
            sys.stderr.write("\n")


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

    projections = commands.add_parser("projections", help="manage read models")
    projection_commands = projections.add_subparsers(
        dest="projections_command", required=True, metavar="ACTION"
    )
    rebuild = projection_commands.add_parser(
        "rebuild",
        help="empty a read model and rebuild it from the event log (NAME or 'all'); "
        "prints a progress bar and a final count",
    )
    rebuild.add_argument(
        "name", help="inbox, directory, crm, timeline, queues, metrics, webhooks, ..., or all"
    )
    rebuild.add_argument("--data-dir")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(handler=cmd_projections_rebuild)
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
