"""Node events on the real PostgreSQL: registration, status reports (heartbeat liveness:
test_liveness.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from marshmallow import ValidationError

from headnode.placement.allocator import Policy
from headnode.services import capacity
from headnode.store.models import Machine, Reservation, Server, new_uuid
from tests.unit.headnode.services.conftest import count, make_machine, server_row
from tests.unit.workflows.conftest import get_machine
from workflows import nodes


def sysinfo(uuid: str, **overrides: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "UUID": uuid, "Hostname": "cn9", "SDC Backend": "sim", "CPU Total Cores": 8,
        "MiB of Memory": 32768, "Zpool Size in MiB": 500_000, "Traits": {},
        "Some Other Key": "kept in sysinfo",
    }
    info.update(overrides)
    return info


#: when the test's reports are taken: after every row the test writes
REPORT_TIME = 4_000_000_000.0


def status(server_uuid: str, machines: list[tuple[str, str]], **overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "server_uuid": server_uuid,
        "machines": [{"uuid": uuid, "state": state} for uuid, state in machines],
        "pool_size_mb": 500_000, "pool_used_mb": 1234, "ram_mb": 32768,
        "ram_free_mb": 20000, "timestamp": REPORT_TIME,
    }
    report.update(overrides)
    return report


def apply(ctx: Any, report: dict[str, Any]) -> int:
    with ctx.transaction() as session:
        return nodes.apply_status(session, report)


def committed_machine(ctx: Any, fleet: dict[str, Any], **overrides: Any) -> Machine:
    """A machine whose room on its server is committed usage, as after a provision."""
    machine = make_machine(ctx, fleet, **overrides)
    with ctx.transaction() as session:
        assert capacity.reserve(session, machine.server_uuid or "", machine.uuid, new_uuid(),
                                machine.ram_mb, machine.disk_mb, 0, Policy())
        assert capacity.commit(session, machine.uuid)
    return machine


# -- registration -----------------------------------------------------------------------------


def test_register_new_server(ctx: Any) -> None:
    uuid = new_uuid()
    before = time.time()
    with ctx.transaction() as session:
        nodes.register_server(session, sysinfo(uuid, Traits={"ssd": True}))
    server = server_row(ctx, uuid)
    assert (server.setup, server.reserved, server.headnode, server.status) == (
        False, False, False, "running")
    assert (server.hostname, server.backend, server.cpus, server.ram_mb, server.disk_mb) == (
        "cn9", "sim", 8, 32768, 500_000)
    assert server.traits == {"ssd": True}
    assert server.sysinfo["Some Other Key"] == "kept in sysinfo"
    assert server.last_heartbeat is not None and server.last_heartbeat >= before
    assert (server.ram_inflight_mb, server.machine_count) == (0, 0)


def test_register_again_updates_resources_only(ctx: Any, fleet: dict[str, Any]) -> None:
    uuid = fleet["server"].uuid
    committed_machine(ctx, fleet)
    with ctx.transaction() as session:
        server = session.get(Server, uuid)
        assert server is not None
        server.reserved = True
        server.traits = {"operator": "set"}
    with ctx.transaction() as session:
        nodes.register_server(session, sysinfo(uuid, Hostname="cn1-new", **{
            "MiB of Memory": 131072, "CPU Total Cores": 32, "Traits": {"node": "says"}}))
    server = server_row(ctx, uuid)
    assert (server.hostname, server.ram_mb, server.cpus) == ("cn1-new", 131072, 32)
    assert (server.setup, server.reserved) == (True, True)
    assert server.traits == {"operator": "set"}  # the operator's traits win
    assert (server.ram_committed_mb, server.machine_count) == (1024, 1)
    assert count(ctx, Server) == 1


def test_register_invalid_sysinfo(ctx: Any) -> None:
    with pytest.raises(ValidationError), ctx.transaction() as session:
        nodes.register_server(session, sysinfo(new_uuid(), **{"MiB of Memory": 0}))
    assert count(ctx, Server) == 0


# -- status reports ---------------------------------------------------------------------------


def test_node_state_wins_for_unlocked_machines(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    stopped_here = make_machine(ctx, fleet, alias="a", state="running")
    running_here = make_machine(ctx, fleet, alias="b", state="stopped")
    unknown_here = make_machine(ctx, fleet, alias="c", state="unknown",
                                last_known_state="running")
    same = make_machine(ctx, fleet, alias="d", state="running")
    report = status(server_uuid, [(stopped_here.uuid, "stopped"),
                                  (running_here.uuid, "running"),
                                  (unknown_here.uuid, "stopped"), (same.uuid, "running")])
    assert apply(ctx, report) == 3
    assert get_machine(ctx, stopped_here.uuid).state == "stopped"
    assert get_machine(ctx, running_here.uuid).state == "running"
    unknown = get_machine(ctx, unknown_here.uuid)
    assert unknown.state == "stopped" and unknown.last_known_state is None
    assert get_machine(ctx, same.uuid).state == "running"
    server = server_row(ctx, server_uuid)
    assert server.pool_used_mb == 1234
    assert server.last_status_at is not None
    assert server.last_status_at.timestamp() == REPORT_TIME
    assert apply(ctx, report) == 0  # nothing left to change


def test_locked_machines_are_left_to_their_job(ctx: Any, fleet: dict[str, Any]) -> None:
    busy = make_machine(ctx, fleet, alias="busy", state="running", job_uuid=new_uuid())
    busy_missing = committed_machine(ctx, fleet, alias="busy2", state="running",
                                     job_uuid=new_uuid())
    assert apply(ctx, status(fleet["server"].uuid, [(busy.uuid, "stopped")])) == 0
    assert get_machine(ctx, busy.uuid).state == "running"
    assert get_machine(ctx, busy_missing.uuid).state == "running"
    assert server_row(ctx, fleet["server"].uuid).machine_count == 1


def test_machine_missing_from_the_report_is_only_suspected(ctx: Any,
                                                          fleet: dict[str, Any]) -> None:
    # One report is not enough to destroy: the node is asked first (tests/unit/workflows/
    # test_node_truth.py follows the question to its answer).
    server_uuid = fleet["server"].uuid
    gone = committed_machine(ctx, fleet, alias="gone", state="running")
    kept = committed_machine(ctx, fleet, alias="kept", state="running")
    never = make_machine(ctx, fleet, alias="never", state="failed")
    provisioning = make_machine(ctx, fleet, alias="new", state="provisioning")

    assert apply(ctx, status(server_uuid, [(kept.uuid, "running")])) == 0
    machine = get_machine(ctx, gone.uuid)
    assert machine.state == "running" and machine.destroyed_at is None
    assert machine.missing_since is not None
    assert machine.missing_since.timestamp() == REPORT_TIME
    with ctx.read() as session:
        res = session.get(Reservation, gone.uuid)
        assert res is not None and res.state == "committed"
    assert server_row(ctx, server_uuid).machine_count == 2
    assert get_machine(ctx, kept.uuid).missing_since is None
    assert get_machine(ctx, never.uuid).missing_since is None
    assert get_machine(ctx, provisioning.uuid).state == "provisioning"


def test_a_report_older_than_our_news_changes_nothing(ctx: Any, fleet: dict[str, Any]) -> None:
    # taken before the provision that made this machine finished, processed after it
    machine = make_machine(ctx, fleet, alias="new", state="running")
    assert apply(ctx, status(fleet["server"].uuid, [], timestamp=time.time() - 5)) == 0
    assert get_machine(ctx, machine.uuid).state == "running"


def test_report_of_an_unknown_server_is_ignored(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet, state="running")
    assert apply(ctx, status(new_uuid(), [(machine.uuid, "stopped")])) == 0
    assert get_machine(ctx, machine.uuid).state == "running"
    assert count(ctx, Server) == 1


def test_machines_of_another_server_are_not_touched(ctx: Any, fleet: dict[str, Any]) -> None:
    from tests.unit.headnode.services.conftest import make_server

    other = make_server(ctx, hostname="cn2")
    elsewhere = make_machine(ctx, fleet, state="running", server_uuid=other.uuid)
    assert apply(ctx, status(fleet["server"].uuid, [])) == 0
    assert get_machine(ctx, elsewhere.uuid).state == "running"
