"""Per-tenant channel settings as the webhooks read them (secrets stay sealed here)."""

from __future__ import annotations

from typing import Any

from contact_centre.channel_settings import ChannelSettings
from projections.base import Projection, Tx, dumps, handles, loads, micros, sealed_text


class ChannelSettingsProjection(Projection):
    name = "channel_settings"
    tables = ("rm_channel_settings",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_channel_settings ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, provider TEXT NOT NULL,"
        " settings TEXT NOT NULL, secrets TEXT, secret_fields TEXT NOT NULL,"
        " updated_at BIGINT NOT NULL)",
        "CREATE UNIQUE INDEX IF NOT EXISTS rm_channel_settings_provider"
        " ON rm_channel_settings (tenant_id, provider)",
    )

    @handles(ChannelSettings.Created)
    def _created(self, tx: Tx, e: ChannelSettings.Created, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_channel_settings (id, tenant_id, provider, settings, secrets,"
            " secret_fields, updated_at) VALUES (?, ?, ?, '{}', NULL, '[]', ?)"
            " ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.tenant_id), e.provider, micros(e.at)),
        )

    @handles(ChannelSettings.Configured)
    def _configured(self, tx: Tx, e: ChannelSettings.Configured, position: int) -> None:
        tx.execute(
            "UPDATE rm_channel_settings SET settings = ?, secrets = ?, secret_fields = ?,"
            " updated_at = ? WHERE id = ?",
            (
                dumps(e.settings),
                sealed_text(e.secrets),
                dumps(e.secret_fields),
                micros(e.at),
                str(e.originator_id),
            ),
        )


def get_settings(tx: Tx, tenant_id: str, provider: str) -> dict[str, Any] | None:
    """``{"settings", "secrets" (sealed text), "secret_fields", "updated_at"}`` or None."""
    tx.execute(
        "SELECT settings, secrets, secret_fields, updated_at FROM rm_channel_settings"
        " WHERE tenant_id = ? AND provider = ?",
        (tenant_id, provider),
    )
    row = tx.fetchone()
    if row is None:
        return None
    return {
        "settings": loads(row[0]),
        "secrets": row[1],
        "secret_fields": loads(row[2]),
        "updated_at": row[3],
    }
