"""The real machine workflows driven through the engine, agent steps answered by hand."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import machines as svc
from headnode.store.models import Reservation
from tests.unit.headnode.services.conftest import server_row
from tests.unit.workflows.conftest import (
    RecordingTransport,
    batch,
    failed,
    get_job,
    get_machine,
    ok,
    pump,
)
from workflows.engine import Engine

CALLER = {"type": "operator"}


def reservation(ctx: Any, machine_uuid: str) -> Reservation:
    with ctx.read() as session:
        res = session.get(Reservation, machine_uuid)
        assert res is not None
        return res


def next_agent_call(engine: Engine, transport: RecordingTransport) -> tuple[Any, ...]:
    pump(engine, transport)
    assert transport.agent, "the job is not waiting for an agent"
    return transport.agent.popleft()


def machine_result(uuid: str, state: str) -> dict[str, Any]:
    return {"machine": {"uuid": uuid, "state": state}}


def provision(ctx: Any, engine: Engine, transport: RecordingTransport,
              fleet: dict[str, Any], **body: Any) -> dict[str, Any]:
    """Create a machine through the service and run its job to success."""
    machine = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64", **body}, CALLER)
    engine.run_step(machine["job_uuid"], 1)
    server, op, params, reply = next_agent_call(engine, transport)
    # ensure_image and create_machine travel together, in one message
    assert (server, op, reply["batch"]) == (machine["server_uuid"], "batch", 2)
    (ensure_op, image), (create_op, spec) = ((o["op"], o["params"]) for o in params["ops"])
    assert ensure_op == "image_ensure_present" and image["image"]["name"] == "base-64"
    assert image["image"]["uuid"] == fleet["image"].uuid
    assert create_op == "machine_create"
    assert spec["uuid"] == machine["uuid"] and spec["ram_mb"] == 1024
    assert spec["disk_mb"] == 10240 and spec["image_uuid"] == fleet["image"].uuid
    engine.on_agent_reply(reply, batch(ok({"image": image["image"]["uuid"]}, server),
                                       ok(machine_result(machine["uuid"], "running"), server)))
    pump(engine, transport)
    assert not transport.agent
    return machine


def run_action(ctx: Any, engine: Engine, transport: RecordingTransport, machine_uuid: str,
               action: str, answer_state: str) -> str:
    job_uuid = (svc.destroy_machine(ctx, machine_uuid, CALLER) if action == "destroy"
                else svc.machine_action(ctx, machine_uuid, action, CALLER))["job_uuid"]
    engine.run_step(job_uuid, 1)
    server, op, params, reply = next_agent_call(engine, transport)
    assert op == f"machine_{action}" and params == {"uuid": machine_uuid}
    engine.on_agent_reply(reply, ok(machine_result(machine_uuid, answer_state), server))
    pump(engine, transport)
    return str(job_uuid)


def test_provision_succeeds(ctx: Any, engine: Engine, transport: RecordingTransport,
                            fleet: dict[str, Any]) -> None:
    created = provision(ctx, engine, transport, fleet, alias="web")
    job = get_job(ctx, created["job_uuid"])
    assert job.execution == "succeeded", job.chain_results
    assert [e["name"] for e in job.chain_results] == [
        "validate", "ensure_image", "create_machine", "commit_usage"]
    assert all(e["error"] is None and e["finished_at"] for e in job.chain_results)
    assert job.chain_results[2]["result"] == {"state": "running"}
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "running" and machine.job_uuid is None
    assert reservation(ctx, created["uuid"]).state == "committed"
    server = server_row(ctx, fleet["server"].uuid)
    assert (server.ram_committed_mb, server.disk_committed_mb, server.cpu_committed) == (
        1024, 10240, 100)
    assert (server.ram_inflight_mb, server.disk_inflight_mb, server.cpu_inflight) == (0, 0, 0)
    assert server.machine_count == 1
    assert not any(m[0] == "raw" for m in transport.sent)


def test_provision_fails_at_create_and_cleans_up(ctx: Any, engine: Engine,
                                                 transport: RecordingTransport,
                                                 fleet: dict[str, Any]) -> None:
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64"}, CALLER)
    server_uuid = created["server_uuid"]
    engine.run_step(created["job_uuid"], 1)
    *_, reply = next_agent_call(engine, transport)
    engine.on_agent_reply(reply, batch(ok({}, server_uuid),
                                       failed("CreateFailed", "no room in the pool")))
    # retries=1: the second try sends create_machine alone (the image is there)
    _, op, _, reply = next_agent_call(engine, transport)
    assert op == "machine_create"
    engine.on_agent_reply(reply, failed("CreateFailed", "still no room"))
    pump(engine, transport)
    assert not transport.agent

    job = get_job(ctx, created["job_uuid"])
    assert job.execution == "failed"
    assert job.error == {"step": "create_machine", "code": "CreateFailed",
                         "message": "still no room"}
    assert [e["name"] for e in job.onerror_results] == [
        "remove_from_node", "release_reservation", "release_nics", "mark_failed"]
    assert all(e["error"] is None for e in job.onerror_results)
    assert job.onerror_results[1]["result"] == {"released": True}
    raw = [m for m in transport.sent if m[0] == "raw"]
    assert raw == [("raw", f"cn.{server_uuid}", "agent.machine_destroy",
                    [server_uuid, {"uuid": created["uuid"]}, None])]

    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "failed" and machine.job_uuid is None
    assert reservation(ctx, created["uuid"]).state == "released"
    server = server_row(ctx, server_uuid)
    assert (server.ram_inflight_mb, server.disk_inflight_mb, server.cpu_inflight) == (0, 0, 0)
    assert (server.ram_committed_mb, server.machine_count) == (0, 0)


def test_provision_when_the_node_reports_failed(ctx: Any, engine: Engine,
                                                transport: RecordingTransport,
                                                fleet: dict[str, Any]) -> None:
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64"}, CALLER)
    engine.run_step(created["job_uuid"], 1)
    reported_failed = ok(machine_result(created["uuid"], "failed"))
    *_, reply = next_agent_call(engine, transport)
    engine.on_agent_reply(reply, batch(ok({}), reported_failed))
    *_, reply = next_agent_call(engine, transport)  # create_machine's retry
    engine.on_agent_reply(reply, reported_failed)
    pump(engine, transport)
    job = get_job(ctx, created["job_uuid"])
    assert job.execution == "failed" and job.error is not None
    assert job.error["code"] == "ProvisionFailed"
    assert get_machine(ctx, created["uuid"]).state == "failed"
    assert server_row(ctx, created["server_uuid"]).machine_count == 0


@pytest.mark.parametrize(("action", "reported"), [
    ("stop", "stopped"), ("reboot", "running"),
])
def test_actions_record_the_node_state(ctx: Any, engine: Engine,
                                       transport: RecordingTransport, fleet: dict[str, Any],
                                       action: str, reported: str) -> None:
    created = provision(ctx, engine, transport, fleet)
    job_uuid = run_action(ctx, engine, transport, created["uuid"], action, reported)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded" and job.chain_results[0]["result"] == {
        "state": reported}
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == reported and machine.job_uuid is None


def test_stop_then_start(ctx: Any, engine: Engine, transport: RecordingTransport,
                         fleet: dict[str, Any]) -> None:
    created = provision(ctx, engine, transport, fleet)
    run_action(ctx, engine, transport, created["uuid"], "stop", "stopped")
    assert get_machine(ctx, created["uuid"]).state == "stopped"
    job_uuid = run_action(ctx, engine, transport, created["uuid"], "start", "running")
    assert get_job(ctx, job_uuid).execution == "succeeded"
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "running" and machine.job_uuid is None
    # usage is untouched by start and stop
    assert server_row(ctx, fleet["server"].uuid).ram_committed_mb == 1024


def test_failed_action_releases_the_lock_and_keeps_the_state(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any]) -> None:
    created = provision(ctx, engine, transport, fleet)
    job_uuid = svc.machine_action(ctx, created["uuid"], "stop", CALLER)["job_uuid"]
    engine.run_step(job_uuid, 1)
    *_, reply = next_agent_call(engine, transport)
    engine.on_agent_reply(reply, failed("StopFailed", "zone busy"))
    pump(engine, transport)
    assert get_job(ctx, job_uuid).execution == "failed"
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "running" and machine.job_uuid is None


def test_destroy_releases_committed_usage(ctx: Any, engine: Engine,
                                          transport: RecordingTransport,
                                          fleet: dict[str, Any]) -> None:
    created = provision(ctx, engine, transport, fleet)
    job_uuid = run_action(ctx, engine, transport, created["uuid"], "destroy", "destroyed")
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded"
    assert [e["name"] for e in job.chain_results] == [
        "destroy_machine", "release_holdings", "mark_destroyed"]
    assert job.chain_results[1]["result"] == {"reservation": True, "nics": 0}
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "destroyed" and machine.destroyed_at is not None
    assert machine.job_uuid is None
    assert reservation(ctx, created["uuid"]).state == "released"
    server = server_row(ctx, fleet["server"].uuid)
    assert (server.ram_committed_mb, server.disk_committed_mb, server.cpu_committed) == (
        0, 0, 0)
    assert server.machine_count == 0
    assert svc.list_machines(ctx)[1] == 0


def test_destroy_of_a_failed_machine_releases_nothing_twice(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any]) -> None:
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64"}, CALLER)
    engine.run_step(created["job_uuid"], 1)
    for _ in range(2):  # ensure_image fails twice; the node stops each batch there
        _, op, _, reply = next_agent_call(engine, transport)
        assert op == "batch"
        engine.on_agent_reply(reply, batch(failed("ImportFailed", "no image")))
    pump(engine, transport)
    assert get_machine(ctx, created["uuid"]).state == "failed"
    job_uuid = run_action(ctx, engine, transport, created["uuid"], "destroy", "destroyed")
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded" and job.chain_results[1]["result"] == {
        "reservation": False, "nics": 0}
    assert get_machine(ctx, created["uuid"]).state == "destroyed"
    server = server_row(ctx, fleet["server"].uuid)
    assert (server.machine_count, server.ram_inflight_mb, server.ram_committed_mb) == (0, 0, 0)


def test_destroy_refused_by_the_node_keeps_everything(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any]) -> None:
    created = provision(ctx, engine, transport, fleet)
    job_uuid = svc.destroy_machine(ctx, created["uuid"], CALLER)["job_uuid"]
    engine.run_step(job_uuid, 1)
    for _ in range(2):  # retries=1
        *_, reply = next_agent_call(engine, transport)
        engine.on_agent_reply(reply, ok(machine_result(created["uuid"], "running")))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed" and job.error is not None
    assert job.error["code"] == "DestroyFailed"
    machine = get_machine(ctx, created["uuid"])
    assert machine.state == "running" and machine.job_uuid is None
    assert server_row(ctx, fleet["server"].uuid).ram_committed_mb == 1024
    assert reservation(ctx, created["uuid"]).state == "committed"
