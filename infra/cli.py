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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from contact_centre.clock import Clock, ManualClock
from contact_centre.compliance import HoldTarget
from contact_centre.errors import DomainError
from infra.config import ConfigError, Settings
from infra.kafka.commands import add_commands as add_worker_commands
from infra.runtime import build, freeze_startup_heap
from projections import retention as ledger

if TYPE_CHECKING:
    from infra.runtime import Runtime
    from infra.supervise import SupervisedChild
from projections.base import from_micros

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
  CC_PROJECTION_WAIT_MS how long a write waits for read models to show it (default 2000)
  CC_WRITER_BATCH, CC_WRITER_QUEUE
                        commands per write transaction (256), how many may wait (20000)
  CC_RETENTION_INTERVAL_SECONDS
                        how often serve runs the retention sweep (default 3600; 0: never)
  CC_RESERVE_CACHE_MIB  embedded serve: MiB of memory faulted in at start for SQLite's
                        page caches, so first requests do not pay for it (default 96; 0: none)
  CC_WEBHOOK_ALLOWED_NETWORKS
                        comma-separated CIDRs outbound webhooks may reach although
                        private, loopback or link-local (default: none)
  CC_WEBHOOK_CONNECT_TIMEOUT_S, CC_WEBHOOK_READ_TIMEOUT_S
                        timeouts of a webhook attempt (default 5 and 15)
  CC_WEBHOOK_LOG_DAYS   days the webhook delivery log is kept (default 30)
  CC_WEBHOOK_INTERVAL_MS, CC_WEBHOOK_CONCURRENCY
                        how often the dispatcher looks for due deliveries and how many
                        it sends at once (default 200 and 64)
  CC_WEBHOOK_DISPATCHER where serve sends webhooks: process (default: a child process,
                        `contact-centre webhooks dispatch`), inline (a thread) or off
  CC_IMPORT_MAX_LINES   lines of one NDJSON contact import (default 100000)
  CC_PROJECTIONS        where serve applies events to the read models: process
                        (default: a child process, `contact-centre projections follow`)
                        or inline (threads of serve); with Kafka: the workers

scaled mode (with CC_DATABASE_URL; see docs/scaled.md):
  CC_KAFKA_BOOTSTRAP    host:port[,host:port] of Kafka; serve then runs no projections and
                        `worker relay|projections|workflows` carry the events
  CC_KAFKA_TOPIC_PREFIX topic and consumer-group prefix (default contact-centre)
  CC_KAFKA_PARTITIONS   partitions of {prefix}.events when the relay creates it (default 12)
  CC_KAFKA_REPLICATION_FACTOR  its replication factor (default 1)
  CC_KAFKA_SESSION_TIMEOUT_MS  how soon a silent worker's partitions move on (default 10000)
"""


def _settings(args: argparse.Namespace, *, serving: bool = False) -> Settings:
    settings = Settings.from_env()
    if not serving:
        # a command that runs and exits: not worth faulting its caches in first, and it
        # applies its own writes to the read models (the settle before it prints)
        settings = replace(settings, reserve_cache_mib=0, projections="inline")
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

    settings = _settings(args, serving=True)
    _configure_logging(settings)
    runtime = build(settings)
    app = create_app(runtime)
    freeze_startup_heap()

    async def announce(base: str) -> None:
        mode = "PostgreSQL" if settings.is_scaled else f"SQLite in {settings.data_dir}"
        if settings.uses_kafka:
            mode += ", projections in Kafka workers"
        elif runtime.projections_elsewhere:
            mode += ", read models in a projector process"
        print(f"contact-centre serving on {base} ({mode}); Ctrl-C to stop", file=sys.stderr)

    children = _start_children(runtime)
    try:
        asyncio.run(serve_until_stopped(app, settings.host, settings.port, after_start=announce))
    finally:
        for child in children:
            child.stop()
        runtime.close()
    return 0


def _start_children(runtime: Runtime) -> list[SupervisedChild]:
    """The processes serve keeps beside it: the read models' projector
    (CC_PROJECTIONS=process, the default without Kafka) and the webhook dispatcher
    (CC_WEBHOOK_DISPATCHER=process, the default)."""
    from infra.dispatch_process import DispatcherProcess
    from infra.projector_process import ProjectorProcess

    children: list[SupervisedChild] = []
    if runtime.projections_elsewhere:
        children.append(ProjectorProcess(runtime))
    if runtime.settings.webhook_dispatcher == "process":
        children.append(DispatcherProcess(runtime.settings.data_dir))
    for child in children:
        child.start()
    return children


def cmd_projections_follow(args: argparse.Namespace) -> int:
    from infra.projector_process import run_projector

    settings = _settings(args)
    _configure_logging(settings)
    run_projector(settings, args.parent, args.poll_seconds)
    return 0


def cmd_webhooks_dispatch(args: argparse.Namespace) -> int:
    from infra.dispatch_process import run_dispatcher

    settings = _settings(args)
    _configure_logging(settings)
    run_dispatcher(settings, args.parent)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from infra.demo import feed_demo
    from infra.http.app import create_app
    from infra.server import serve_until_stopped

    settings = _settings(args, serving=True)
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

    children = _start_children(runtime)
    try:
        asyncio.run(
            serve_until_stopped(
                app, settings.host, settings.port, after_start=after_start, stop=stop
            )
        )
    finally:
        for child in children:
            child.stop()
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


def _tenant_arg(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise ConfigError(f"{raw!r} is not a tenant id") from None


def _clock(args: argparse.Namespace) -> Clock | None:
    """``--at``: run as if it were that moment (dry runs ahead of time, tests)."""
    if not getattr(args, "at", None):
        return None
    text = args.at.replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--at {args.at!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise ConfigError("--at needs a time zone (e.g. Z)")
    return ManualClock(moment)


def cmd_tenant_lifecycle(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtime = build(settings, clock=_clock(args))
    tenant_id = _tenant_arg(args.tenant_id)
    try:
        app = runtime.app
        if args.tenant_command == "terminate":
            app.run(lambda uow: app.terminate_tenant_in(uow, tenant_id, args.grace_days))
        elif args.tenant_command == "reactivate":
            app.run(lambda uow: app.reactivate_tenant_in(uow, tenant_id))
        runtime.settle()
        with runtime.readdb.read() as tx:
            state = ledger.tenant_state(tx, str(tenant_id))
    except DomainError as error:
        print(f"contact-centre: {error.detail}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    if state is None:
        print(f"contact-centre: no tenant {tenant_id}", file=sys.stderr)
        return 1
    if args.tenant_command == "certificate":
        if state["certificate"] is None:
            print("contact-centre: the tenant has not been purged", file=sys.stderr)
            return 1
        print(state["certificate"])
        return 0
    print(
        json.dumps(
            {
                "tenant_id": str(tenant_id),
                "status": state["status"],
                "purge_after": _iso_micros(state["purge_after"]),
            }
        )
    )
    return 0


def _iso_micros(value: int | None) -> str | None:
    return None if value is None else from_micros(value).isoformat()


def cmd_retention_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtime = build(settings, clock=_clock(args))
    try:
        runtime.settle()
        tenant = _tenant_arg(args.tenant) if args.tenant else None
        now = runtime.clock.now()
        bar = ProgressBar("erasing", 1, enabled=not args.quiet and not args.dry_run)
        done = [0]

        def progress(count: int) -> None:
            done[0] += count
            bar.total = max(bar.total, done[0])
            bar.show(done[0])

        report = runtime.privacy.sweep(now, tenant=tenant, dry_run=args.dry_run, progress=progress)
        if not args.dry_run:
            report.keys_destroyed += runtime.privacy.finish_interrupted(tenant)
        bar.done()
        runtime.settle()
    finally:
        runtime.close()
    summary = report.summary()
    if args.dry_run:
        summary["would"] = [vars(action) for action in report.actions]
    print(json.dumps(summary, indent=2))
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    """Operator access to legal holds, also for a terminated tenant (whose own tokens no
    longer work): a hold postpones the purge until it is released."""
    settings = _settings(args)
    runtime = build(settings, clock=_clock(args))
    tenant_id = _tenant_arg(args.tenant_id)
    app = runtime.app
    actor = f"operator:{args.by}"
    try:
        result: dict[str, Any] = {}
        if args.hold_command == "place":
            target = HoldTarget(args.target_kind)
            target_id = _uuid_arg(args.target_id, "target id")
            hold_id, _ = app.run(
                lambda uow: app.place_hold_in(uow, tenant_id, target, target_id, args.reason, actor)
            )
            result = {"hold_id": str(hold_id), "target_kind": target.value}
            result["target_id"] = str(target_id)
        elif args.hold_command == "release":
            hold_id = _uuid_arg(args.hold_id, "hold id")
            app.run(lambda uow: app.release_hold_in(uow, tenant_id, hold_id, actor))
            result = {"hold_id": str(hold_id), "released": True}
        runtime.settle()
        if args.hold_command == "list":
            with runtime.readdb.read() as tx:
                rows = ledger.holds(tx, str(tenant_id))
            result = {
                "items": [
                    {
                        **row,
                        "placed_at": _iso_micros(row["placed_at"]),
                        "released_at": _iso_micros(row["released_at"]),
                    }
                    for row in rows
                ]
            }
    except DomainError as error:
        print(f"contact-centre: {error.detail}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    print(json.dumps(result))
    return 0


def _uuid_arg(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise SystemExit(f"contact-centre: {what} must be a UUID, not {value!r}") from None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    runtime = build(settings)
    try:
        results = runtime.audit.verify(_tenant_arg(args.tenant) if args.tenant else None)
    finally:
        runtime.close()
    broken = [r for r in results if not r.ok]
    print(
        json.dumps(
            {
                "ok": not broken,
                "tenants": len(results),
                "entries": sum(r.entries for r in results),
                "broken": [{"tenant_id": r.tenant_id, "at_seq": r.broken_at} for r in broken],
            }
        )
    )
    return 1 if broken else 0


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
        # all: one pass over the log feeds every projection (each event read and decoded
        # once); one line per projection all the same, with the seconds of the pass
        label = "all projections" if args.name == "all" else args.name
        started = time.monotonic()
        bar = ProgressBar(f"rebuilding {label}", total, enabled=not args.quiet)
        consumers = [runtime.consumer(name) for name in wanted]
        read = runtime.feed.rebuild_together(consumers, bar.progress)
        bar.done()
        elapsed = time.monotonic() - started
        for name in wanted:
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
    terminate = tenant_commands.add_parser(
        "terminate",
        help="terminate a tenant: service stops; its data is purged when the grace ends",
    )
    terminate.add_argument("tenant_id")
    terminate.add_argument(
        "--grace-days", type=int, default=0, help="0-30 days to reactivate before the purge"
    )
    reactivate = tenant_commands.add_parser("reactivate", help="reactivate within the grace")
    reactivate.add_argument("tenant_id")
    certificate = tenant_commands.add_parser(
        "certificate", help="print a purged tenant's deletion certificate (no personal data)"
    )
    certificate.add_argument("tenant_id")
    for sub in (terminate, reactivate, certificate):
        sub.add_argument("--data-dir")
        sub.set_defaults(handler=cmd_tenant_lifecycle)

    hold = commands.add_parser(
        "hold", help="legal holds, as the operator (also on a terminated tenant)"
    )
    hold_commands = hold.add_subparsers(dest="hold_command", required=True, metavar="ACTION")
    place = hold_commands.add_parser(
        "place", help='place a hold; prints {"hold_id", "target_kind", "target_id"}'
    )
    place.add_argument("tenant_id")
    place.add_argument("target_kind", choices=[t.value for t in HoldTarget])
    place.add_argument("target_id")
    place.add_argument("--reason", required=True, help="why (recorded with the hold)")
    release = hold_commands.add_parser("release", help="release a hold")
    release.add_argument("tenant_id")
    release.add_argument("hold_id")
    listing = hold_commands.add_parser("list", help="list a tenant's holds as JSON")
    listing.add_argument("tenant_id")
    for sub in (place, release, listing):
        sub.add_argument("--by", default="cli", help="who acts (recorded as operator:BY)")
        sub.add_argument("--data-dir")
        sub.set_defaults(handler=cmd_hold)

    retention = commands.add_parser("retention", help="retention of personal data")
    retention_commands = retention.add_subparsers(
        dest="retention_command", required=True, metavar="ACTION"
    )
    run = retention_commands.add_parser(
        "run",
        help="expire what is due under each tenant's retention policy (held data is kept); "
        "prints a summary",
    )
    run.add_argument("--dry-run", action="store_true", help="list what would go and why")
    run.add_argument("--tenant", help="only this tenant id")
    run.add_argument("--at", help="run as of this ISO 8601 moment (default: now)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--data-dir")
    run.set_defaults(handler=cmd_retention_run)

    audit = commands.add_parser("audit", help="the audit log of personal-data reads")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_commands.add_parser(
        "verify", help="recompute every tenant's hash chain; exit 1 if any entry was altered"
    )
    verify.add_argument("--tenant", help="only this tenant id")
    verify.add_argument("--data-dir")
    verify.set_defaults(handler=cmd_audit_verify)

    projections = commands.add_parser("projections", help="manage read models")
    projection_commands = projections.add_subparsers(
        dest="projections_command", required=True, metavar="ACTION"
    )
    rebuild = projection_commands.add_parser(
        "rebuild",
        help="empty a read model and rebuild it from the event log (NAME, or 'all': every "
        "one in a single pass over the log); prints a progress bar and a final count",
    )
    rebuild.add_argument(
        "name", help="inbox, directory, crm, timeline, queues, metrics, webhooks, ..., or all"
    )
    rebuild.add_argument("--data-dir")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(handler=cmd_projections_rebuild)
    follow = _child_command(
        projection_commands,
        "follow",
        "apply the event log to the read models as it grows, reporting progress on "
        "stdout (serve starts this itself unless CC_PROJECTIONS is inline)",
        cmd_projections_follow,
    )
    follow.add_argument(
        "--poll-seconds",
        type=float,
        default=0.5,
        help="read the log at least this often (default 0.5); beside serve (--parent) "
        "it is also woken through stdin after every write, and stops when stdin closes",
    )

    webhooks = commands.add_parser("webhooks", help="outbound webhooks")
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    _child_command(
        webhook_commands,
        "dispatch",
        "send due webhook deliveries (serve starts this itself unless "
        "CC_WEBHOOK_DISPATCHER is inline or off)",
        cmd_webhooks_dispatch,
    )
    add_worker_commands(commands)
    return root


def _child_command(commands: Any, name: str, text: str, handler: Any) -> Any:
    """A command serve also runs as a child of its own (``--parent``: serve's pid)."""
    command = commands.add_parser(name, help=text)
    command.add_argument("--data-dir", help="embedded data directory (default CC_DATA_DIR)")
    command.add_argument(
        "--parent", type=int, help="stop when the process with this pid is gone (serve's)"
    )
    command.set_defaults(handler=handler)
    return command


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"contact-centre: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
