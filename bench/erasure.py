"""Erasure benchmark: how long one subject's erasure takes as the event log grows, and the
retention sweep's rate.

For each store size (events in the log) a fresh store is filled with background traffic
(email, SMS and webchat from many senders, in batches as the HTTP writer sends them), with
the benchmark's subjects spread through it: each subject has 50 conversations (one per
email thread). Then each subject is erased as an erasure request does it (the privacy
service: erasure events, blind-index removal, key destruction with the vault's storage
hygiene, read models blanked inline) and timed. Target: p99 < 100 ms at every size (the
work is per subject, so it must not grow with the log).

Last, the clock moves seven months ahead and a retention sweep erases the chat-visitor
data that fell due; its rate is scopes erased per second.

    ./dev bench erasure [--backend sqlite|postgres|both] [--sizes 10000,1000000]
                        [--subjects 20] [--conversations 50]
"""

from __future__ import annotations

import argparse
import base64
import random
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from common import backend, percentile

from contact_centre.application import Receive
from contact_centre.clock import ManualClock
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.config import Settings
from infra.runtime import Runtime, build

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BATCH = 500


def _interaction(
    tenant: UUID,
    channel: Channel,
    kind: IdentityKind,
    address: str,
    thread: str | None,
    at: datetime,
) -> Interaction:
    return Interaction(
        tenant_id=tenant,
        channel=channel,
        direction=Direction.INBOUND,
        provider="bench",
        provider_message_id=str(uuid4()),
        sender=Identity(kind, address, "Bench Sender"),
        body="Hello, I have a question about my order and would like a call back",
        occurred_at=at,
        thread_key=thread,
    )


def fill(
    rt: Runtime, tenant: UUID, events: int, subjects: int, conversations: int, clock: ManualClock
) -> list[UUID]:
    """Background traffic up to ``events`` events, the subjects' conversations spread
    through it; returns the subjects' contact ids."""
    app = rt.app
    rng = random.Random(7)
    senders = max(100, events // 10)
    # the subjects' messages, shuffled into the stream
    pending = [(s, c) for s in range(subjects) for c in range(conversations)]
    rng.shuffle(pending)
    contacts: dict[int, UUID] = {}
    started = time.perf_counter()
    last_report = started
    while True:
        written = app.recorder.max_notification_id() or 0
        if written >= events and not pending:
            break
        batch = []
        for _ in range(BATCH):
            clock.advance(timedelta(milliseconds=50))
            at = clock.now()
            roll = rng.random()
            remaining = max(1.0, (events - written) / 1.6)  # messages still to come, roughly
            if pending and (written >= events or rng.random() < len(pending) / remaining):
                s, c = pending.pop()
                item = _interaction(
                    tenant,
                    Channel.EMAIL,
                    IdentityKind.EMAIL,
                    f"subject{s}@bench.example",
                    f"s{s}-t{c}",
                    at,
                )
                batch.append((s, Receive(app, item)))
            elif written < events:
                if roll < 0.03:  # a new webchat visitor: chat-visitor data, due in 6 months
                    item = _interaction(
                        tenant,
                        Channel.WEBCHAT,
                        IdentityKind.VISITOR,
                        f"v-{uuid4().hex[:12]}",
                        None,
                        at,
                    )
                elif roll < 0.5:
                    n = rng.randrange(senders)
                    item = _interaction(
                        tenant,
                        Channel.EMAIL,
                        IdentityKind.EMAIL,
                        f"user{n}@bench.example",
                        f"t{n}",
                        at,
                    )
                else:
                    n = rng.randrange(senders)
                    item = _interaction(
                        tenant,
                        Channel.SMS,
                        IdentityKind.PHONE,
                        f"+1202555{n % 10_000:04d}",
                        None,
                        at,
                    )
                batch.append((None, Receive(app, item)))
        if not batch:
            continue
        outcomes = app.run_batch([command for _, command in batch])
        for (s, _), outcome in zip(batch, outcomes, strict=True):
            if outcome.error is not None:
                raise outcome.error
            if s is not None:
                contacts[s] = outcome.result.contact_id
        now = time.perf_counter()
        if now - last_report > 10:
            last_report = now
            written = app.recorder.max_notification_id() or 0
            print(f"  filled {written:,} events ({written / (now - started):,.0f}/s)", flush=True)
    rt.catch_up()
    return [contacts[s] for s in range(subjects)]


def measure(name: str, size: int, subjects: int, conversations: int) -> dict[str, float]:
    with backend(name) as b:
        clock = ManualClock(T0)
        settings = Settings(
            data_dir=b.data_dir,
            database_url=b.database_url,
            master_key=base64.b64decode(b.env["CC_MASTER_KEY"]) if b.database_url else None,
            retention_interval_seconds=0,
        )
        rt = build(settings, clock=clock)
        try:
            tenant, _ = rt.app.register_tenant("Bench")
            began = time.perf_counter()
            ids = fill(rt, tenant, size, subjects, conversations, clock)
            total = rt.app.recorder.max_notification_id() or 0
            fill_s = time.perf_counter() - began
            print(f"  {name}: {total:,} events in {fill_s:,.0f} s; erasing {len(ids)} subjects")
            timings = []
            for contact_id in ids:
                clock.advance(timedelta(seconds=1))
                t = time.perf_counter()
                outcome = rt.privacy.erase_contact(tenant, contact_id, "request:erasure")
                timings.append((time.perf_counter() - t) * 1000)
                erased = sum(1 for s in outcome.subjects if s["status"] == "erased")
                assert erased == conversations + 1, outcome.subjects
            clock.advance(timedelta(days=31 * 7))
            t = time.perf_counter()
            report = rt.privacy.sweep(clock.now())
            sweep_s = time.perf_counter() - t
            scopes = sum(a.count for a in report.actions if a.action == "erase")
        finally:
            rt.close()
    return {
        "events": total,
        "p50": percentile(timings, 50),
        "p99": percentile(timings, 99),
        "max": max(timings),
        "sweep_scopes": scopes,
        "sweep_rate": scopes / sweep_s if sweep_s else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument(
        "--sizes", default="10000,1000000", help="events in the log, comma-separated"
    )
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=50)
    args = parser.parse_args()
    names = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for name in names:
        for size in sizes:
            print(f"{name}, {size:,} events:", flush=True)
            rows.append((name, measure(name, size, args.subjects, args.conversations)))
    print()
    print(
        f"erasure of one subject with {args.conversations} conversations"
        f" ({args.subjects} subjects):"
    )
    print(
        f"{'backend':<10}{'events':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'sweep scopes':>14}{'scopes/s':>10}"
    )
    for name, r in rows:
        print(
            f"{name:<10}{r['events']:>12,}{r['p50']:>10.1f}{r['p99']:>10.1f}{r['max']:>10.1f}"
            f"{r['sweep_scopes']:>14,}{r['sweep_rate']:>10,.0f}"
        )
    print("target: erasure p99 < 100 ms at every size")


if __name__ == "__main__":
    main()
