"""Configuration: every ``CC_`` environment variable, read once, in this one place."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,200}")


class ConfigError(Exception):
    """A configuration value is missing or malformed."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _master_key(raw: str | None) -> bytes | None:
    if not raw:
        return None
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ConfigError("CC_MASTER_KEY must be 32 bytes, base64-encoded")
    return key


def _optional_port(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name):
        return None
    port = _int(env, name, 0, minimum=1)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535)")
    return port


def _projections(raw: str) -> str:
    if raw not in ("inline", "process"):
        raise ConfigError("CC_PROJECTIONS must be inline or process")
    return raw


def _dispatcher(raw: str) -> str:
    if raw not in ("inline", "process", "off"):
        raise ConfigError("CC_WEBHOOK_DISPATCHER must be inline, process or off")
    return raw


def _networks(raw: str, name: str = "CC_TRUSTED_PROXIES") -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or CIDR") from None
    return items


# Pages a connection keeps in its own memory, instead of SQLite's default 2 MB. At 1M
# events the B-trees' interior pages alone are ~24 MB (event store and index) and ~50 MB
# (read models): with 2 MB a lookup re-read most of its path from the OS for every row,
# and this machine's VM hands idle OS page cache back to its host within seconds, so
# those reads often went to storage. The cache fills only as pages are read.
EVENT_STORE_CACHE_KIB = 32 * 1024
READ_MODEL_CACHE_KIB = 64 * 1024
# what an embedded process faults in at start for those caches (infra/memory.py)
RESERVE_CACHE_MIB = (EVENT_STORE_CACHE_KIB + READ_MODEL_CACHE_KIB) // 1024


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one contact-centre process."""

    data_dir: Path = Path("var")
    database_url: str | None = None
    master_key: bytes | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str | None = None
    max_body_bytes: int = 1_048_576
    writer_batch: int = 256
    writer_queue: int = 20_000
    log_level: str = "INFO"
    projection_wait_ms: int = 2_000
    retention_interval_seconds: int = 3_600  # 0: no scheduled sweep inside serve
    # Embedded: heap faulted in at start for the SQLite page caches (infra/memory.py);
    # 0 (the default outside `from_env`, e.g. in tests) reserves none.
    reserve_cache_mib: int = 0
    # -- channel adapters --
    smtp_host: str = "127.0.0.1"
    smtp_port: int | None = None  # the inbound SMTP listener; None: not started
    smtp_max_bytes: int = 10_485_760
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    twilio_api_base: str | None = None  # None: https://api.twilio.com
    slack_api_base: str | None = None  # None: https://slack.com/api/
    meta_graph_base: str = "https://graph.facebook.com/v21.0"
    provider_timeout_s: int = 10
    webchat_connects_per_minute: int = 30  # per visitor IP
    webchat_messages_per_minute: int = 60  # per visitor IP
    # Scaled mode: Kafka as the event bus (needs PostgreSQL). See docs/scaled.md.
    kafka_bootstrap: str | None = None
    kafka_topic_prefix: str = "contact-centre"
    kafka_partitions: int = 12
    kafka_replication_factor: int = 1
    kafka_session_timeout_ms: int = 10_000
    # -- outbound webhooks --
    # Private, loopback and link-local targets are refused unless inside one of these
    # (e.g. 127.0.0.1/32 for a receiver on this machine); plain http only to them.
    webhook_allowed_networks: tuple[str, ...] = ()
    webhook_connect_timeout_s: int = 5
    webhook_read_timeout_s: int = 15
    webhook_log_days: int = 30  # attempts and settled deliveries are kept this long
    webhook_interval_ms: int = 200  # the dispatcher looks for due deliveries this often
    webhook_concurrency: int = 64  # requests in flight at once
    # where the webhook dispatcher runs: "inline" (a thread of this process), "process"
    # (serve starts `contact-centre webhooks dispatch` beside it: the HTTP client gets a
    # core of its own) or "off" (run that command yourself). The environment's default
    # is "process"; a Settings built in code (tests) dispatches inline.
    webhook_dispatcher: str = "inline"
    import_max_lines: int = 100_000  # lines of one NDJSON contact import
    # where embedded serve applies events to the read models: "inline" (its own threads)
    # or "process" (serve starts `contact-centre projections follow` beside it and waits
    # on its reports). The environment's default is "process"; a Settings built in code
    # (tests) and commands other than serve and demo apply them inline; with Kafka the
    # projection workers do.
    projections: str = "inline"

    @property
    def is_scaled(self) -> bool:
        return bool(self.database_url)

    @property
    def uses_kafka(self) -> bool:
        """Projections and workflows run in Kafka workers, not in this process."""
        return bool(self.kafka_bootstrap)

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get("CC_DATABASE_URL") or None
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("CC_DATABASE_URL must be a postgresql:// URL")
        bootstrap = env.get("CC_KAFKA_BOOTSTRAP") or None
        if bootstrap and not url:
            raise ConfigError("CC_KAFKA_BOOTSTRAP needs CC_DATABASE_URL (scaled mode)")
        prefix = env.get("CC_KAFKA_TOPIC_PREFIX") or "contact-centre"
        if not _TOPIC_PREFIX.fullmatch(prefix):
            raise ConfigError("CC_KAFKA_TOPIC_PREFIX may hold only letters, digits, '.', '_', '-'")
        return cls(
            data_dir=Path(env.get("CC_DATA_DIR") or "var"),
            database_url=url,
            master_key=_master_key(env.get("CC_MASTER_KEY")),
            host=env.get("CC_HOST") or "127.0.0.1",
            port=_int(env, "CC_PORT", 8080),
            public_base_url=env.get("CC_PUBLIC_BASE_URL") or None,
            max_body_bytes=_int(env, "CC_MAX_BODY_BYTES", 1_048_576, minimum=1024),
            writer_batch=_int(env, "CC_WRITER_BATCH", 256, minimum=1),
            writer_queue=_int(env, "CC_WRITER_QUEUE", 20_000, minimum=1),
            log_level=(env.get("CC_LOG_LEVEL") or "INFO").upper(),
            projection_wait_ms=_int(env, "CC_PROJECTION_WAIT_MS", 2_000),
            retention_interval_seconds=_int(env, "CC_RETENTION_INTERVAL_SECONDS", 3_600),
            reserve_cache_mib=_int(env, "CC_RESERVE_CACHE_MIB", RESERVE_CACHE_MIB),
            smtp_host=env.get("CC_SMTP_HOST") or "127.0.0.1",
            smtp_port=_optional_port(env, "CC_SMTP_PORT"),
            smtp_max_bytes=_int(env, "CC_SMTP_MAX_BYTES", 10_485_760, minimum=1024),
            trusted_proxies=_networks(env.get("CC_TRUSTED_PROXIES") or ""),
            twilio_api_base=env.get("CC_TWILIO_API_BASE") or None,
            slack_api_base=env.get("CC_SLACK_API_BASE") or None,
            meta_graph_base=env.get("CC_META_GRAPH_BASE") or "https://graph.facebook.com/v21.0",
            provider_timeout_s=_int(env, "CC_PROVIDER_TIMEOUT_S", 10, minimum=1),
            webchat_connects_per_minute=_int(env, "CC_WEBCHAT_CONNECTS_PER_MINUTE", 30, minimum=1),
            webchat_messages_per_minute=_int(env, "CC_WEBCHAT_MESSAGES_PER_MINUTE", 60, minimum=1),
            kafka_bootstrap=bootstrap,
            kafka_topic_prefix=prefix,
            kafka_partitions=_int(env, "CC_KAFKA_PARTITIONS", 12, minimum=1),
            kafka_replication_factor=_int(env, "CC_KAFKA_REPLICATION_FACTOR", 1, minimum=1),
            kafka_session_timeout_ms=_int(
                env, "CC_KAFKA_SESSION_TIMEOUT_MS", 10_000, minimum=1_000
            ),
            webhook_allowed_networks=_networks(
                env.get("CC_WEBHOOK_ALLOWED_NETWORKS") or "", "CC_WEBHOOK_ALLOWED_NETWORKS"
            ),
            webhook_connect_timeout_s=_int(env, "CC_WEBHOOK_CONNECT_TIMEOUT_S", 5, minimum=1),
            webhook_read_timeout_s=_int(env, "CC_WEBHOOK_READ_TIMEOUT_S", 15, minimum=1),
            webhook_log_days=_int(env, "CC_WEBHOOK_LOG_DAYS", 30, minimum=1),
            webhook_interval_ms=_int(env, "CC_WEBHOOK_INTERVAL_MS", 200, minimum=10),
            webhook_concurrency=_int(env, "CC_WEBHOOK_CONCURRENCY", 64, minimum=1),
            webhook_dispatcher=_dispatcher(env.get("CC_WEBHOOK_DISPATCHER") or "process"),
            import_max_lines=_int(env, "CC_IMPORT_MAX_LINES", 100_000, minimum=1),
            projections=_projections(env.get("CC_PROJECTIONS") or "process"),
        )


@dataclass(frozen=True)
class TestServices:
    """Existing servers the test suite may use instead of starting its own."""

    postgres_url: str | None = None
    kafka_bootstrap: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TestServices:
        env = os.environ if env is None else env
        return cls(
            postgres_url=env.get("CC_TEST_POSTGRES_URL") or None,
            kafka_bootstrap=env.get("CC_TEST_KAFKA_BOOTSTRAP") or None,
        )
