"""The operator's privacy commands, run as the real `contact-centre` process against the
same stores as a running instance: retention runs (and dry runs), tenant termination,
reactivation and certificate, legal holds on a terminated tenant, audit verification."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

from contact_centre.interaction import Channel, IdentityKind
from infra.config import Settings
from infra.runtime import Runtime
from tests.helpers import Api
from tests.privacy.support import T0, World, months


def cli(settings: Settings, *args: str) -> tuple[int, Any, str]:
    """Run ``contact-centre ARGS``; its exit code, its stdout (as JSON when it is) and
    its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_")}
    env["CC_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        assert settings.master_key is not None
        env["CC_DATABASE_URL"] = settings.database_url
        env["CC_MASTER_KEY"] = base64.b64encode(settings.master_key).decode()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        out: Any = json.loads(done.stdout)
    except ValueError:
        out = done.stdout
    return done.returncode, out, done.stderr


def iso(moment: datetime) -> str:
    return moment.isoformat()


def test_a_retention_dry_run_lists_what_would_go_then_the_run_erases_it(
    world: World, settings: Settings
) -> None:
    result = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-77", "hello from the web")
    scope = f"conversation:{result.conversation_id}"
    later = iso(T0 + months(7))
    code, dry, err = cli(settings, "retention", "run", "--dry-run", "--quiet", "--at", later)
    assert code == 0, err
    assert dry["dry_run"] is True
    [would] = [a for a in dry["would"] if a["scope_id"] == scope]
    assert (would["category"], would["rule"]) == ("chat_visitor", "retention:chat_visitor")
    world.rt.vault.refresh()
    assert world.readable(scope)  # a dry run changes nothing
    code, summary, err = cli(settings, "retention", "run", "--quiet", "--at", later)
    assert code == 0, err
    assert summary["dry_run"] is False
    assert summary["actions"]["erase:chat_visitor"] >= 1
    assert summary["keys_destroyed"] >= 1
    world.rt.vault.refresh()
    world.rt.catch_up()
    assert not world.readable(scope)
    assert world.scope_status(scope) == "erased"
    # a second run finds nothing more to do
    code, again, err = cli(settings, "retention", "run", "--quiet", "--at", later)
    assert (code, again["keys_destroyed"]) == (0, 0), err


def test_a_tenant_is_terminated_reactivated_and_purged_from_the_command_line(
    world: World, settings: Settings
) -> None:
    world.message(Channel.SMS, IdentityKind.PHONE, "+447700900901", "hi")
    tenant = str(world.tenant)
    code, out, err = cli(settings, "tenant", "terminate", tenant, "--grace-days", "5")
    assert code == 0, err
    assert out["status"] == "terminated"
    code, out, err = cli(settings, "tenant", "reactivate", tenant)
    assert (code, out["status"], out["purge_after"]) == (0, "active", None), err
    code, out, err = cli(settings, "tenant", "terminate", tenant, "--grace-days", "0")
    assert code == 0, err
    code, _, err = cli(settings, "tenant", "certificate", tenant)
    assert (code, err.strip()) == (1, "contact-centre: the tenant has not been purged")
    soon = iso(datetime.fromisoformat(out["purge_after"]) + timedelta(seconds=1))
    code, summary, err = cli(settings, "retention", "run", "--quiet", "--at", soon)
    assert code == 0, err
    assert summary["actions"]["purge-tenant:tenant"] == 1
    code, certificate, err = cli(settings, "tenant", "certificate", tenant)
    assert code == 0, err
    assert (certificate["tenant_id"], certificate["rule"]) == (tenant, "tenant_terminated")
    assert certificate["keys_destroyed"] >= 3
    assert "+447700900901" not in json.dumps(certificate)
    code, _, err = cli(settings, "tenant", "reactivate", tenant)
    assert (code, err.strip()) == (
        1,
        "contact-centre: the tenant has been purged: nothing is left to reactivate",
    )


def test_an_operator_hold_on_a_terminated_tenant_postpones_its_purge_until_released(
    world: World, settings: Settings
) -> None:
    result = world.message(Channel.EMAIL, IdentityKind.EMAIL, "dispute@example.org", "invoice")
    tenant = str(world.tenant)
    assert cli(settings, "tenant", "terminate", tenant)[0] == 0
    code, hold, err = cli(
        settings,
        "hold",
        "place",
        tenant,
        "contact",
        str(result.contact_id),
        "--reason",
        "court order 12/2026",
        "--by",
        "legal",
    )
    assert code == 0, err
    code, listing, err = cli(settings, "hold", "list", tenant)
    [listed] = listing["items"]
    assert (listed["hold_id"], listed["placed_by"]) == (hold["hold_id"], "operator:legal")
    later = iso(datetime.now().astimezone() + timedelta(days=1))
    code, summary, err = cli(settings, "retention", "run", "--quiet", "--at", later)
    assert code == 0, err
    assert "purge-tenant:tenant" not in summary["actions"]
    assert summary["held_scopes_kept"] >= 1 or summary["keys_destroyed"] == 0
    assert cli(settings, "hold", "release", tenant, hold["hold_id"])[0] == 0
    code, summary, err = cli(settings, "retention", "run", "--quiet", "--at", later)
    assert (code, summary["actions"].get("purge-tenant:tenant")) == (0, 1), err
    code, listing, err = cli(settings, "hold", "list", tenant)
    assert (code, listing["items"]) == (0, []), err  # the purge took the holds' rows too


async def test_audit_verify_passes_then_names_the_tampered_entry(
    api: Api, runtime: Runtime, settings: Settings
) -> None:
    contact = (await api.receive())["contact_id"]
    for _ in range(3):
        assert (await api.get(f"/v1/contacts/{contact}"))[0] == 200
    code, out, err = cli(settings, "audit", "verify")
    assert code == 0, err
    assert (out["ok"], out["tenants"]) == (True, 1)
    assert out["entries"] >= 3
    with runtime.audit.db.transaction() as tx:
        tx.execute(
            "UPDATE cc_audit SET endpoint = 'GET /elsewhere' WHERE tenant_id = ? AND seq = 2",
            (str(api.tenant_id),),
        )
    code, out, err = cli(settings, "audit", "verify", "--tenant", str(api.tenant_id))
    assert code == 1
    assert out["broken"] == [{"tenant_id": str(api.tenant_id), "at_seq": 2}]
