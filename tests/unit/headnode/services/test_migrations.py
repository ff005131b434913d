"""The migration service's refusals and reads (headnode/services/migrations.py) on the real
PostgreSQL: who may migrate, which action may start when, where the target may be, the
estimate, and the shapes. The phases' jobs: tests/unit/workflows/test_migration_*.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from headnode.services import migrations as svc
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InsufficientCapacity, InvalidArgument, NotFound
from headnode.store.models import Job, Migration
from tests.unit.headnode.services.conftest import (
    count,
    make_account,
    make_machine,
    make_server,
    server_row,
)

OPERATOR = {"type": "operator"}
TENANT = {"type": "account", "login": "alice", "operator": False}


@pytest.fixture
def machine(ctx: Any, fleet: dict[str, Any]) -> Any:
    return make_machine(ctx, fleet, cpu_cap=100)


def allowing_tenants(ctx: Any) -> ServiceContext:
    settings = dataclasses.replace(ctx.settings, user_migration_allowed=True)
    return ServiceContext(settings, jobs=ctx.jobs, _sessions=ctx.sessions)


def test_tenants_may_migrate_only_when_the_operator_allows(
        ctx: Any, fleet: dict[str, Any], machine: Any) -> None:
    target = make_server(ctx, hostname="cn2")
    owner = fleet["owner"].uuid
    with pytest.raises(svc.MigrationNotAllowed) as refused:
        svc.migrate(ctx, machine.uuid, "begin", caller=TENANT, owner_uuid=owner)
    assert (refused.value.status, refused.value.code) == (403, "NotAuthorized")
    assert count(ctx, Migration) == count(ctx, Job) == 0
    # another's machine is not there at all
    other = make_account(ctx, login="bob").uuid
    with pytest.raises(NotFound):
        svc.migrate(allowing_tenants(ctx), machine.uuid, "begin", caller=TENANT,
                    owner_uuid=other)
    started = svc.migrate(allowing_tenants(ctx), machine.uuid, "begin", caller=TENANT,
                          owner_uuid=owner)
    assert started["target_server_uuid"] == target.uuid and started["job_uuid"]
    assert started["state"] == "running" and started["phase"] == "begin"
    assert ctx.jobs.enqueued == [started["job_uuid"]]
    # the machine's size is held on the target, in flight
    row = server_row(ctx, target.uuid)
    assert (row.ram_inflight_mb, row.disk_inflight_mb, row.cpu_inflight) == (1024, 10240, 100)


def test_actions_refused_out_of_order(ctx: Any, fleet: dict[str, Any], machine: Any) -> None:
    make_server(ctx, hostname="cn2")
    with pytest.raises(InvalidArgument) as bad:
        svc.migrate(ctx, machine.uuid, "teleport", caller=OPERATOR)
    assert bad.value.field == "action"
    with pytest.raises(InvalidArgument) as bad:
        svc.migrate(ctx, machine.uuid, "sync", caller=OPERATOR,
                    target_server=fleet["server"].uuid)
    assert bad.value.field == "target_server"
    with pytest.raises(Conflict) as refused:
        svc.migrate(ctx, machine.uuid, "sync", caller=OPERATOR)
    assert refused.value.code == "InvalidState" and "no migration" in refused.value.message

    started = svc.migrate(ctx, machine.uuid, "begin", caller=OPERATOR)
    with pytest.raises(Conflict) as refused:  # its own job still holds the machine
        svc.migrate(ctx, machine.uuid, "sync", caller=OPERATOR)
    assert refused.value.code == "MachineBusy"
    with ctx.transaction() as session:  # as the begin job leaves it
        session.get(type(machine), machine.uuid).job_uuid = None
        session.get(Migration, started["uuid"]).state = "paused"
    for action, why in (("switch", "sync first"), ("finalize", "follows a switch"),
                        ("rollback", "follows a switch"), ("begin", "or abort it first")):
        with pytest.raises(Conflict) as refused:
            svc.migrate(ctx, machine.uuid, action, caller=OPERATOR)
        assert refused.value.code == "InvalidState" and why in refused.value.message, action
    aborted = svc.migrate(ctx, machine.uuid, "abort", caller=OPERATOR)
    assert (aborted["uuid"], aborted["phase"], aborted["state"]) == (
        started["uuid"], "abort", "running")


def test_the_target_is_placed_without_the_source(ctx: Any, fleet: dict[str, Any],
                                                 machine: Any) -> None:
    source = fleet["server"].uuid
    with pytest.raises(InsufficientCapacity):  # no other server
        svc.migrate(ctx, machine.uuid, "begin", caller=OPERATOR)
    with pytest.raises(InvalidArgument) as bad:
        svc.migrate(ctx, machine.uuid, "begin", caller=OPERATOR, target_server=source)
    assert "own server" in bad.value.message
    with pytest.raises(InvalidArgument):
        svc.migrate(ctx, machine.uuid, "begin", caller=OPERATOR,
                    target_server="00000000-0000-4000-8000-000000000000")
    small = make_server(ctx, hostname="small", ram_mb=512)
    busy = make_server(ctx, hostname="busy", maintenance=True)
    for named in (small, busy):  # placement still checks a named server
        with pytest.raises(InsufficientCapacity):
            svc.migrate(ctx, machine.uuid, "begin", caller=OPERATOR, target_server=named.uuid)
    assert count(ctx, Migration) == 0
    assert server_row(ctx, small.uuid).ram_inflight_mb == 0
    fits = make_server(ctx, hostname="fits")
    started = svc.migrate(ctx, machine.uuid, "automatic", caller=OPERATOR,
                          target_server=fits.uuid)
    assert started["target_server_uuid"] == fits.uuid and started["automatic"] is True


def test_estimate_list_get_and_shapes(ctx: Any, fleet: dict[str, Any], machine: Any) -> None:
    make_server(ctx, hostname="cn2")
    guess = svc.estimate(ctx, machine.uuid)
    assert guess["size"] == 10240 * 1024 * 1024
    assert guess["transfer_bytes_second"] == 100 * 1024 * 1024
    assert guess["eta_ms"] == 102_400
    with pytest.raises(NotFound):
        svc.get_migration(ctx, machine.uuid)
    started = svc.migrate(ctx, machine.uuid, "begin", caller=OPERATOR)
    with ctx.transaction() as session:
        session.get(Migration, started["uuid"]).rate_bps = 50 * 1024 * 1024
    assert svc.estimate(ctx, machine.uuid)["eta_ms"] == 204_800
    m = svc.get_migration(ctx, machine.uuid, owner_uuid=fleet["owner"].uuid)
    assert m.uuid == started["uuid"]
    assert svc.list_migrations(ctx, owner_uuid=make_account(ctx, login="bob").uuid) == []
    assert [x.uuid for x in svc.list_migrations(ctx, machine_uuid=machine.uuid)] == [m.uuid]
    shaped = svc.migration_to_cloudapi(m)
    assert {"machine", "state", "phase", "automatic", "progress_history",
            "created_timestamp", "finished_timestamp"} <= set(shaped)
    assert "source_server_uuid" not in shaped and "stream_token" not in shaped
    ops = svc.migration_to_ops(m)
    assert ops["source_server_uuid"] == fleet["server"].uuid
    assert {"target_server_uuid", "sent_bytes", "rate_bps", "downtime_ms", "error",
            "job_uuid"} <= set(ops)
    assert all("token" not in key for key in ops)


def test_a_machine_moves_by_the_affinity_rules_it_was_made_with(
        ctx: Any, fleet: dict[str, Any]) -> None:
    with_db = make_server(ctx, hostname="with-db")
    make_server(ctx, hostname="elsewhere")
    make_machine(ctx, fleet, alias="db", server_uuid=with_db.uuid)
    web = make_machine(ctx, fleet, alias="web", affinity=["instance==db"])
    started = svc.migrate(ctx, web.uuid, "begin", caller=OPERATOR)
    assert started["target_server_uuid"] == with_db.uuid
