"""A provision canceled while its node works leaves nothing behind: no reservation held, no
address, and the node is told to remove the machine (again, if its late reply comes)."""

from __future__ import annotations

from typing import Any

from headnode.services import jobs as job_service
from headnode.services import machines as svc
from headnode.services import networks
from headnode.store.models import Nic, Reservation
from tests.unit.headnode.services.conftest import count, server_row
from tests.unit.workflows.conftest import RecordingTransport, batch, get_job, get_machine, ok, pump
from workflows.engine import Engine

CALLER = {"type": "operator"}


def room(ctx: Any, server_uuid: str) -> tuple[int, ...]:
    s = server_row(ctx, server_uuid)
    return (s.ram_inflight_mb, s.disk_inflight_mb, s.cpu_inflight, s.ram_committed_mb,
            s.disk_committed_mb, s.machine_count)


def test_canceled_provision_releases_everything(ctx: Any, engine: Engine,
                                                transport: RecordingTransport,
                                                fleet: dict[str, Any]) -> None:
    networks.create_network(ctx, {"name": "external", "subnet": "10.66.0.0/24",
                                  "gateway": "10.66.0.1"})
    server_uuid = fleet["server"].uuid
    before = room(ctx, server_uuid)
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64"}, CALLER)
    assert created["ips"] and count(ctx, Nic) == 1
    assert room(ctx, server_uuid) != before
    engine.run_step(created["job_uuid"], 1)
    pump(engine, transport)
    server, op, params, reply = transport.agent.popleft()  # ensure_image + create, in flight

    job_service.cancel_job(ctx, created["job_uuid"], CALLER)
    assert engine.cancel(created["job_uuid"]) is True
    job = get_job(ctx, created["job_uuid"])
    assert job.execution == "canceled"
    assert [e["name"] for e in job.onerror_results] == [
        "remove_from_node", "release_reservation", "release_nics", "mark_failed"]
    assert all(e["error"] is None for e in job.onerror_results)
    destroy = ("raw", f"cn.{server_uuid}", "agent.machine_destroy",
               [server_uuid, {"uuid": created["uuid"]}, None])
    assert [m for m in transport.sent if m[0] == "raw"] == [destroy]
    assert room(ctx, server_uuid) == before
    assert count(ctx, Nic) == 0
    with ctx.read() as session:
        reservation = session.get(Reservation, created["uuid"])
        assert reservation is not None and reservation.state == "released"
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "failed" and machine.job_uuid is None

    # The node created the machine after the destroy was sent: its reply sends another.
    engine.on_agent_reply(reply, batch(ok({}, server),
                                       ok({"machine": {"uuid": created["uuid"],
                                                       "state": "running"}}, server)))
    pump(engine, transport)
    assert [m for m in transport.sent if m[0] == "raw"] == [destroy, destroy]
    assert get_machine(ctx, created["uuid"]).state == "failed"
    assert get_job(ctx, created["job_uuid"]).execution == "canceled"
    assert room(ctx, server_uuid) == before


def test_canceled_queued_rename_gives_the_old_name_back(ctx: Any, engine: Engine,
                                                        transport: RecordingTransport,
                                                        fleet: dict[str, Any]) -> None:
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64", "alias": "web"}, CALLER)
    engine.run_step(created["job_uuid"], 1)
    pump(engine, transport)
    server, _, _, reply = transport.agent.popleft()
    engine.on_agent_reply(reply, batch(ok({}, server), ok(
        {"machine": {"uuid": created["uuid"], "state": "running"}}, server)))
    assert get_job(ctx, created["job_uuid"]).execution == "succeeded"

    renamed = svc.rename_machine(ctx, created["uuid"], "db", CALLER)
    assert get_machine(ctx, created["uuid"]).alias == "db"  # the request holds the name
    job_service.cancel_job(ctx, renamed["job_uuid"], CALLER)
    engine.run_step(renamed["job_uuid"], 1)  # the job's first message stops it
    job = get_job(ctx, renamed["job_uuid"])
    assert job.execution == "canceled" and job.chain_results == []
    assert [e["name"] for e in job.onerror_results] == ["restore_alias"]
    machine = get_machine(ctx, created["uuid"])
    assert machine.alias == "web" and machine.state == "running" and machine.job_uuid is None
    assert not transport.agent  # the node was never asked

    # a queued destroy stops before the node is asked; the machine stays as it was
    destroy = svc.destroy_machine(ctx, created["uuid"], CALLER)
    job_service.cancel_job(ctx, destroy["job_uuid"], CALLER)
    assert engine.cancel(destroy["job_uuid"]) is True
    assert get_job(ctx, destroy["job_uuid"]).execution == "canceled"
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "running" and machine.job_uuid is None
    assert not transport.agent
