"""The directory: a tenant's API tokens, agents and queues, for listing in the API."""

from __future__ import annotations

from typing import Any

from contact_centre.staff import Agent, Queue, skills_satisfy
from contact_centre.tenancy import ApiToken
from projections.base import Projection, Tx, dumps, handles, loads, micros, sealed_text


class DirectoryProjection(Projection):
    name = "directory"
    version = 3
    tables = ("rm_tokens", "rm_agents", "rm_queues")
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_tokens ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, role TEXT NOT NULL, label TEXT NOT NULL,"
        " agent_id TEXT, issued_at BIGINT NOT NULL, revoked_at BIGINT)",
        "CREATE INDEX IF NOT EXISTS rm_tokens_tenant ON rm_tokens (tenant_id, issued_at)",
        "CREATE TABLE IF NOT EXISTS rm_agents ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT, email TEXT,"
        " skills TEXT NOT NULL, created_at BIGINT NOT NULL, erased INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS rm_agents_tenant ON rm_agents (tenant_id, created_at)",
        "CREATE TABLE IF NOT EXISTS rm_queues ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,"
        " channels TEXT NOT NULL, settings TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_queues_tenant ON rm_queues (tenant_id, created_at)",
    )

    @handles(ApiToken.Issued)
    def _token_issued(self, tx: Tx, e: ApiToken.Issued, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_tokens (id, tenant_id, role, label, agent_id, issued_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                e.role,
                e.label,
                str(e.agent_id) if e.agent_id else None,
                micros(e.at),
            ),
        )

    @handles(ApiToken.Revoked)
    def _token_revoked(self, tx: Tx, e: ApiToken.Revoked, position: int) -> None:
        tx.execute(
            "UPDATE rm_tokens SET revoked_at = ? WHERE id = ?", (micros(e.at), str(e.originator_id))
        )

    @handles(Agent.Created)
    def _agent_created(self, tx: Tx, e: Agent.Created, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_agents (id, tenant_id, name, email, skills, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                sealed_text(e.name),
                sealed_text(e.email),
                dumps(e.skills),
                micros(e.at),
            ),
        )

    @handles(Agent.SkillsChanged)
    def _agent_skills(self, tx: Tx, e: Agent.SkillsChanged, position: int) -> None:
        """Skills decide which queues an agent works, and so what it may see."""
        tx.execute(
            "UPDATE rm_agents SET skills = ? WHERE id = ?", (dumps(e.skills), str(e.originator_id))
        )

    @handles(Agent.Erased)
    def _agent_erased(self, tx: Tx, e: Agent.Erased, position: int) -> None:
        tx.execute(
            "UPDATE rm_agents SET name = NULL, email = NULL, erased = 1 WHERE id = ?",
            (str(e.originator_id),),
        )

    @handles(Queue.Created)
    def _queue_created(self, tx: Tx, e: Queue.Created, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_queues (id, tenant_id, name, channels, settings, created_at)"
            " VALUES (?, ?, ?, ?, '{}', ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.tenant_id), e.name, dumps(e.channels), micros(e.at)),
        )

    @handles(Queue.SettingsChanged)
    def _queue_settings(self, tx: Tx, e: Queue.SettingsChanged, position: int) -> None:
        tx.execute("SELECT settings FROM rm_queues WHERE id = ?", (str(e.originator_id),))
        row = tx.fetchone()
        if row is None:
            return
        settings = loads(row[0])
        settings.update(e.changes)
        tx.execute(
            "UPDATE rm_queues SET settings = ? WHERE id = ?",
            (dumps(settings), str(e.originator_id)),
        )


def list_tokens(tx: Tx, tenant_id: str) -> list[dict[str, Any]]:
    keys = ("id", "role", "label", "agent_id", "issued_at", "revoked_at")
    tx.execute(
        f"SELECT {', '.join(keys)} FROM rm_tokens WHERE tenant_id = ? ORDER BY issued_at, id",
        (tenant_id,),
    )
    return [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]


def list_agents(tx: Tx, tenant_id: str) -> list[dict[str, Any]]:
    keys = ("id", "name", "email", "skills", "created_at", "erased")
    tx.execute(
        f"SELECT {', '.join(keys)} FROM rm_agents WHERE tenant_id = ? ORDER BY created_at, id",
        (tenant_id,),
    )
    return [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]


def list_queues(tx: Tx, tenant_id: str) -> list[dict[str, Any]]:
    keys = ("id", "name", "channels", "settings", "created_at")
    tx.execute(
        f"SELECT {', '.join(keys)} FROM rm_queues WHERE tenant_id = ? ORDER BY created_at, id",
        (tenant_id,),
    )
    return [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]


def agent_queue_ids(tx: Tx, tenant_id: str, agent_id: str) -> list[str]:
    """The queues an agent works: those whose required skills it has (all, when none)."""
    tx.execute("SELECT skills FROM rm_agents WHERE tenant_id = ? AND id = ?", (tenant_id, agent_id))
    row = tx.fetchone()
    if row is None:
        return []
    skills = loads(row[0])
    tx.execute("SELECT id, settings FROM rm_queues WHERE tenant_id = ?", (tenant_id,))
    return sorted(
        str(queue_id)
        for queue_id, settings in tx.fetchall()
        if skills_satisfy(skills, loads(settings).get("required_skills", []))
    )
