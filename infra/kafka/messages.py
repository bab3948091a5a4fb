"""The message shape on ``{prefix}.events`` (version 1) and how events are keyed.

One Kafka record per stored event, carrying it exactly as the event store holds it:

* **key**: ``"<tenant id>/<aggregate id>"`` (ASCII). Every tenant event carries its
  ``tenant_id``; a ``Tenant`` aggregate (or any aggregate of no tenant) is its own tenant.
  All events of one aggregate therefore land in one partition, in log order.
* **value**: the stored event's ``state`` bytes, unchanged. Personal fields in it are
  already sealed under their data scope's key, so nothing personal is on Kafka in clear,
  and crypto-shredding a scope makes its events on Kafka unreadable too.
* **headers** (all ASCII):

  ============================  ==========================================================
  ``cc-schema``                 ``1``: this shape; a consumer refuses any other
  ``cc-notification-id``        the event's notification id (its position in the log)
  ``cc-topic``                  the event class's topic, as stored
  ``cc-originator-id``          the aggregate id
  ``cc-originator-version``     the aggregate version
  ``cc-tenant-id``              the tenant id (also the first half of the key)
  ============================  ==========================================================

Consumers rebuild the stored event (a :class:`~eventsourcing.persistence.Notification`)
from the headers and value and decode it with the application's mapper, exactly as the
embedded feed does from the notification log. The notification id is what projections
see as ``position`` and what consumers deduplicate on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from eventsourcing.persistence import Notification

SCHEMA_VERSION = b"1"

H_SCHEMA = "cc-schema"
H_NOTIFICATION_ID = "cc-notification-id"
H_TOPIC = "cc-topic"
H_ORIGINATOR_ID = "cc-originator-id"
H_ORIGINATOR_VERSION = "cc-originator-version"
H_TENANT_ID = "cc-tenant-id"

Headers = list[tuple[str, bytes]]


class MessageFormatError(ValueError):
    """A record on the events topic is not a version-1 event message."""


def events_topic(prefix: str) -> str:
    return f"{prefix}.events"


def tenant_of(event: Any) -> UUID:
    """The tenant an event belongs to: its ``tenant_id``, or its aggregate for a tenant's
    own events (and for any aggregate that belongs to no tenant)."""
    tenant = getattr(event, "tenant_id", None)
    return tenant if isinstance(tenant, UUID) else UUID(str(event.originator_id))


def event_key(tenant_id: UUID, originator_id: UUID) -> bytes:
    return f"{tenant_id}/{originator_id}".encode("ascii")


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key``: the Java client's default (murmur2), which aiokafka's
    default partitioner also uses, so any Kafka client would agree."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    key: bytes
    value: bytes
    headers: Headers
    tenant_id: UUID


def to_message(notification: Notification, event: Any) -> OutgoingMessage:
    """The record for one stored event (``event`` is its decoded form, for the tenant)."""
    tenant = tenant_of(event)
    originator = UUID(str(notification.originator_id))
    headers: Headers = [
        (H_SCHEMA, SCHEMA_VERSION),
        (H_NOTIFICATION_ID, str(notification.id).encode("ascii")),
        (H_TOPIC, notification.topic.encode("ascii")),
        (H_ORIGINATOR_ID, str(originator).encode("ascii")),
        (H_ORIGINATOR_VERSION, str(notification.originator_version).encode("ascii")),
        (H_TENANT_ID, str(tenant).encode("ascii")),
    ]
    return OutgoingMessage(
        key=event_key(tenant, originator),
        value=bytes(notification.state),
        headers=headers,
        tenant_id=tenant,
    )


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One event as a consumer received it: where it sits in Kafka and in the log."""

    partition: int
    offset: int
    notification: Notification

    @property
    def notification_id(self) -> int:
        return self.notification.id


def from_record(
    partition: int, offset: int, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> EventMessage:
    found = dict(headers)
    if found.get(H_SCHEMA) != SCHEMA_VERSION:
        raise MessageFormatError(
            f"record at partition {partition} offset {offset} has schema "
            f"{found.get(H_SCHEMA)!r}, expected {SCHEMA_VERSION!r}"
        )
    try:
        notification = Notification(
            id=int(found[H_NOTIFICATION_ID]),
            originator_id=UUID(found[H_ORIGINATOR_ID].decode("ascii")),
            originator_version=int(found[H_ORIGINATOR_VERSION]),
            topic=found[H_TOPIC].decode("ascii"),
            state=value or b"",
        )
    except (KeyError, ValueError) as error:
        raise MessageFormatError(
            f"record at partition {partition} offset {offset} lacks a valid {error}"
        ) from None
    return EventMessage(partition, offset, notification)
