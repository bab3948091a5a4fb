"""The OpenAPI 3.1 description of every route, served at ``GET /v1/openapi.json``.

One :class:`Op` per route (method and path exactly as registered), with its roles, query
parameters, body and answers. The errors every route can give follow from what it takes
(a token: 401/403; a path id: 404; a JSON body: 400/413/415/422; a write: 503), so each
operation lists only what is particular to it. ``tests/api/test_openapi.py`` fails when a
route has no entry here or an entry no route, and runs schemathesis against the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contact_centre.routing import MAX_RULES
from contact_centre.webhooks import EVENT_TYPES, PERSONAL_FIELDS

Schema = dict[str, Any]

# -- schema helpers ------------------------------------------------------------------------
STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
UUID_: Schema = {"type": "string", "format": "uuid"}
TIME: Schema = {"type": "string", "format": "date-time"}
ANY_OBJECT: Schema = {"type": "object"}


def null(schema: Schema) -> Schema:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def arr(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def text(max_length: int, min_length: int = 0) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    return schema


def obj(
    props: dict[str, Schema],
    *,
    optional: Iterable[str] = (),
    closed: bool = False,
    description: str | None = None,
) -> Schema:
    """An object whose properties are all required but ``optional``; ``closed`` objects
    (request bodies the server checks for unknown fields) allow nothing else."""
    optional = set(optional)
    schema: Schema = {"type": "object", "properties": props}
    required = [name for name in props if name not in optional]
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def integer(minimum: int, maximum: int) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def page(item: str) -> Schema:
    return obj({"items": arr(ref(item)), "next": null(STR)})


def items(item: str) -> Schema:
    return obj({"items": arr(ref(item))})


CHANNEL = enum("voice", "sms", "whatsapp", "email", "webchat", "social")
STATUS = enum("open", "pending", "resolved", "closed")
ROLE = enum("admin", "supervisor", "agent", "integration")
PROVIDER = enum("twilio", "slack", "meta", "email", "webchat")
TAGS = arr(text(64))
ATTRIBUTE_VALUE: Schema = {"type": ["string", "integer", "boolean", "null"]}
IDENTITY = obj({"kind": enum("phone", "email", "visitor", "handle"), "address": null(STR)})
ERASED = {"erased": {"type": "boolean", "const": True}}

WEEKDAY_SPANS: Schema = arr(arr(text(5, 5), minItems=2, maxItems=2), maxItems=6)
BUSINESS_HOURS = obj(
    {
        "timezone": text(64, 1),
        "weekly": obj(
            {day: WEEKDAY_SPANS for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
            optional=("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
            closed=True,
        ),
    },
    closed=True,
    description='Local opening times, e.g. {"timezone": "Europe/Oslo", "weekly": '
    '{"mon": [["08:00", "16:00"]]}}; days left out are closed.',
)
OVERFLOW: Schema = {
    "oneOf": [
        obj({"target": {"const": "queue"}, "queue_id": UUID_}, closed=True),
        obj({"target": enum("voicemail", "callback")}, closed=True),
    ]
}
QUEUE_SETTING_NAMES = (
    "required_skills",
    "priority",
    "sl_threshold_seconds",
    "sl_target_percent",
    "business_hours",
    "max_wait_seconds",
    "overflow",
    "offer_timeout_seconds",
)
CAPACITY: Schema = {"type": "object", "additionalProperties": INT}
CAPACITY_BODY: Schema = {
    "type": "object",
    "propertyNames": CHANNEL,
    "additionalProperties": integer(0, 50),
}
SLA_BREACH = obj(
    {
        "conversation_id": UUID_,
        "queue_id": null(UUID_),
        "kind": STR,
        "threshold_seconds": INT,
        "waited_seconds": INT,
        "at": TIME,
    }
)
RULE_MATCH = obj(
    {
        "channels": arr(CHANNEL, minItems=1, maxItems=100),
        "recipients": arr(text(200, 1), minItems=1, maxItems=100),
        "keywords": arr(text(200, 1), minItems=1, maxItems=100),
        "attributes": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": ["string", "integer", "boolean"]},
        },
    },
    optional=("channels", "recipients", "keywords", "attributes"),
    closed=True,
)

SCHEMAS: dict[str, Schema] = {
    "Problem": obj(
        {"error": STR, "detail": STR},
        description='Every error: {"error": code, "detail": text}; a few add fields '
        "(e.g. merged_into).",
    ),
    # -- conversations --
    "ContactRef": obj(
        {"id": UUID_, "display_name": null(STR), "identities": arr(IDENTITY), **ERASED},
        optional=("identities", "erased"),
    ),
    "LastMessage": obj(
        {"preview": null(STR), "direction": enum("inbound", "outbound"), "occurred_at": null(TIME)}
        | ERASED,
        optional=("erased",),
    ),
    "Conversation": obj(
        {
            "id": UUID_,
            "channel": CHANNEL,
            "status": STATUS,
            "assignee_id": null(UUID_),
            "contact": ref("ContactRef"),
            "last_message": null(ref("LastMessage")),
            "unread": INT,
            "message_count": INT,
            "opened_at": TIME,
            "updated_at": TIME,
            "queue_id": null(UUID_),
            "priority": INT,
            "waiting_since": null(TIME),
        }
    ),
    "DeliveryState": obj(
        {
            "status": enum("pending", "sending", "sent", "delivered", "read", "failed"),
            "provider": STR,
            "provider_status": null(STR),
            "error_code": null(STR),
            "attempts": INT,
            "updated_at": TIME,
        }
    ),
    "Message": obj(
        {
            "id": UUID_,
            "direction": enum("inbound", "outbound"),
            "body": null(STR),
            "occurred_at": TIME,
            "recorded_at": TIME,
            "provider": STR,
            "from": obj({"kind": STR, "address": null(STR), "display_name": null(STR)}),
            "subject": STR,
            "attachments": arr(
                obj(
                    {
                        "name": null(STR),
                        "content_type": STR,
                        "size": null(INT),
                        "sha256": null(STR),
                        "url": null(STR),
                    }
                )
            ),
            "author": STR,
            "delivery": null(ref("DeliveryState")),
            **ERASED,
        },
        optional=("provider", "from", "subject", "attachments", "author", "delivery", "erased"),
    ),
    "Note": obj(
        {"id": UUID_, "author": STR, "body": null(STR), "created_at": TIME, **ERASED},
        optional=("erased",),
    ),
    "Call": obj(
        {
            "message_id": STR,
            "status": null(STR),
            "duration_seconds": null(INT),
            "events": arr(obj({"status": STR, "duration_seconds": null(INT), "at": TIME})),
            "recording": null(
                obj({"sid": null(STR), "url": null(STR), "duration_seconds": null(INT)})
            ),
            "transcript": null(STR),
        }
    ),
    "ConversationDetail": {
        "allOf": [
            ref("Conversation"),
            obj(
                {
                    "messages": arr(ref("Message")),
                    "notes": arr(ref("Note")),
                    "calls": arr(ref("Call")),
                    "visitor_typing": BOOL,
                    "visitor_network": null(
                        obj(
                            {
                                "ip": null(STR),
                                "visitor_id": null(STR),
                                "captured_at": TIME,
                                **ERASED,
                            },
                            optional=("erased",),
                        )
                    ),
                },
                optional=("calls", "visitor_typing", "visitor_network"),
            ),
        ]
    },
    "Interaction": obj(
        {
            "channel": CHANNEL,
            "direction": enum("inbound", "outbound"),
            "provider": text(64, 1),
            "provider_message_id": text(512, 1),
            "from": obj(
                {
                    "kind": enum("phone", "email", "visitor", "handle"),
                    "address": text(320, 1),
                    "display_name": null(text(256)),
                },
                optional=("display_name",),
                closed=True,
            ),
            "to": null(
                obj(
                    {
                        "kind": enum("phone", "email", "visitor", "handle"),
                        "address": text(320, 1),
                        "display_name": null(text(256)),
                    },
                    optional=("display_name",),
                    closed=True,
                )
            ),
            "thread_key": null(text(2000)),
            "body": null(text(100_000)),
            "subject": null(text(1000)),
            "occurred_at": null(TIME),
            "attachments": null(
                arr(
                    obj(
                        {
                            "name": null(text(256)),
                            "content_type": null(text(255)),
                            "size": null(INT),
                            "sha256": null(text(64)),
                            "url": null(text(2000)),
                        },
                        optional=("name", "content_type", "size", "sha256", "url"),
                        closed=True,
                    )
                )
            ),
        },
        optional=(
            "direction",
            "to",
            "thread_key",
            "body",
            "subject",
            "occurred_at",
            "attachments",
        ),
        closed=True,
    ),
    "Received": obj(
        {"conversation_id": UUID_, "contact_id": UUID_, "message_id": UUID_, "duplicate": BOOL}
    ),
    # -- contacts --
    "Contact": obj(
        {
            "id": UUID_,
            "display_name": null(STR),
            "identities": arr(IDENTITY),
            "external_id": null(STR),
            "tags": TAGS,
            "attributes": {"type": "object", "additionalProperties": ATTRIBUTE_VALUE},
            "opted_out": arr(STR),
            "first_contact_at": null(TIME),
            "last_contact_at": null(TIME),
            "open_conversations": INT,
            "total_conversations": INT,
            "created_at": TIME,
            "updated_at": TIME,
            **ERASED,
        },
        optional=("erased",),
    ),
    "ContactView": {
        "allOf": [
            ref("Contact"),
            obj(
                {
                    "restricted": BOOL,
                    "conversations": arr(
                        obj(
                            {
                                "id": UUID_,
                                "channel": CHANNEL,
                                "status": STATUS,
                                "assignee_id": null(UUID_),
                                "queue_id": null(UUID_),
                                "opened_at": TIME,
                                "updated_at": TIME,
                            }
                        )
                    ),
                },
                optional=("restricted",),
                description="The 360 view: the contact and its conversations (the newest "
                "200); `restricted` is not shown to integration tokens.",
            ),
        ]
    },
    "TimelineEntry": obj(
        {
            "id": STR,
            "conversation_id": UUID_,
            "channel": CHANNEL,
            "kind": STR,
            "direction": enum("inbound", "outbound"),
            "body": null(STR),
            "subject": STR,
            "occurred_at": TIME,
            "detail": ANY_OBJECT,
            **ERASED,
        },
        optional=("direction", "body", "subject", "erased"),
    ),
    "ContactChanges": obj(
        {
            "external_id": null(text(200, 1)),
            "display_name": null(text(200, 1)),
            "identities": arr(
                obj(
                    {"kind": enum("email", "phone"), "address": text(320, 1)},
                    closed=True,
                ),
                maxItems=20,
            ),
            "tags": obj({"add": TAGS, "remove": TAGS}, optional=("add", "remove"), closed=True),
            "attributes": {
                "type": "object",
                "additionalProperties": ATTRIBUTE_VALUE,
                "description": "Typed custom fields: string, integer or boolean; null "
                "removes one. No floats (decimals as strings, money in minor units).",
            },
        },
        optional=("external_id", "display_name", "identities", "tags", "attributes"),
        closed=True,
        description="Found by external_id, else by any identity; created when none "
        "matches (a new contact needs an email or phone).",
    ),
    "UpsertResult": obj(
        {
            "contact_id": UUID_,
            "created": BOOL,
            "changed": arr(enum("external_id", "identities", "display_name", "tags", "attributes")),
            "duplicate": BOOL,
        }
    ),
    # -- tokens, agents, queues --
    "Token": obj(
        {
            "token_id": UUID_,
            "role": ROLE,
            "label": STR,
            "agent_id": null(UUID_),
            "issued_at": TIME,
            "revoked_at": null(TIME),
        }
    ),
    "Agent": obj(
        {
            "agent_id": UUID_,
            "name": null(STR),
            "email": null(STR),
            "skills": arr(STR),
            "created_at": TIME,
            **ERASED,
        },
        optional=("erased",),
    ),
    "Queue": obj(
        {
            "queue_id": UUID_,
            "name": STR,
            "channels": arr(CHANNEL),
            "settings": ANY_OBJECT,
            "created_at": TIME,
        }
    ),
    # -- routing --
    "RoutingAgent": obj(
        {
            "agent_id": UUID_,
            "presence": STR,
            "reason": null(STR),
            "capacity": CAPACITY,
            "load": CAPACITY,
            "offers": arr(UUID_),
            "idle_since": null(TIME),
            "recent_declines": arr(obj({"conversation_id": UUID_, "reason": STR, "at": TIME})),
        }
    ),
    "RoutingRules": obj(
        {
            "rules": arr(
                obj(
                    {
                        "name": STR,
                        "match": ANY_OBJECT,
                        "queue_id": UUID_,
                        "priority": null(INT),
                    }
                )
            ),
            "default_queue_id": null(UUID_),
        }
    ),
    "RoutingRulesBody": obj(
        {
            "rules": arr(
                obj(
                    {
                        "name": text(100, 1),
                        "match": RULE_MATCH,
                        "queue_id": UUID_,
                        "priority": null(integer(0, 100)),
                    },
                    optional=("name", "match", "priority"),
                    closed=True,
                ),
                maxItems=MAX_RULES,
            ),
            "default_queue_id": null(UUID_),
        },
        optional=("rules", "default_queue_id"),
        closed=True,
        description="Rules in order (first match wins) and the default queue "
        "(docs/routing.md#routing-rules). Every queue named must exist.",
    ),
    # -- privacy --
    "Policy": obj(
        {
            "months": {"type": "object", "additionalProperties": INT},
            "contact_notice_days": INT,
            "marketing_suppression": STR,
        }
    ),
    "Request": obj(
        {
            "request_id": UUID_,
            "kind": enum(
                "access",
                "portability",
                "rectification",
                "restriction",
                "objection",
                "erasure",
                "consent_withdrawal",
            ),
            "status": enum("open", "fulfilled", "rejected"),
            "contact_ids": arr(UUID_),
            "identity_kind": null(STR),
            "received_at": TIME,
            "due_at": TIME,
            "closed_at": null(TIME),
            "overdue": BOOL,
            "near_due": BOOL,
            "outcome": null(ANY_OBJECT),
        }
    ),
    "Hold": obj(
        {
            "hold_id": UUID_,
            "target_kind": enum("contact", "conversation", "tenant"),
            "target_id": UUID_,
            "placed_by": STR,
            "placed_at": TIME,
            "released_by": null(STR),
            "released_at": null(TIME),
            "active": BOOL,
        }
    ),
    "Erasure": obj(
        {
            "contact_id": UUID_,
            "subjects": arr(obj({"kind": STR, "id": UUID_, "status": STR})),
        }
    ),
    # -- channels --
    "ChannelSettings": obj(
        {"provider": PROVIDER, "settings": ANY_OBJECT},
        description="Public fields as given; secrets masked (`****` and the last 4 "
        "characters of a secret of 16 or more), null when unset.",
    ),
    "Block": obj(
        {
            "block_id": UUID_,
            "kind": enum("ip", "visitor"),
            "value": null(STR),
            "reason": STR,
            "created_at": TIME,
            "lifted_at": null(TIME),
            **ERASED,
        },
        optional=("erased",),
    ),
    # -- webhooks --
    "Webhook": obj(
        {
            "webhook_id": UUID_,
            "url": null(STR),
            "event_types": arr(enum(*EVENT_TYPES)),
            "personal_fields": arr(enum(*PERSONAL_FIELDS)),
            "description": STR,
            "status": enum("active", "disabled"),
            "disabled_reason": null(enum("admin", "gone", "failing")),
            "disabled_at": null(TIME),
            "failing_since": null(TIME),
            "last_success_at": null(TIME),
            "previous_secret_valid_until": null(TIME),
            "created_at": TIME,
            "updated_at": TIME,
            "deliveries": obj({"pending": INT, "delivered": INT, "dead": INT, "suppressed": INT}),
        }
    ),
    "WebhookCreated": {
        "allOf": [
            ref("Webhook"),
            obj(
                {"secret": {"type": "string", "pattern": "^whsec_"}},
                description="The signing secret, shown only here.",
            ),
        ]
    },
    "WebhookDelivery": obj(
        {
            "delivery_id": UUID_,
            "webhook_id": UUID_,
            "message_id": {"type": "string", "pattern": "^msg_"},
            "event_type": enum(*EVENT_TYPES),
            "event_id": STR,
            "state": enum("pending", "delivered", "dead", "suppressed"),
            "attempts": INT,
            "occurred_at": TIME,
            "next_attempt_at": null(TIME),
            "last_attempt_at": null(TIME),
            "last_status": null(INT),
            "last_error": null(STR),
            "settled_at": null(TIME),
            "reason": null(STR),
            "payload": obj(
                {
                    "type": enum(*EVENT_TYPES),
                    "timestamp": TIME,
                    "tenant_id": UUID_,
                    "version": INT,
                    "data": ANY_OBJECT,
                }
            ),
        }
    ),
    "WebhookAttempt": obj(
        {
            "delivery_id": UUID_,
            "attempt": INT,
            "at": TIME,
            "outcome": enum("delivered", "retry", "dead", "suppressed"),
            "status_code": null(INT),
            "latency_ms": null(INT),
            "error": null(STR),
        }
    ),
}

# -- operations ----------------------------------------------------------------------------
ADMIN = ("admin",)
SUPERVISORS = ("admin", "supervisor")
STAFF = ("admin", "supervisor", "agent")
ALL = ("admin", "supervisor", "agent", "integration")
INGEST = ("admin", "integration")
LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": integer(1, 200),
}
CURSOR = {"name": "cursor", "in": "query", "schema": text(200)}
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "schema": text(255, 1),
    "description": "A repeat with the same key answers as the first request and writes nothing.",
}
_PARAM = re.compile(r"\{(\w+)\}")


def query(name: str, schema: Schema, description: str | None = None) -> dict[str, Any]:
    param = {"name": name, "in": "query", "schema": schema}
    if description:
        param["description"] = description
    return param


@dataclass(frozen=True)
class Op:
    """One route: what it takes and what it answers."""

    method: str
    path: str
    summary: str
    tag: str
    roles: Sequence[str] | None  # None: no bearer token (open, or the provider signs)
    answers: dict[int, Schema | str | None]  # status -> JSON schema, a media type, or empty
    body: Schema | None = None  # a JSON body
    raw_body: str | None = None  # a body of another media type
    params: Sequence[dict[str, Any]] = ()
    errors: Sequence[int] = ()  # particular to this route
    writes: bool = False
    description: str | None = None
    path_schemas: dict[str, Schema] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        codes = set(self.errors)
        if self.roles is not None:
            codes |= {401, 403}
        if _PARAM.search(self.path):
            codes.add(404)
        if self.body is not None or self.raw_body is not None:
            codes |= {400, 413, 415, 422}
        if self.writes:
            codes.add(503)
        responses: dict[str, Any] = {}
        for status, answer in sorted(self.answers.items()):
            responses[str(status)] = _answer(status, answer)
        for status in sorted(codes - set(self.answers)):
            responses[str(status)] = {
                "description": _REASONS.get(status, "error"),
                "content": {"application/json": {"schema": ref("Problem")}},
            }
        operation: dict[str, Any] = {
            "operationId": _operation_id(self.method, self.path),
            "summary": self.summary,
            "tags": [self.tag],
            "responses": responses,
        }
        description = self.description or ""
        if self.roles is not None:
            description = f"Roles: {', '.join(self.roles)}. {description}".strip()
            operation["security"] = [{"bearerAuth": []}]
        else:
            operation["security"] = []
        if description:
            operation["description"] = description
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": self.path_schemas.get(name, UUID_),
            }
            for name in _PARAM.findall(self.path)
        ]
        parameters += list(self.params)
        if parameters:
            operation["parameters"] = parameters
        if self.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.body}},
            }
        elif self.raw_body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {self.raw_body: {"schema": {"type": "string"}}},
            }
        return operation


_REASONS = {
    400: "malformed request (body not JSON, or a provider payload missing a field)",
    401: "no token, an unknown or revoked token, or an inactive tenant",
    403: "the token's role may not do this (or the tenant was terminated)",
    404: "no such thing in the caller's tenant",
    409: "the current state forbids it",
    413: "body too large",
    415: "wrong media type",
    422: "well-formed but invalid",
    429: "rate limited",
    503: "overloaded: retry after Retry-After",
}


def _answer(status: int, answer: Schema | str | None) -> dict[str, Any]:
    description = {
        200: "OK",
        201: "created",
        202: "accepted",
        204: "no content",
        101: "switching protocols",
    }.get(status, "answer")
    if answer is None:
        return {"description": description}
    if isinstance(answer, str):
        return {"description": description, "content": {answer: {"schema": STR}}}
    return {"description": description, "content": {"application/json": {"schema": answer}}}


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^a-zA-Z0-9]+", "_", path.replace("{", "by_").replace("}", "")).strip("_")
    return f"{method.lower()}_{words}"


def _id_body(*names: str, optional: Iterable[str] = ()) -> Schema:
    return obj({name: UUID_ for name in names}, optional=optional, closed=True)


OK_STATUS = obj({"status": STR})
SIGNED = "Signed by the provider (no bearer token); see docs/channels.md."
FORM = "application/x-www-form-urlencoded"
TWIML = "text/xml"


def twilio(
    path: str, summary: str, answer: str | None = None, params: Sequence[dict[str, Any]] = ()
) -> Op:
    """A Twilio webhook: a signed form; TwiML or nothing back."""
    return Op(
        "POST",
        f"/v1/channels/{{tenant_id}}/twilio/{path}",
        f"Twilio: {summary}",
        "channel webhooks",
        None,
        {200: answer} if answer else {204: None},
        raw_body=FORM,
        params=params,
        errors=(403, 409),
        writes=True,
        description=SIGNED,
    )


REPLY = obj({"message_id": UUID_, "conversation_id": UUID_, "author": STR, "duplicate": BOOL})
REASON = obj({"reason": null(text(64))}, optional=("reason",), closed=True)
WEBHOOK_FIELDS: dict[str, Schema] = {
    "url": text(2000, 1),
    "event_types": arr(enum(*EVENT_TYPES), minItems=1),
    "personal_fields": arr(enum(*PERSONAL_FIELDS)),
    "description": text(200),
}

OPERATIONS: list[Op] = [
    # -- health and the description itself --
    Op("GET", "/health", "Liveness", "health", None, {200: OK_STATUS}),
    Op(
        "GET",
        "/ready",
        "Readiness: the event store, the vault and every read model's lag",
        "health",
        None,
        {
            200: obj(
                {
                    "status": STR,
                    "event_store": obj({"position": INT}),
                    "projections": {
                        "type": "object",
                        "additionalProperties": obj(
                            {"position": INT, "lag": INT, "error": null(STR)}
                        ),
                    },
                    "relay": obj({"position": INT, "lag": INT}),
                    "projector": obj({"running": BOOL, "restarts": INT}),
                },
                optional=("relay", "projector"),
            ),
            503: obj({"status": STR, "error": STR}),
        },
    ),
    Op("GET", "/v1/openapi.json", "This description", "health", None, {200: ANY_OBJECT}),
    # -- interactions --
    Op(
        "POST",
        "/v1/interactions",
        "Record an inbound interaction (idempotent on provider and provider message id)",
        "interactions",
        INGEST,
        {200: ref("Received"), 201: ref("Received")},
        body=ref("Interaction"),
        errors=(404, 409),
        writes=True,
    ),
    # -- conversations --
    Op(
        "GET",
        "/v1/conversations",
        "The inbox: conversations, newest activity first",
        "conversations",
        STAFF,
        {200: page("Conversation")},
        params=(
            query("status", STATUS),
            query("channel", CHANNEL),
            query("assignee", text(64), "an agent id, `none` or `me`"),
            query("contact_id", UUID_),
            query("queue_id", UUID_),
            LIMIT,
            CURSOR,
        ),
        errors=(422,),
    ),
    Op(
        "POST",
        "/v1/conversations/search",
        "The inbox with a contact search (names never travel in URLs)",
        "conversations",
        STAFF,
        {200: page("Conversation")},
        body=obj(
            {
                "contact": null(text(200)),
                "status": null(STATUS),
                "channel": null(CHANNEL),
                "assignee": null(text(64)),
                "contact_id": null(UUID_),
                "queue_id": null(UUID_),
                "limit": null(integer(1, 200)),
                "cursor": null(text(200)),
            },
            optional=(
                "contact",
                "status",
                "channel",
                "assignee",
                "contact_id",
                "queue_id",
                "limit",
                "cursor",
            ),
            closed=True,
        ),
    ),
    Op(
        "GET",
        "/v1/conversations/{conversation_id}",
        "A conversation with its messages, notes, deliveries and calls",
        "conversations",
        STAFF,
        {200: ref("ConversationDetail")},
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/replies",
        "Reply on the conversation's channel",
        "conversations",
        STAFF,
        {200: REPLY, 201: REPLY},
        body=obj({"body": text(100_000, 1)}, closed=True),
        params=(IDEMPOTENCY,),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/notes",
        "Add an internal note",
        "conversations",
        STAFF,
        {201: obj({"note_id": UUID_, "conversation_id": UUID_})},
        body=obj({"body": text(100_000, 1)}, closed=True),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/status",
        "Change the status (closed is final)",
        "conversations",
        STAFF,
        {200: obj({"conversation_id": UUID_, "status": STATUS, "changed": BOOL})},
        body=obj({"status": STATUS}, closed=True),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/assignment",
        "Assign to an agent, or unassign",
        "conversations",
        STAFF,
        {200: obj({"conversation_id": UUID_, "assignee_id": null(UUID_)})},
        body=obj({"agent_id": null(UUID_)}, optional=("agent_id",), closed=True),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/queue",
        "Put the conversation in a queue",
        "conversations",
        SUPERVISORS,
        {200: obj({"conversation_id": UUID_, "queue_id": UUID_})},
        body=obj(
            {
                "queue_id": UUID_,
                "priority": null(integer(0, 100)),
            },
            optional=("priority",),
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/abandon",
        "The customer left while waiting",
        "conversations",
        INGEST,
        {200: obj({"conversation_id": UUID_, "abandoned": BOOL})},
        body=REASON,
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/typing",
        "Tell a webchat visitor an agent is typing",
        "channels",
        STAFF,
        {200: obj({"conversation_id": UUID_, "pushed_to": INT})},
        body=obj({"typing": BOOL}, closed=True),
    ),
    # -- tenant, tokens, agents, queues --
    Op(
        "GET",
        "/v1/tenant",
        "The caller's tenant and role",
        "tenant",
        ALL,
        {200: obj({"tenant_id": UUID_, "name": STR, "status": STR, "role": ROLE})},
        errors=(404,),
    ),
    Op(
        "POST",
        "/v1/tenant/termination",
        "Terminate the tenant (purged after the grace period)",
        "privacy",
        ADMIN,
        {
            200: obj(
                {
                    "tenant_id": UUID_,
                    "status": STR,
                    "grace_days": INT,
                    "purge_after": TIME,
                    "reactivate_with": STR,
                }
            )
        },
        body=obj(
            {"grace_days": integer(0, 30)},
            optional=("grace_days",),
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/tokens",
        "Issue an API token (shown once)",
        "tenant",
        ADMIN,
        {201: obj({"token_id": UUID_, "token": STR, "role": ROLE})},
        body=obj(
            {"role": ROLE, "label": null(text(200)), "agent_id": null(UUID_)},
            optional=("label", "agent_id"),
            closed=True,
        ),
        errors=(404, 409),
        writes=True,
    ),
    Op("GET", "/v1/tokens", "The tenant's tokens", "tenant", ADMIN, {200: items("Token")}),
    Op(
        "DELETE",
        "/v1/tokens/{token_id}",
        "Revoke a token",
        "tenant",
        ADMIN,
        {204: None},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/agents",
        "Create an agent",
        "tenant",
        ADMIN,
        {201: obj({"agent_id": UUID_})},
        body=obj(
            {"name": text(200, 1), "email": null(text(320)), "skills": null(arr(text(64)))},
            optional=("email", "skills"),
            closed=True,
        ),
        writes=True,
    ),
    Op("GET", "/v1/agents", "The agents", "tenant", SUPERVISORS, {200: items("Agent")}),
    Op(
        "POST",
        "/v1/agents/{agent_id}/presence",
        "Set an agent's presence",
        "tenant",
        STAFF,
        {200: obj({"agent_id": UUID_, "presence": STR, "changed": BOOL})},
        body=obj(
            {
                "presence": enum("available", "busy", "away", "offline"),
                "reason": null(text(100)),
            },
            optional=("reason",),
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "DELETE",
        "/v1/agents/{agent_id}",
        "Delete an agent (its personal data goes; its work history stays)",
        "privacy",
        ADMIN,
        {204: None},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/queues",
        "Create a queue",
        "tenant",
        ADMIN,
        {201: obj({"queue_id": UUID_})},
        body=obj(
            {"name": text(200, 1), "channels": null(arr(CHANNEL))},
            optional=("channels",),
            closed=True,
        ),
        writes=True,
    ),
    Op("GET", "/v1/queues", "The queues", "tenant", SUPERVISORS, {200: items("Queue")}),
    Op(
        "PATCH",
        "/v1/queues/{queue_id}",
        "Change a queue's settings",
        "tenant",
        ADMIN,
        {200: obj({"queue_id": UUID_, "settings": ANY_OBJECT})},
        body=obj(
            {
                "required_skills": arr(text(64)),
                "priority": integer(0, 100),
                "sl_threshold_seconds": integer(1, 604_800),
                "sl_target_percent": integer(1, 100),
                "business_hours": null(BUSINESS_HOURS),
                "max_wait_seconds": null(integer(1, 604_800)),
                "overflow": null(OVERFLOW),
                "offer_timeout_seconds": null(integer(5, 3600)),
            },
            optional=QUEUE_SETTING_NAMES,
            closed=True,
            description="Settings to change; null puts one back to its default "
            "(docs/routing.md#queues).",
        ),
        errors=(409,),
        writes=True,
    ),
    # -- queues and dashboards --
    Op(
        "GET",
        "/v1/queues/state",
        "Who waits in each queue, and for how long",
        "supervision",
        STAFF,
        {
            200: obj(
                {
                    "at": TIME,
                    "items": arr(
                        obj(
                            {
                                "queue_id": UUID_,
                                "name": null(STR),
                                "waiting": arr(
                                    obj(
                                        {
                                            "conversation_id": UUID_,
                                            "channel": CHANNEL,
                                            "priority": INT,
                                            "waiting_since": TIME,
                                            "wait_seconds": INT,
                                        }
                                    )
                                ),
                                "counts_by_channel": {
                                    "type": "object",
                                    "additionalProperties": INT,
                                },
                                "longest_wait_seconds": INT,
                            }
                        )
                    ),
                }
            )
        },
        params=(query("queue_id", UUID_),),
        errors=(422,),
    ),
    Op(
        "GET",
        "/v1/metrics/live",
        "The supervisor dashboard now (queues, agents, privacy requests, webhooks)",
        "supervision",
        STAFF,
        {
            200: obj(
                {
                    "at": TIME,
                    "waiting": INT,
                    "longest_wait_seconds": INT,
                    "in_progress": INT,
                    "agents": obj({"available": INT, "busy": INT, "away": INT, "offline": INT}),
                    "sla_breaches": obj({"last_24_hours": INT, "recent": arr(SLA_BREACH)}),
                    "privacy_requests": obj(
                        {"open": INT, "due_within_7_days": INT, "overdue": INT}
                    ),
                    "webhooks": obj({"disabled": INT, "failing": INT, "dead_letters": INT}),
                }
            )
        },
        params=(query("queue_id", UUID_),),
        errors=(422,),
    ),
    Op(
        "GET",
        "/v1/metrics/intervals",
        "Figures per 15 minutes, queue and channel (docs/metrics.md)",
        "supervision",
        STAFF,
        {
            200: obj(
                {
                    "interval_minutes": INT,
                    "from": TIME,
                    "to": TIME,
                    "items": arr(
                        obj(
                            {
                                "queue_id": null(UUID_),
                                "channel": STR,
                                "interval_start": TIME,
                                "offered": INT,
                                "answered": INT,
                                "abandoned": INT,
                                "answered_within_threshold": INT,
                                "average_speed_of_answer_seconds": null({"type": "number"}),
                                "average_handle_time_seconds": null({"type": "number"}),
                                "first_response_time_seconds": null({"type": "number"}),
                                "service_level_percent": null({"type": "number"}),
                            }
                        )
                    ),
                }
            )
        },
        params=(
            query("from", TIME),
            query("to", TIME),
            query("queue_id", UUID_),
            query("channel", CHANNEL),
        ),
        errors=(422,),
    ),
    # -- contacts --
    Op(
        "POST",
        "/v1/contacts",
        "Upsert a contact by external id, email or phone",
        "contacts",
        INGEST,
        {200: ref("UpsertResult"), 201: ref("UpsertResult")},
        body=ref("ContactChanges"),
        params=(IDEMPOTENCY,),
        errors=(409,),
        writes=True,
        description="201 when created. Integration tokens may not change a restricted "
        "contact (409 restricted).",
    ),
    Op(
        "POST",
        "/v1/contacts/import",
        "Bulk upsert from NDJSON, one contact per line",
        "contacts",
        INGEST,
        {200: "application/x-ndjson"},
        raw_body="application/x-ndjson",
        params=(IDEMPOTENCY,),
        writes=True,
        description="Each line as POST /v1/contacts takes it. The answer has one line per "
        'input line, in order: {"line", "status": created|updated|unchanged|error, '
        '"contact_id", "changed", "duplicate"} or {"line", "status": "error", "error": '
        '{"error", "detail"}}, then {"summary": {...}}. A bad line never stops the others.',
    ),
    Op(
        "GET",
        "/v1/contacts",
        "Contacts, most recently in contact first",
        "contacts",
        ALL,
        {200: page("Contact")},
        params=(query("tag", text(64)), LIMIT, CURSOR),
        errors=(422,),
        description="Integration tokens do not see restricted contacts.",
    ),
    Op(
        "POST",
        "/v1/contacts/search",
        "Search contacts by words of names and identities",
        "contacts",
        ALL,
        {200: page("Contact")},
        body=obj(
            {
                "query": text(200, 1),
                "tag": null(text(64)),
                "limit": null(integer(1, 200)),
                "cursor": null(text(200)),
            },
            optional=("tag", "limit", "cursor"),
            closed=True,
        ),
    ),
    Op(
        "POST",
        "/v1/contacts/lookup",
        "The contact with an identity or external id",
        "contacts",
        ALL,
        {200: ref("Contact")},
        body=obj(
            {
                "kind": enum("phone", "email", "visitor", "handle", "external_id"),
                "address": text(320, 1),
            },
            closed=True,
        ),
        errors=(404,),
    ),
    Op(
        "GET",
        "/v1/contacts/{contact_id}",
        "A contact's 360 view",
        "contacts",
        ALL,
        {200: ref("ContactView")},
        description="A contact merged into another answers 404 with `merged_into`.",
    ),
    Op(
        "PATCH",
        "/v1/contacts/{contact_id}",
        "Change a contact's external id, identities, name, tags and attributes",
        "contacts",
        INGEST,
        {200: ref("UpsertResult")},
        body=ref("ContactChanges"),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/contacts/{contact_id}/merge",
        "Merge another contact into this one",
        "contacts",
        INGEST,
        {
            200: obj(
                {"contact_id": UUID_, "merged_contact_id": UUID_, "conversation_ids": arr(UUID_)}
            )
        },
        body=_id_body("contact_id"),
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/contacts/{contact_id}/timeline",
        "Everything that happened with a contact, on every channel",
        "contacts",
        ALL,
        {200: page("TimelineEntry")},
        params=(query("order", enum("asc", "desc")), LIMIT, CURSOR),
        errors=(422,),
        description="Integration tokens get metadata only (no message text).",
    ),
    Op(
        "POST",
        "/v1/contacts/{contact_id}/erasure",
        "Erase a contact and its conversations (except what a hold covers)",
        "privacy",
        ADMIN,
        {200: ref("Erasure")},
        body=REASON,
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/contacts/{contact_id}/restriction",
        "Restrict processing of a contact",
        "privacy",
        ADMIN,
        {200: obj({"contact_id": UUID_, "restricted": BOOL, "changed": BOOL})},
        body=REASON,
        errors=(409,),
        writes=True,
    ),
    Op(
        "DELETE",
        "/v1/contacts/{contact_id}/restriction",
        "Lift a restriction",
        "privacy",
        ADMIN,
        {200: obj({"contact_id": UUID_, "restricted": BOOL, "changed": BOOL})},
        errors=(409,),
        writes=True,
    ),
    # -- privacy --
    Op(
        "GET",
        "/v1/retention/policy",
        "The retention policy",
        "privacy",
        SUPERVISORS,
        {200: ref("Policy")},
    ),
    Op(
        "PUT",
        "/v1/retention/policy",
        "Change retention periods",
        "privacy",
        ADMIN,
        {200: ref("Policy")},
        body=obj(
            {
                "months": {"type": "object", "additionalProperties": INT},
                "contact_notice_days": INT,
            },
            optional=("months", "contact_notice_days"),
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/retention/ledger",
        "Every scope of personal data, its category, anchor and due date",
        "privacy",
        ADMIN,
        {
            200: obj(
                {
                    "items": arr(
                        obj(
                            {
                                "scope": STR,
                                "kind": STR,
                                "subject_id": UUID_,
                                "category": STR,
                                "status": STR,
                                "anchor_at": null(TIME),
                                "due_at": null(TIME),
                                "held": BOOL,
                                "erased_at": null(TIME),
                                "contact_id": null(UUID_),
                            }
                        )
                    ),
                    "next": null(STR),
                }
            )
        },
        params=(
            query("category", text(32)),
            query("status", text(32)),
            query("contact_id", UUID_),
            LIMIT,
            CURSOR,
        ),
        errors=(422,),
    ),
    Op(
        "GET",
        "/v1/retention/deletions",
        "What was destroyed, when and why (no personal data)",
        "privacy",
        ADMIN,
        {
            200: obj(
                {
                    "items": arr(
                        obj(
                            {
                                "scope": STR,
                                "kind": STR,
                                "subject_id": UUID_,
                                "category": STR,
                                "rule": STR,
                                "request_id": null(UUID_),
                                "at": TIME,
                            }
                        )
                    )
                }
            )
        },
        params=(query("since", TIME), LIMIT),
        errors=(422,),
    ),
    Op(
        "POST",
        "/v1/retention/run",
        "Run the retention sweep now (a dry run by default)",
        "privacy",
        ADMIN,
        {
            200: obj(
                {
                    "at": TIME,
                    "dry_run": BOOL,
                    "actions": {"type": "object", "additionalProperties": INT},
                    "held_scopes_kept": INT,
                    "keys_destroyed": INT,
                    "items": arr(ANY_OBJECT),
                }
            )
        },
        body=obj({"dry_run": BOOL}, optional=("dry_run",), closed=True),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/holds",
        "Place a legal hold",
        "privacy",
        ADMIN,
        {201: obj({"hold_id": UUID_, "target_kind": STR, "target_id": UUID_})},
        body=obj(
            {
                "target_kind": enum("contact", "conversation", "tenant"),
                "target_id": UUID_,
                "reason": text(2000, 1),
            },
            closed=True,
        ),
        errors=(404, 409),
        writes=True,
    ),
    Op("GET", "/v1/holds", "Legal holds", "privacy", ADMIN, {200: items("Hold")}),
    Op(
        "POST",
        "/v1/holds/{hold_id}/release",
        "Release a legal hold",
        "privacy",
        ADMIN,
        {200: obj({"hold_id": UUID_, "active": BOOL})},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/requests",
        "Record a data-subject request (due in 30 days)",
        "privacy",
        ADMIN,
        {201: ref("Request")},
        body=obj(
            {
                "kind": enum(
                    "access",
                    "portability",
                    "rectification",
                    "restriction",
                    "objection",
                    "erasure",
                    "consent_withdrawal",
                ),
                "subject": obj(
                    {"kind": enum("phone", "email", "visitor", "handle"), "address": text(320, 1)},
                    closed=True,
                ),
                "contact_id": null(UUID_),
                "note": null(text(4000)),
                "received_at": null(TIME),
            },
            optional=("subject", "contact_id", "note", "received_at"),
            closed=True,
        ),
        errors=(404, 409),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/requests",
        "Data-subject requests (attention=true: near or past due)",
        "privacy",
        SUPERVISORS,
        {200: items("Request")},
        params=(query("status", enum("open", "fulfilled", "rejected")), query("attention", BOOL)),
    ),
    Op(
        "GET",
        "/v1/requests/{request_id}",
        "A request",
        "privacy",
        SUPERVISORS,
        {200: ref("Request")},
    ),
    Op(
        "POST",
        "/v1/requests/{request_id}/extend",
        "Extend the deadline (at most 60 days in all)",
        "privacy",
        ADMIN,
        {200: ref("Request")},
        body=obj(
            {"days": integer(1, 60), "reason": text(2000, 1)},
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/requests/{request_id}/reject",
        "Reject a request",
        "privacy",
        ADMIN,
        {200: ref("Request")},
        body=obj({"reason": text(2000, 1)}, closed=True),
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/requests/{request_id}/fulfil",
        "Carry a request out",
        "privacy",
        ADMIN,
        {200: ref("Request")},
        body=obj({"display_name": text(200, 1)}, optional=("display_name",), closed=True),
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/requests/{request_id}/export",
        "The subject's data (OpenPGP-encrypted when the tenant set a key)",
        "privacy",
        ADMIN,
        {200: ANY_OBJECT},
        params=(query("format", enum("json-unencrypted")),),
        errors=(409,),
        description="application/json, or application/pgp-encrypted (ASCII armour) when an "
        "export key is configured.",
    ),
    Op(
        "PUT",
        "/v1/privacy/export-key",
        "The OpenPGP public key exports are encrypted to (null removes it)",
        "privacy",
        ADMIN,
        {200: obj({"fingerprint": null(STR), "encrypted_exports": BOOL})},
        body=obj({"public_key": null(text(100_000))}, optional=("public_key",), closed=True),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/audit",
        "Who read which personal data, when, through which endpoint",
        "privacy",
        ADMIN,
        {
            200: obj(
                {
                    "items": arr(
                        obj(
                            {
                                "seq": INT,
                                "at": TIME,
                                "actor": STR,
                                "role": STR,
                                "action": STR,
                                "subject_kind": STR,
                                "subjects": arr(STR),
                                "endpoint": STR,
                                "prev_hash": STR,
                                "hash": STR,
                            }
                        )
                    ),
                    "next": null(STR),
                }
            )
        },
        params=(
            query("since", TIME),
            query("until", TIME),
            query("subject", text(64)),
            query("after", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
            LIMIT,
        ),
        errors=(422,),
    ),
    # -- channel settings, blocks, channel webhooks, the visitor socket --
    Op(
        "PUT",
        "/v1/channel-settings/{provider}",
        "Replace a provider's settings (secrets write-only)",
        "channels",
        ADMIN,
        {200: ref("ChannelSettings")},
        body=ANY_OBJECT,
        errors=(409,),
        writes=True,
        path_schemas={"provider": PROVIDER},
        description="Fields per provider in docs/api.md#channel-settings; unknown fields 422.",
    ),
    Op(
        "GET",
        "/v1/channel-settings/{provider}",
        "A provider's settings (secrets masked)",
        "channels",
        ADMIN,
        {200: ref("ChannelSettings")},
        path_schemas={"provider": PROVIDER},
    ),
    Op(
        "POST",
        "/v1/webchat/blocks",
        "Block a webchat visitor by IP or cookie",
        "channels",
        ADMIN,
        {201: obj({"block_id": UUID_})},
        body={
            "oneOf": [
                obj({"ip": text(64, 1), "reason": text(500)}, optional=("reason",), closed=True),
                obj(
                    {"visitor_id": text(200, 1), "reason": text(500)},
                    optional=("reason",),
                    closed=True,
                ),
            ]
        },
        writes=True,
    ),
    Op("GET", "/v1/webchat/blocks", "Webchat blocks", "channels", ADMIN, {200: items("Block")}),
    Op(
        "DELETE",
        "/v1/webchat/blocks/{block_id}",
        "Lift a block",
        "channels",
        ADMIN,
        {204: None},
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/webchat/{widget_key}/ws",
        "The visitor's WebSocket (docs/channels.md#webchat)",
        "channels",
        None,
        {101: None},
        errors=(400, 403, 404, 429),
        path_schemas={"widget_key": text(128, 1)},
    ),
    twilio("voice", "an incoming call", TWIML),
    twilio("voice/status", "a call's status callback"),
    twilio(
        "voice/connect",
        "connect a waiting call to the agent who accepted it (docs/routing.md#voice)",
        TWIML,
        params=(query("agent", UUID_),),
    ),
    twilio("voice/recording", "a call's recording"),
    twilio("voice/transcription", "a recording's transcription"),
    twilio("sms", "an SMS, MMS or WhatsApp message", TWIML),
    twilio("sms/status", "a message's delivery status", params=(query("delivery", UUID_),)),
    Op(
        "POST",
        "/v1/channels/{tenant_id}/slack/events",
        "Slack Events API",
        "channel webhooks",
        None,
        {200: obj({"challenge": STR, "ok": BOOL}, optional=("challenge", "ok"))},
        raw_body="application/json",
        errors=(403, 409),
        writes=True,
        description=SIGNED,
    ),
    Op(
        "GET",
        "/v1/channels/{tenant_id}/meta/webhook",
        "Meta: the subscription challenge",
        "channel webhooks",
        None,
        {200: "text/plain"},
        params=(
            query("hub.mode", text(64)),
            query("hub.verify_token", text(256)),
            query("hub.challenge", text(200)),
        ),
        errors=(400, 403),
        description=SIGNED,
    ),
    Op(
        "POST",
        "/v1/channels/{tenant_id}/meta/webhook",
        "Meta Messenger and Instagram webhooks",
        "channel webhooks",
        None,
        {200: obj({"ok": BOOL})},
        raw_body="application/json",
        errors=(403, 409),
        writes=True,
        description=SIGNED,
    ),
    Op(
        "POST",
        "/v1/channels/{tenant_id}/email/raw",
        "A raw RFC 5322 message for the tenant's mailbox",
        "channel webhooks",
        INGEST,
        {
            200: ANY_OBJECT,
            201: ref("Received"),
            202: obj({"ignored": STR}),
        },
        raw_body="message/rfc822",
        errors=(409,),
        writes=True,
        description="201 recorded; 200 a resend (duplicate) or a bounce ({bounce, "
        "recorded}); 202 an automatic reply, ignored.",
    ),
    # -- webhooks --
    Op(
        "POST",
        "/v1/webhooks",
        "Subscribe an endpoint to events (the signing secret is shown once)",
        "webhooks",
        ADMIN,
        {201: ref("WebhookCreated")},
        body=obj(WEBHOOK_FIELDS, optional=("personal_fields", "description"), closed=True),
        writes=True,
        description="https only; private, loopback and link-local targets are refused "
        "unless the operator allowed them (CC_WEBHOOK_ALLOWED_NETWORKS).",
    ),
    Op("GET", "/v1/webhooks", "The tenant's webhooks", "webhooks", ADMIN, {200: items("Webhook")}),
    Op("GET", "/v1/webhooks/{webhook_id}", "A webhook", "webhooks", ADMIN, {200: ref("Webhook")}),
    Op(
        "PATCH",
        "/v1/webhooks/{webhook_id}",
        "Change a webhook; enable or disable it",
        "webhooks",
        ADMIN,
        {200: ref("Webhook")},
        body=obj(
            {**WEBHOOK_FIELDS, "enabled": BOOL},
            optional=(*WEBHOOK_FIELDS, "enabled"),
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "DELETE",
        "/v1/webhooks/{webhook_id}",
        "Delete a webhook",
        "webhooks",
        ADMIN,
        {204: None},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/webhooks/{webhook_id}/rotate-secret",
        "A new signing secret; the old one signs too for the grace period",
        "webhooks",
        ADMIN,
        {
            200: obj(
                {
                    "webhook_id": UUID_,
                    "secret": {"type": "string", "pattern": "^whsec_"},
                    "previous_secret_valid_until": TIME,
                }
            )
        },
        body=obj(
            {"grace_hours": integer(0, 168)},
            optional=("grace_hours",),
            closed=True,
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/webhooks/{webhook_id}/deliveries",
        "Deliveries, newest first (state=dead: the dead-letter view)",
        "webhooks",
        ADMIN,
        {200: page("WebhookDelivery")},
        params=(query("state", enum("pending", "delivered", "dead", "suppressed")), LIMIT, CURSOR),
        errors=(422,),
    ),
    Op(
        "GET",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}",
        "A delivery with its attempts",
        "webhooks",
        ADMIN,
        {
            200: {
                "allOf": [
                    ref("WebhookDelivery"),
                    obj({"attempt_log": arr(ref("WebhookAttempt"))}),
                ]
            }
        },
    ),
    Op(
        "POST",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
        "Send one delivery again (same webhook-id)",
        "webhooks",
        ADMIN,
        {202: obj({"webhook_id": UUID_, "replayed": INT})},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/webhooks/{webhook_id}/replay",
        "Send every dead letter again, or every delivery of a time range",
        "webhooks",
        ADMIN,
        {202: obj({"webhook_id": UUID_, "replayed": INT})},
        body={
            "oneOf": [
                obj({"dead_letters": {"const": True}}, closed=True),
                obj({"from": TIME, "to": TIME}, closed=True),
            ]
        },
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/webhooks/{webhook_id}/attempts",
        "The attempt log: status code, latency and error of every attempt",
        "webhooks",
        ADMIN,
        {200: page("WebhookAttempt")},
        params=(query("delivery_id", UUID_), LIMIT, CURSOR),
        errors=(422,),
    ),
]


ROUTING_OPERATIONS: list[Op] = [
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/accept",
        "Accept the offer of a conversation (the agent it is offered to)",
        "routing",
        ("agent",),
        {200: obj({"conversation_id": UUID_, "assignee_id": UUID_})},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/decline",
        "Decline the offer of a conversation (it moves to the next agent)",
        "routing",
        ("agent",),
        {200: obj({"conversation_id": UUID_, "declined": BOOL})},
        errors=(409,),
        writes=True,
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/transfer",
        "Transfer a conversation to a queue or an agent, with a note",
        "routing",
        STAFF,
        {200: obj({"conversation_id": UUID_, "queue_id": null(UUID_), "agent_id": null(UUID_)})},
        body=obj(
            {"queue_id": null(UUID_), "agent_id": null(UUID_), "note": null(text(10_000))},
            optional=("queue_id", "agent_id", "note"),
            closed=True,
            description="One of queue_id and agent_id.",
        ),
        errors=(409,),
        writes=True,
        description="An agent only for conversations assigned to it.",
    ),
    Op(
        "POST",
        "/v1/conversations/{conversation_id}/wrap-up",
        "Wrap up a conversation with a disposition code (and resolve it)",
        "routing",
        ("agent",),
        {200: obj({"conversation_id": UUID_, "disposition": STR, "resolved": BOOL})},
        body=obj(
            {"disposition": text(64, 1), "resolve": BOOL},
            optional=("resolve",),
            closed=True,
        ),
        errors=(409,),
        writes=True,
        description="The assigned agent only.",
    ),
    Op(
        "POST",
        "/v1/agents/{agent_id}/login",
        "Log an agent in (presence available)",
        "routing",
        STAFF,
        {200: obj({"agent_id": UUID_, "presence": STR})},
        errors=(409,),
        writes=True,
        description="An agent token for itself only.",
    ),
    Op(
        "POST",
        "/v1/agents/{agent_id}/logout",
        "Log an agent out (its work is queued again at its original wait)",
        "routing",
        STAFF,
        {200: obj({"agent_id": UUID_, "presence": STR, "requeued": INT})},
        errors=(409,),
        writes=True,
        description="An agent token for itself only.",
    ),
    Op(
        "PATCH",
        "/v1/agents/{agent_id}",
        "Change an agent's skills and capacity per channel",
        "routing",
        ADMIN,
        {
            200: obj(
                {"agent_id": UUID_, "skills": arr(STR), "capacity": CAPACITY},
                optional=("skills", "capacity"),
            )
        },
        body=obj(
            {"skills": arr(text(64)), "capacity": CAPACITY_BODY},
            optional=("skills", "capacity"),
            closed=True,
            description='Skills like billing:3; capacity like {"voice": 1, "email": 8}.',
        ),
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/routing/agents",
        "Agents as routing sees them: presence, load, offers, recent declines",
        "routing",
        SUPERVISORS,
        {200: items("RoutingAgent")},
    ),
    Op(
        "GET",
        "/v1/routing/rules",
        "The tenant's routing rules",
        "routing",
        SUPERVISORS,
        {200: ref("RoutingRules")},
    ),
    Op(
        "PUT",
        "/v1/routing/rules",
        "Replace the tenant's routing rules (first match wins, then the default queue)",
        "routing",
        ADMIN,
        {200: ref("RoutingRules")},
        body=ref("RoutingRulesBody"),
        errors=(409,),
        writes=True,
    ),
    Op(
        "GET",
        "/v1/agent/ws",
        "The agent's live socket: offers, inbox changes, messages (docs/routing.md)",
        "routing",
        ("agent",),
        {101: None},
        errors=(400,),
    ),
    Op(
        "GET",
        "/v1/supervisor/ws",
        "The supervisor's live socket: queues, agents, SLA breaches (docs/routing.md)",
        "routing",
        SUPERVISORS,
        {101: None},
        errors=(400,),
    ),
]


OPERATIONS.extend(ROUTING_OPERATIONS)


def document(operations: Sequence[Op] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = op.document()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "contact-centre",
            "version": "1",
            "description": "Omnichannel contact-centre API. Errors are "
            '{"error": code, "detail": text}; times are ISO 8601 UTC. See docs/api.md '
            "and docs/webhooks.md (outbound webhooks, signed per Standard Webhooks).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (cc_...), of one tenant and one role.",
                }
            },
        },
    }


def routes(operations: Sequence[Op] = OPERATIONS) -> set[tuple[str, str]]:
    return {(op.method, op.path) for op in operations}
