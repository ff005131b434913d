"""NIC jobs (add_nic, remove_nic, update_nic) and a provision's NICs, started by their
services and driven through the real engine on PostgreSQL. A simulated node (the sim
backend, answering through the agent's own task runner) does what it is asked; failures are
answered by hand."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from sqlalchemy import select

from agents import tasks as agent_tasks
from agents.backends.sim import SimBackend
from headnode.services import jobs as job_svc
from headnode.services import machines as machine_svc
from headnode.services import networks as net_svc
from headnode.services import nics as svc
from headnode.services.errors import Conflict
from headnode.store.models import Machine, Network, Nic, Server
from tests.unit.workflows.conftest import RecordingTransport, failed, get_job, pump
from workflows.engine import Engine

CALLER = {"type": "operator"}


@pytest.fixture
def node(ctx: Any, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> SimBackend:
    """A simulated node for the fleet's server, registered as its agent would register it."""
    server_uuid = fleet["server"].uuid
    sim = SimBackend(server_uuid, "cn1", nic_tags={"external": None, "admin": None})
    monkeypatch.setitem(agent_tasks.registry, server_uuid, sim)
    with ctx.transaction() as session:
        server = session.get(Server, server_uuid)
        assert server is not None
        server.sysinfo = {"NIC Names": sorted(sim.nic_tags)}
    return sim


@pytest.fixture
def networks(ctx: Any) -> dict[str, Network]:
    return {
        "external": net_svc.create_network(ctx, {
            "name": "external", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
            "resolvers": ["10.88.0.1"], "routes": {"10.10.0.0/16": "10.88.0.5"}}),
        "internal": net_svc.create_network(ctx, {
            "name": "internal", "subnet": "10.99.0.0/24", "nic_tag": "admin", "vlan_id": 7,
            "mtu": 9000, "resolvers": ["10.99.0.2"], "provision_start_ip": "10.99.0.10",
            "provision_end_ip": "10.99.0.11"}),
    }


def run_on_node(engine: Engine, transport: RecordingTransport) -> None:
    """Deliver every step and have the node answer every agent call, until the jobs rest."""
    pump(engine, transport)
    while transport.agent:
        server, op, params, reply = transport.agent.popleft()
        engine.on_agent_reply(reply, agent_tasks.run_op(op, server, params))
        pump(engine, transport)


def answer_by_hand(engine: Engine, transport: RecordingTransport,
                   outcome: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Answer the one agent call the job waits for; returns its op and params."""
    pump(engine, transport)
    _server, op, params, reply = transport.agent.popleft()
    engine.on_agent_reply(reply, outcome)
    pump(engine, transport)
    return op, params


def provision(ctx: Any, engine: Engine, transport: RecordingTransport,
              networks: list[str], alias: str = "web") -> dict[str, Any]:
    machine = machine_svc.create_machine(ctx, {
        "owner": "alice", "package": "small", "image": "base-64", "alias": alias,
        "networks": networks}, CALLER)
    engine.run_step(machine["job_uuid"], 1)
    run_on_node(engine, transport)
    assert get_job(ctx, machine["job_uuid"]).execution == "succeeded"
    return machine


def rows(ctx: Any, machine_uuid: str) -> list[Nic]:
    with ctx.read() as session:
        return list(svc.list_nics(session, machine_uuid))


def lock_of(ctx: Any, machine_uuid: str) -> str | None:
    with ctx.read() as session:
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        return machine.job_uuid


def finish(ctx: Any, engine: Engine, transport: RecordingTransport, job_uuid: str) -> str:
    engine.run_step(job_uuid, 1)
    run_on_node(engine, transport)
    return get_job(ctx, job_uuid).execution


# -- provision ------------------------------------------------------------------------------


def test_a_provision_gives_the_node_its_nics_resolvers_and_routes(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external", "internal"])
    create = next(m for m in transport.sent if m[0] == "agent")[3]
    spec = next(o for o in create["ops"] if o["op"] == "machine_create")["params"]
    assert spec["resolvers"] == ["10.88.0.1", "10.99.0.2"]
    assert spec["routes"] == {"10.10.0.0/16": "10.88.0.5"}
    assert [(n["interface"], n["nic_tag"], n["vlan_id"], n["mtu"], n["ips"], n["primary"])
            for n in spec["nics"]] == [
        ("net0", "external", 0, 1500, ["10.88.0.2/24"], True),
        ("net1", "admin", 7, 9000, ["10.99.0.10/24"], False)]
    # the node has them, with the MACs the head node gave; the rows say they are plugged
    on_node = node.machine_nics(machine["uuid"])
    assert [n["mac"] for n in on_node] == [n.mac for n in rows(ctx, machine["uuid"])]
    assert [n.state for n in rows(ctx, machine["uuid"])] == ["running", "running"]


# -- add ------------------------------------------------------------------------------------


def test_add_nic_plugs_it_into_the_running_machine(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external"])
    nic, job = svc.add_nic(ctx, machine["uuid"], "internal", owner_uuid=fleet["owner"].uuid,
                           caller=CALLER)
    assert finish(ctx, engine, transport, job.uuid) == "succeeded"
    sent = [m for m in transport.sent if m[0] == "agent"][-1]
    assert sent[2] == "machine_add_nics"
    assert sent[3]["nics"][0]["mac"] == nic.mac and sent[3]["nics"][0]["interface"] == "net1"
    on_node = node.machine_nics(machine["uuid"])
    assert [(n["interface"], n["mac"]) for n in on_node][-1] == ("net1", nic.mac)
    assert node.machine_load(machine["uuid"])["nics"][-1] == {"mac": nic.mac,
                                                              "interface": "net1"}
    added = rows(ctx, machine["uuid"])[-1]
    assert (added.mac, added.state, svc.nic_to_cloudapi(added)["state"]) == (
        nic.mac, "running", "running")
    assert lock_of(ctx, machine["uuid"]) is None


def test_add_nic_to_a_stopped_machine_leaves_it_stopped(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external"])
    stop = machine_svc.machine_action(ctx, machine["uuid"], "stop", CALLER)
    assert finish(ctx, engine, transport, stop["job_uuid"]) == "succeeded"
    _nic, job = svc.add_nic(ctx, machine["uuid"], "internal", caller=CALLER)
    assert finish(ctx, engine, transport, job.uuid) == "succeeded"
    first, added = rows(ctx, machine["uuid"])
    assert added.state == "stopped"
    # a NIC shows its machine's state (the first was plugged while it ran)
    assert [svc.nic_to_cloudapi(n)["state"] for n in (first, added)] == ["stopped", "stopped"]


def test_a_failed_add_unplugs_it_and_frees_address_and_mac(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external"])
    nic, job = svc.add_nic(ctx, machine["uuid"], "internal", caller=CALLER)
    engine.run_step(job.uuid, 1)
    for _ in range(2):  # the step is tried twice
        op, _params = answer_by_hand(engine, transport, failed("NicTagNotFound", "no"))
        assert op == "machine_add_nics"
    ended = get_job(ctx, job.uuid)
    assert ended.execution == "failed"
    assert ended.error == {"step": "add_nic", "code": "NicTagNotFound", "message": "no"}
    assert [e["name"] for e in ended.onerror_results] == ["unplug_from_node", "release_nic"]
    # the node is told to take it out, without waiting for it
    raw = [m for m in transport.sent if m[0] == "raw"][-1]
    assert raw[2] == "agent.machine_remove_nics"
    assert raw[3][1] == {"uuid": machine["uuid"], "macs": [nic.mac]}
    with ctx.read() as session:
        assert session.get(Nic, nic.mac) is None
        network = session.get(Network, networks["internal"].uuid)
        assert network is not None
        assert net_svc.free_addresses(session, network)[0] == int(IPv4Address(nic.ip))
    assert [n.interface for n in rows(ctx, machine["uuid"])] == ["net0"]
    assert lock_of(ctx, machine["uuid"]) is None
    # the address (and interface) are handed out again
    again, job = svc.add_nic(ctx, machine["uuid"], "internal", caller=CALLER)
    assert (again.ip, again.interface) == (nic.ip, "net1")


def test_a_full_network_refuses_the_add_and_the_job_never_starts(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external", "internal"])
    other = provision(ctx, engine, transport, ["internal"], alias="db")
    assert [n.ip for n in rows(ctx, other["uuid"])] == ["10.99.0.11"]
    with pytest.raises(Conflict) as err:
        svc.add_nic(ctx, machine["uuid"], "internal", caller=CALLER)
    assert err.value.code == "SubnetFull"
    assert lock_of(ctx, machine["uuid"]) is None
    assert len(node.machine_nics(machine["uuid"])) == 2


# -- remove ---------------------------------------------------------------------------------


def test_remove_nic_unplugs_it_and_frees_it(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external", "internal"])
    primary, second = rows(ctx, machine["uuid"])
    job = svc.remove_nic(ctx, machine["uuid"], second.mac, caller=CALLER)
    assert finish(ctx, engine, transport, job.uuid) == "succeeded"
    assert [n["mac"] for n in node.machine_nics(machine["uuid"])] == [primary.mac]
    assert [n.mac for n in rows(ctx, machine["uuid"])] == [primary.mac]
    # now the primary is the last one, and may go
    job = svc.remove_nic(ctx, machine["uuid"], primary.mac, caller=CALLER)
    assert finish(ctx, engine, transport, job.uuid) == "succeeded"
    assert node.machine_nics(machine["uuid"]) == [] and rows(ctx, machine["uuid"]) == []


def test_a_failed_remove_keeps_the_nic_plugged(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external", "internal"])
    second = rows(ctx, machine["uuid"])[1]
    job = svc.remove_nic(ctx, machine["uuid"], second.mac, caller=CALLER)
    engine.run_step(job.uuid, 1)
    for _ in range(2):
        op, params = answer_by_hand(engine, transport, failed())
        assert (op, params) == ("machine_remove_nics",
                                {"uuid": machine["uuid"], "macs": [second.mac]})
    assert get_job(ctx, job.uuid).execution == "failed"
    assert [(n.mac, n.state) for n in rows(ctx, machine["uuid"])][1] == (second.mac, "running")


# -- update ---------------------------------------------------------------------------------


def test_update_nic_changes_the_node_then_the_row(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external"])
    (nic,) = rows(ctx, machine["uuid"])
    job = svc.update_nic(ctx, machine["uuid"], nic.mac, {
        "allow_ip_spoofing": True, "allowed_ips": ["10.88.0.200"]}, caller=CALLER)
    assert finish(ctx, engine, transport, job.uuid) == "succeeded"
    (on_node,) = node.machine_nics(machine["uuid"])
    assert (on_node["allow_ip_spoofing"], on_node["allowed_ips"],
            on_node["allow_mac_spoofing"]) == (True, ["10.88.0.200"], False)
    (row,) = rows(ctx, machine["uuid"])
    assert (row.allow_ip_spoofing, row.allowed_ips, row.allow_mac_spoofing) == (
        True, ["10.88.0.200"], False)
    assert svc.nic_to_ops(row)["allow_ip_spoofing"] is True


def test_an_update_the_node_refuses_changes_no_row(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external"])
    (nic,) = rows(ctx, machine["uuid"])
    job = svc.update_nic(ctx, machine["uuid"], nic.mac, {"allow_mac_spoofing": True},
                         caller=CALLER)
    engine.run_step(job.uuid, 1)
    for _ in range(2):
        answer_by_hand(engine, transport, failed("NicNotFound", "no such NIC"))
    assert (get_job(ctx, job.uuid).error or {}).get("code") == "NicNotFound"
    assert rows(ctx, machine["uuid"])[0].allow_mac_spoofing is False
    assert lock_of(ctx, machine["uuid"]) is None


# -- destroy --------------------------------------------------------------------------------


def test_destroy_leaves_no_nic_on_either_side(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external", "internal"])
    _nic, job = svc.add_nic(ctx, machine["uuid"], "internal", caller=CALLER)
    assert finish(ctx, engine, transport, job.uuid) == "succeeded"
    destroy = machine_svc.destroy_machine(ctx, machine["uuid"], CALLER)
    assert finish(ctx, engine, transport, destroy["job_uuid"]) == "succeeded"
    with ctx.read() as session:
        assert list(session.scalars(select(Nic))) == []
    assert node.list_machines() == []


def test_a_canceled_add_is_unplugged_again_when_the_nodes_late_reply_comes(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        node: SimBackend, networks: dict[str, Network]) -> None:
    machine = provision(ctx, engine, transport, ["external"])
    nic, job = svc.add_nic(ctx, machine["uuid"], "internal", caller=CALLER)
    engine.run_step(job.uuid, 1)
    pump(engine, transport)
    server, op, params, reply = transport.agent.popleft()  # the node works on it
    assert op == "machine_add_nics"

    job_svc.cancel_job(ctx, job.uuid, CALLER)
    assert engine.cancel(job.uuid) is True
    assert get_job(ctx, job.uuid).execution == "canceled"
    unplug = ("raw", f"cn.{server}", "agent.machine_remove_nics",
              [server, {"uuid": machine["uuid"], "macs": [nic.mac]}, None])
    assert [m for m in transport.sent if m[0] == "raw"] == [unplug]
    assert [n.interface for n in rows(ctx, machine["uuid"])] == ["net0"]  # released
    assert lock_of(ctx, machine["uuid"]) is None

    # the node plugged it after all: its late reply has it taken out once more
    engine.on_agent_reply(reply, agent_tasks.run_op(op, server, params))
    pump(engine, transport)
    assert [m for m in transport.sent if m[0] == "raw"] == [unplug, unplug]
    agent_tasks.run_op("machine_remove_nics", server, {"uuid": machine["uuid"],
                                                       "macs": [nic.mac]})
    assert [n["mac"] for n in node.machine_nics(machine["uuid"])] == [
        n.mac for n in rows(ctx, machine["uuid"])]
