"""A machine's NICs as resources on the real PostgreSQL: the node's spec of them, reads, and
the requests that start add/remove/update jobs, with every refusal changing nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from headnode.services import networks as net_svc
from headnode.services import nics as svc
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.store.models import Job, Machine, Network, Nic, Server
from schemas.agent import MachineSpecSchema
from schemas.nics import NicSpecSchema
from tests.unit.headnode.services.conftest import count, make_account, make_machine

CALLER = {"type": "operator"}


@pytest.fixture
def node(ctx: Any, fleet: dict[str, Any]) -> Server:
    """The fleet's server, saying it provides the external and admin nic tags."""
    with ctx.transaction() as session:
        server = session.get(Server, fleet["server"].uuid)
        assert server is not None
        server.sysinfo = {"NIC Names": ["admin", "external"]}
    return server


def net(ctx: Any, name: str = "external", subnet: str = "10.88.0.0/24", **body: Any) -> Network:
    return net_svc.create_network(ctx, {"name": name, "subnet": subnet, **body})


def machine_on(ctx: Any, fleet: dict[str, Any], networks: list[Network], alias: str = "web",
               **overrides: Any) -> Machine:
    """A machine with one NIC on each of ``networks`` (as a create gives it)."""
    machine = make_machine(ctx, fleet, alias=alias, **overrides)
    with ctx.transaction() as session:
        row = session.get(Machine, machine.uuid)
        assert row is not None
        net_svc.attach_nics(session, row, networks, created_here=False)
    return machine


def nics_of(ctx: Any, machine: Machine) -> list[Nic]:
    with ctx.read() as session:
        return svc.list_nics(session, machine.uuid)


def snapshot(ctx: Any) -> tuple[list[tuple[str, str, str | None, str]], int, list[Any]]:
    """Every NIC (mac, ip, interface, state), how many jobs, every machine's lock."""
    with ctx.read() as session:
        nics = [(n.mac, n.ip, n.interface, n.state)
                for n in session.scalars(select(Nic).order_by(Nic.mac))]
        locks = list(session.scalars(select(Machine.job_uuid).order_by(Machine.uuid)))
    return nics, count(ctx, Job), locks


# -- the node's spec ------------------------------------------------------------------------


def test_nic_spec_and_machine_spec_in_vmadm_names(ctx: Any, fleet: dict[str, Any],
                                                  node: Server) -> None:
    ext = net(ctx, gateway="10.88.0.1", resolvers=["10.88.0.1", "8.8.8.8"], mtu=9000,
              routes={"10.10.0.0/16": "10.88.0.5"})
    internal = net(ctx, "internal", "10.99.0.0/22", nic_tag="admin", vlan_id=12,
                   resolvers=["8.8.8.8", "10.99.0.2"],
                   routes={"10.10.0.0/16": "10.99.0.9", "10.20.0.0/16": "10.99.0.9"})
    machine = machine_on(ctx, fleet, [ext, internal])
    with ctx.read() as session:
        row = session.get(Machine, machine.uuid)
        assert row is not None
        spec = svc.machine_network_spec(session, row)
    primary, second = spec["nics"]
    assert primary == {
        "mac": primary["mac"], "interface": "net0", "nic_tag": "external", "vlan_id": 0,
        "ips": ["10.88.0.2/24"], "gateways": ["10.88.0.1"], "primary": True, "mtu": 9000,
        "network_uuid": ext.uuid, "allow_ip_spoofing": False, "allow_mac_spoofing": False,
        "allow_dhcp_spoofing": False, "allow_restricted_traffic": False, "allowed_ips": []}
    assert primary["mac"].startswith(net_svc.MAC_PREFIX + ":")
    assert (second["interface"], second["nic_tag"], second["vlan_id"], second["ips"],
            second["gateways"], second["primary"], second["mtu"]) == (
        "net1", "admin", 12, ["10.99.0.1/22"], [], False, 1500)
    # the primary network's resolvers first, each once; its route wins a shared destination
    assert spec["resolvers"] == ["10.88.0.1", "8.8.8.8", "10.99.0.2"]
    assert spec["routes"] == {"10.10.0.0/16": "10.88.0.5", "10.20.0.0/16": "10.99.0.9"}
    # what the wire contract accepts, unchanged
    for nic in spec["nics"]:
        assert NicSpecSchema().load(nic) == nic
    loaded = MachineSpecSchema().load({"uuid": machine.uuid, "alias": "web",
                                       "owner_uuid": machine.owner_uuid,
                                       "image_uuid": machine.image_uuid, "ram_mb": 1024,
                                       "disk_mb": 10240, **spec})
    assert loaded["nics"] == spec["nics"] and loaded["routes"] == spec["routes"]


def test_a_machine_without_nics_has_an_empty_spec(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet)
    with ctx.read() as session:
        row = session.get(Machine, machine.uuid)
        assert row is not None
        assert svc.machine_network_spec(session, row) == {"nics": [], "resolvers": [],
                                                          "routes": {}}


# -- reads ----------------------------------------------------------------------------------


def test_list_and_get_in_cloudapi_and_operator_shapes(ctx: Any, fleet: dict[str, Any]) -> None:
    ext = net(ctx, gateway="10.88.0.1")
    internal = net(ctx, "internal", "10.99.0.0/22", nic_tag="admin", vlan_id=12)
    machine = machine_on(ctx, fleet, [ext, internal], state="stopped")
    listed = nics_of(ctx, machine)
    assert [n.interface for n in listed] == ["net0", "net1"]
    mac = listed[0].mac
    with ctx.read() as session:
        # as old NAPIs name it (no colons) and in capitals: the same NIC
        got = svc.get_nic(session, machine.uuid, mac.replace(":", "").upper())
    assert svc.nic_to_cloudapi(got) == {"ip": "10.88.0.2", "mac": mac, "primary": True,
                                        "netmask": "255.255.255.0", "gateway": "10.88.0.1",
                                        "state": "stopped", "network": ext.uuid}
    ops = svc.nic_to_ops(listed[1])
    assert "gateway" not in svc.nic_to_cloudapi(listed[1])
    assert {k: ops[k] for k in ("interface", "nic_tag", "vlan_id", "mtu", "netmask",
                                "allow_ip_spoofing", "allowed_ips", "machine_uuid")} == {
        "interface": "net1", "nic_tag": "admin", "vlan_id": 12, "mtu": 1500,
        "netmask": "255.255.252.0", "allow_ip_spoofing": False, "allowed_ips": [],
        "machine_uuid": machine.uuid}


def test_unknown_nic_and_another_accounts_machine_are_not_found(ctx: Any,
                                                                fleet: dict[str, Any]) -> None:
    machine = machine_on(ctx, fleet, [net(ctx)])
    bob = make_account(ctx, login="bob", email="bob@example.com")
    with ctx.read() as session:
        with pytest.raises(NotFound) as err:
            svc.get_nic(session, machine.uuid, "90:b8:d0:00:00:99")
        assert err.value.code == "ResourceNotFound" and "90:b8:d0:00:00:99" in err.value.message
        with pytest.raises(NotFound):
            svc.list_nics(session, machine.uuid, owner_uuid=bob.uuid)
        assert len(svc.list_nics(session, machine.uuid, owner_uuid=machine.owner_uuid)) == 1


# -- add ------------------------------------------------------------------------------------


def test_add_nic_takes_address_mac_and_lowest_interface_and_starts_the_job(
        ctx: Any, fleet: dict[str, Any], node: Server) -> None:
    ext = net(ctx, gateway="10.88.0.1")
    internal = net(ctx, "internal", "10.99.0.0/24", nic_tag="admin")
    machine = machine_on(ctx, fleet, [ext])
    nic, job = svc.add_nic(ctx, machine.uuid, "internal", owner_uuid=machine.owner_uuid,
                           caller=CALLER)
    assert (nic.interface, nic.ip, nic.primary, nic.state) == ("net1", "10.99.0.1", False,
                                                               "provisioning")
    assert nic.network_uuid == internal.uuid and nic.mac.startswith(net_svc.MAC_PREFIX)
    assert svc.nic_to_cloudapi(nic)["state"] == "provisioning"
    assert (job.name, job.execution, job.machine_uuid, job.server_uuid) == (
        "add_nic", "queued", machine.uuid, fleet["server"].uuid)
    assert job.params["mac"] == nic.mac
    assert ctx.jobs.enqueued == [job.uuid]
    with ctx.read() as session:
        assert session.get(Machine, machine.uuid).job_uuid == job.uuid  # the lock


def test_add_nic_at_a_requested_ip(ctx: Any, fleet: dict[str, Any], node: Server) -> None:
    net(ctx, gateway="10.88.0.1", provision_start_ip="10.88.0.10",
        provision_end_ip="10.88.0.20")
    machine = make_machine(ctx, fleet)
    nic, _job = svc.add_nic(ctx, machine.uuid, "external", ip="10.88.0.17", caller=CALLER)
    # the machine's first NIC is its primary, and net0
    assert (nic.ip, nic.interface, nic.primary) == ("10.88.0.17", "net0", True)


def test_interfaces_reuse_the_lowest_free_index(ctx: Any, fleet: dict[str, Any],
                                               node: Server) -> None:
    ext = net(ctx)
    machine = machine_on(ctx, fleet, [ext, net(ctx, "b", "10.1.0.0/24"),
                                      net(ctx, "c", "10.2.0.0/24")])
    net1 = nics_of(ctx, machine)[1]
    with ctx.transaction() as session:
        session.delete(session.get(Nic, net1.mac))
    nic, _job = svc.add_nic(ctx, machine.uuid, "external", caller=CALLER)
    assert nic.interface == "net1"


def _refused(ctx: Any, error: type[Exception], call: Any) -> Any:
    before = snapshot(ctx)
    with pytest.raises(error) as err:
        call()
    assert snapshot(ctx) == before, "a refusal changed something"
    assert ctx.jobs.enqueued == []
    return err.value


def test_add_nic_at_a_taken_ip_is_409_naming_it(ctx: Any, fleet: dict[str, Any],
                                               node: Server) -> None:
    ext = net(ctx, gateway="10.88.0.1")
    holder = machine_on(ctx, fleet, [ext], alias="holder")
    taken = nics_of(ctx, holder)[0].ip
    machine = make_machine(ctx, fleet)
    err = _refused(ctx, Conflict, lambda: svc.add_nic(ctx, machine.uuid, ext.uuid, ip=taken,
                                                      caller=CALLER))
    assert (err.code, err.status, err.details["ip"]) == ("InUse", 409, taken)
    assert taken in err.message
    # the gateway is never handed out, not even when asked for
    err = _refused(ctx, Conflict, lambda: svc.add_nic(ctx, machine.uuid, ext.uuid,
                                                      ip="10.88.0.1", caller=CALLER))
    assert err.code == "InUse" and "gateway" in err.message


@pytest.mark.parametrize("ip", ["10.88.0.9", "10.88.0.21", "10.89.0.15", "not-an-ip"])
def test_add_nic_at_an_ip_outside_the_range_names_ip(ctx: Any, fleet: dict[str, Any],
                                                     node: Server, ip: str) -> None:
    net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.20")
    machine = make_machine(ctx, fleet)
    err = _refused(ctx, InvalidArgument, lambda: svc.add_nic(ctx, machine.uuid, "external",
                                                             ip=ip, caller=CALLER))
    assert err.field == "ip" and err.status == 422


def test_add_nic_on_a_full_subnet_is_409_and_takes_nothing(ctx: Any, fleet: dict[str, Any],
                                                          node: Server) -> None:
    ext = net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.11")
    machine_on(ctx, fleet, [ext], alias="a")
    machine_on(ctx, fleet, [ext], alias="b")
    machine = make_machine(ctx, fleet)
    err = _refused(ctx, Conflict, lambda: svc.add_nic(ctx, machine.uuid, "external",
                                                      caller=CALLER))
    assert (err.code, err.status) == ("SubnetFull", 409)
    with ctx.read() as session:
        network = session.get(Network, ext.uuid)
        assert net_svc.free_addresses(session, network) == []


def test_add_nic_on_a_network_the_owner_cannot_see(ctx: Any, fleet: dict[str, Any],
                                                   node: Server) -> None:
    bob = make_account(ctx, login="bob", email="bob@example.com")
    net(ctx, "bobs", "10.5.0.0/24", owner=bob.uuid)
    machine = make_machine(ctx, fleet)
    for owner in (machine.owner_uuid, None):  # not even when an operator asks
        err = _refused(ctx, InvalidArgument, lambda owner=owner: svc.add_nic(
            ctx, machine.uuid, "bobs", owner_uuid=owner, caller=CALLER))
        assert err.field == "network"
    err = _refused(ctx, InvalidArgument, lambda: svc.add_nic(ctx, machine.uuid, "nowhere",
                                                             caller=CALLER))
    assert err.field == "network"


def test_add_nic_whose_tag_the_server_lacks_names_tag_and_server(
        ctx: Any, fleet: dict[str, Any], node: Server) -> None:
    net(ctx, "storage", "10.7.0.0/24", nic_tag="storage")
    machine = make_machine(ctx, fleet)
    err = _refused(ctx, Conflict, lambda: svc.add_nic(ctx, machine.uuid, "storage",
                                                      caller=CALLER))
    assert (err.code, err.status) == ("NicTagNotProvided", 409)
    assert "storage" in err.message and "cn1" in err.message
    assert err.details == {"nic_tag": "storage", "server": fleet["server"].uuid}


def test_a_server_that_reported_an_empty_list_provides_no_tag(ctx: Any,
                                                              fleet: dict[str, Any]) -> None:
    with ctx.transaction() as session:
        session.get(Server, fleet["server"].uuid).sysinfo = {"NIC Names": []}
    net(ctx)
    machine = make_machine(ctx, fleet)
    err = _refused(ctx, Conflict, lambda: svc.add_nic(ctx, machine.uuid, "external",
                                                      caller=CALLER))
    assert err.code == "NicTagNotProvided"


def test_a_server_no_agent_registered_is_let_through_as_placement_does(
        ctx: Any, fleet: dict[str, Any]) -> None:
    net(ctx)
    machine = make_machine(ctx, fleet)  # its server's sysinfo is empty
    nic, _job = svc.add_nic(ctx, machine.uuid, "external", caller=CALLER)
    assert nic.interface == "net0"


@pytest.mark.parametrize(("overrides", "error", "code"), [
    ({"state": "provisioning"}, Conflict, "InvalidState"),
    ({"state": "failed"}, Conflict, "InvalidState"),
    ({"state": "destroyed"}, NotFound, "ResourceNotFound"),
    ({"job_uuid": "5d3a1c7e-0000-4000-8000-000000000001"}, Conflict, "MachineBusy"),
])
def test_add_nic_to_a_busy_or_unusable_machine_is_refused(
        ctx: Any, fleet: dict[str, Any], node: Server, overrides: dict[str, Any],
        error: type[Exception], code: str) -> None:
    net(ctx)
    machine = make_machine(ctx, fleet, **overrides)
    err = _refused(ctx, error, lambda: svc.add_nic(ctx, machine.uuid, "external",
                                                   caller=CALLER))
    assert err.code == code


def test_add_nic_to_another_accounts_machine_is_not_found(ctx: Any, fleet: dict[str, Any],
                                                          node: Server) -> None:
    net(ctx)
    bob = make_account(ctx, login="bob", email="bob@example.com")
    machine = make_machine(ctx, fleet)
    _refused(ctx, NotFound, lambda: svc.add_nic(ctx, machine.uuid, "external",
                                                owner_uuid=bob.uuid, caller=CALLER))


# -- remove and update ----------------------------------------------------------------------


def test_the_primary_cannot_go_while_others_remain(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = machine_on(ctx, fleet, [net(ctx), net(ctx, "b", "10.1.0.0/24")])
    primary, other = nics_of(ctx, machine)
    err = _refused(ctx, Conflict, lambda: svc.remove_nic(ctx, machine.uuid, primary.mac,
                                                         caller=CALLER))
    assert (err.code, err.status) == ("PrimaryNic", 409) and primary.mac in err.message

    job = svc.remove_nic(ctx, machine.uuid, other.mac, caller=CALLER)
    assert (job.name, job.params["mac"]) == ("remove_nic", other.mac)
    assert [svc.nic_to_cloudapi(n)["state"] for n in nics_of(ctx, machine)] == [
        "running", "removing"]


def test_the_last_nic_may_go_even_if_primary(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = machine_on(ctx, fleet, [net(ctx)])
    (only,) = nics_of(ctx, machine)
    job = svc.remove_nic(ctx, machine.uuid, only.mac, owner_uuid=machine.owner_uuid,
                         caller=CALLER)
    assert job.name == "remove_nic"
    assert nics_of(ctx, machine)[0].state == "removing"


def test_remove_or_update_an_unknown_nic_is_not_found(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = machine_on(ctx, fleet, [net(ctx)])
    err = _refused(ctx, NotFound, lambda: svc.remove_nic(ctx, machine.uuid,
                                                         "90:b8:d0:ff:ff:ff", caller=CALLER))
    assert "90:b8:d0:ff:ff:ff" in err.message
    _refused(ctx, NotFound, lambda: svc.update_nic(ctx, machine.uuid, "90:b8:d0:ff:ff:ff",
                                                   {"allow_ip_spoofing": True},
                                                   caller=CALLER))


def test_update_nic_starts_a_job_with_the_checked_change(ctx: Any,
                                                        fleet: dict[str, Any]) -> None:
    machine = machine_on(ctx, fleet, [net(ctx)])
    (nic,) = nics_of(ctx, machine)
    job = svc.update_nic(ctx, machine.uuid, nic.mac, {
        "allow_ip_spoofing": True, "allowed_ips": ["10.88.0.200", "10.77.0.0/16"]},
        caller=CALLER)
    assert job.name == "update_nic"
    assert job.params["changes"] == {"allow_ip_spoofing": True,
                                     "allowed_ips": ["10.88.0.200", "10.77.0.0/16"]}
    # the row changes only once the node has done it (the job's last step)
    assert nics_of(ctx, machine)[0].allow_ip_spoofing is False


def test_thirteen_allowed_ips_are_vmadms_most(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = machine_on(ctx, fleet, [net(ctx)])
    (nic,) = nics_of(ctx, machine)
    thirteen = [f"10.77.0.{i}" for i in range(13)]
    job = svc.update_nic(ctx, machine.uuid, nic.mac, {"allowed_ips": thirteen}, caller=CALLER)
    assert job.params["changes"] == {"allowed_ips": thirteen}


@pytest.mark.parametrize(("flags", "field"), [
    ({"allow_ip_spoofing": "yes"}, "allow_ip_spoofing"),
    ({"allowed_ips": ["10.88.0.300"]}, "allowed_ips"),
    ({"allowed_ips": "10.88.0.3"}, "allowed_ips"),
    # one past vmadm's 13 (thirteen: the test below)
    ({"allowed_ips": [f"10.77.0.{i}" for i in range(14)]}, "allowed_ips"),
    ({"mac": "90:b8:d0:00:00:01"}, "mac"),
    ({}, "flags"),
])
def test_a_bad_flag_change_names_the_field(ctx: Any, fleet: dict[str, Any],
                                           flags: dict[str, Any], field: str) -> None:
    machine = machine_on(ctx, fleet, [net(ctx)])
    (nic,) = nics_of(ctx, machine)
    err = _refused(ctx, InvalidArgument, lambda: svc.update_nic(ctx, machine.uuid, nic.mac,
                                                                flags, caller=CALLER))
    assert err.field == field


def test_two_adds_racing_for_one_ip_give_it_to_one(ctx: Any, fleet: dict[str, Any],
                                                   node: Server) -> None:
    ext = net(ctx)
    machines = [make_machine(ctx, fleet, alias=f"m{i}") for i in range(2)]
    start = threading.Barrier(2)
    outcomes: list[Any] = []

    def add(machine: Machine) -> None:
        start.wait()
        try:
            outcomes.append(svc.add_nic(ctx, machine.uuid, ext.uuid, ip="10.88.0.77",
                                        caller=CALLER)[0].machine_uuid)
        except Exception as exc:  # noqa: BLE001 - checked below
            outcomes.append(exc)

    threads = [threading.Thread(target=add, args=(m,)) for m in machines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    won = [o for o in outcomes if isinstance(o, str)]
    lost = [o for o in outcomes if not isinstance(o, str)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], Conflict) and lost[0].code == "InUse"
    with ctx.read() as session:
        held = list(session.scalars(select(Nic.machine_uuid).where(Nic.ip == "10.88.0.77")))
        locks = {m.uuid: session.get(Machine, m.uuid).job_uuid for m in machines}
    assert held == won
    loser = next(m.uuid for m in machines if m.uuid != won[0])
    assert locks[loser] is None  # the refused request took nothing
    assert count(ctx, Job) == 1
