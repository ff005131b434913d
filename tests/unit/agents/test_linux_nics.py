"""Machines on the network, for real: runc machines of the busybox image on a Linux node
whose network (bridges, host veth ends, the nft table) lives in a namespace the test made.

What a machine has is read from inside it (``runc exec <uuid> ip ...``) and what the node
made from the node's namespace (``ip link``, ``nft list table``); nothing is created in the
host's own namespace, and no packet leaves the test's namespaces.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.host import ip, nft, runc
from agents.backends.host.cmd import HostCommandError
from agents.backends.linux import LinuxBackend
from agents.backends.linux.runtime import netns_dir
from agents.config import load_settings
from agents.runner import make_backend
from schemas.nics import NicSpecSchema
from tests.support import netns
from tests.support.agent_images import FileServer
from tests.support.btrfs import LoopPool, missing_host
from tests.support.wait import wait_until
from tests.unit.agents.conftest import make_linux, make_network, served_image, spec_factory

pytestmark = [
    pytest.mark.skipif(missing_host() is not None, reason=str(missing_host())),
    pytest.mark.skipif(netns.missing_host() is not None, reason=str(netns.missing_host())),
]
TAG = "external"
SpecFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def node(linux_backend: LinuxBackend, busybox_image: dict[str, Any]) -> LinuxBackend:
    """A node (conftest's ``linux_backend``: its network in the session's node namespace)
    that provides the host-local tags ``admin`` and ``external`` (etherstubs: machines on
    them reach each other and nothing else), with the busybox image."""
    linux_backend.image_ensure_present(busybox_image)
    return linux_backend


def restarted(node: LinuxBackend, pool: LoopPool, node_netns: Path) -> LinuxBackend:
    """A new agent on the same node: new objects, the same pool and namespaces."""
    network = make_network(pool, node_netns, node.network.state_dir)
    return make_linux(pool, network, node.server_uuid)


def nic(mac_last: int, ip4: str, **kw: Any) -> dict[str, Any]:
    """A NicSpec on the test tag; the MAC is random but for its last byte, so that two test
    runs (or a leftover of a killed one) never share a veth name."""
    middle = ":".join(f"{b:02x}" for b in os.urandom(2))
    raw = {"mac": f"90:b8:d0:{middle}:{mac_last:02x}", "interface": "net0",
           "nic_tag": TAG, "ips": [ip4], **kw}
    loaded: dict[str, Any] = NicSpecSchema().load(raw)
    return loaded


@pytest.fixture
def spec(busybox_image: dict[str, Any]) -> SpecFactory:
    return spec_factory(busybox_image["uuid"], alias="net", ram_mb=128, disk_mb=256)


def inside(node: LinuxBackend, machine_uuid: str, *argv: str) -> str:
    return runc.exec_(node.runc_root, machine_uuid, list(argv))


def links_inside(node: LinuxBackend, machine_uuid: str) -> dict[str, str]:
    """{name: `ip -o link` line} of the machine's links."""
    found = {}
    for line in inside(node, machine_uuid, "ip", "-o", "link").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        found[name] = line
    return found


def addresses_inside(node: LinuxBackend, machine_uuid: str, link: str) -> list[str]:
    out = inside(node, machine_uuid, "ip", "-o", "-4", "addr", "show", "dev", link)
    return [line.split()[3] for line in out.splitlines()]


def routes_inside(node: LinuxBackend, machine_uuid: str) -> list[str]:
    return [" ".join(line.split()) for line in
            inside(node, machine_uuid, "ip", "route").splitlines()]


def host_end(mac: str) -> str:
    return "v" + mac.replace(":", "")


def node_links(node_netns: Path) -> set[str]:
    return {link["ifname"] for link in ip.links(node_netns)}


def node_chains(node_netns: Path) -> set[str]:
    table = nft.list_table("bridge", "sdc", node_netns) or []
    return {o["chain"]["name"] for o in table if "chain" in o}


def chain_of(mac: str) -> str:
    return "nic_" + mac.replace(":", "")


def assert_nic_inside(node: LinuxBackend, machine_uuid: str, spec_nic: dict[str, Any]) -> None:
    line = links_inside(node, machine_uuid)[spec_nic["interface"]]
    assert f"link/ether {spec_nic['mac']}" in line
    assert f"mtu {spec_nic['mtu']} " in line
    assert ",UP" in line or "<UP" in line
    assert addresses_inside(node, machine_uuid, spec_nic["interface"]) == spec_nic["ips"]


def test_a_machine_comes_up_with_its_nic_routes_and_resolvers(
    node: LinuxBackend, spec: SpecFactory, node_netns: Path
) -> None:
    net0 = nic(1, "10.88.0.10/24", gateways=["10.88.0.1"], primary=True, mtu=1400)
    machine = node.machine_create(spec(nics=[net0], resolvers=["10.88.0.53", "10.88.0.54"],
                                       routes={"10.99.0.0/16": "10.88.0.254"}))
    assert machine["nics"] == [{"mac": net0["mac"], "interface": "net0"}]
    assert_nic_inside(node, machine["uuid"], net0)
    routes = routes_inside(node, machine["uuid"])
    assert "default via 10.88.0.1 dev net0" in routes
    assert "10.99.0.0/16 via 10.88.0.254 dev net0" in routes
    assert inside(node, machine["uuid"], "cat", "/etc/resolv.conf") == \
        "nameserver 10.88.0.53\nnameserver 10.88.0.54\n"
    # read-only: the machine cannot rewrite what the node gave it
    with pytest.raises(HostCommandError):
        inside(node, machine["uuid"], "sh", "-c", "echo x > /etc/resolv.conf")
    # the node's end of it: on a bridge, with a filter chain of its own
    assert host_end(net0["mac"]) in node_links(node_netns)
    assert chain_of(net0["mac"]) in node_chains(node_netns)
    assert node.status()["leftovers"] == []


def test_the_same_nic_after_stop_start_reboot_and_an_agent_restart(
    node: LinuxBackend, spec: SpecFactory, node_netns: Path, btrfs_pool: LoopPool
) -> None:
    net0 = nic(2, "10.88.0.11/24", gateways=["10.88.0.1"], primary=True)
    machine = node.machine_create(spec(nics=[net0]))
    node.machine_stop(machine["uuid"])
    # a stopped machine holds nothing of the node's network
    assert host_end(net0["mac"]) not in node_links(node_netns)
    assert chain_of(net0["mac"]) not in node_chains(node_netns)
    assert not node.network.machine_netns(machine["uuid"]).exists()
    assert node.machine_load(machine["uuid"])["nics"] == [{"mac": net0["mac"],
                                                          "interface": "net0"}]
    node.machine_start(machine["uuid"])
    assert_nic_inside(node, machine["uuid"], net0)
    node.machine_reboot(machine["uuid"])
    assert_nic_inside(node, machine["uuid"], net0)
    assert "default via 10.88.0.1 dev net0" in routes_inside(node, machine["uuid"])

    again = restarted(node, btrfs_pool, node_netns)
    assert again.machine_load(machine["uuid"])["nics"] == [{"mac": net0["mac"],
                                                               "interface": "net0"}]
    assert_nic_inside(again, machine["uuid"], net0)
    assert again.status()["leftovers"] == []
    # the new agent plugs into the running machine's namespace the old one made
    net1 = nic(17, "10.89.0.11/24", interface="net1")
    again.machine_add_nics(machine["uuid"], [net1])
    assert_nic_inside(again, machine["uuid"], net1)
    again.machine_stop(machine["uuid"])
    assert again.machine_start(machine["uuid"])["state"] == "running"
    assert_nic_inside(again, machine["uuid"], net0)
    assert_nic_inside(again, machine["uuid"], net1)


def test_after_a_node_reboot_start_plugs_afresh(node: LinuxBackend, spec: SpecFactory,
                                                node_netns: Path) -> None:
    net0 = nic(3, "10.88.0.12/24", primary=True)
    machine = node.machine_create(spec(nics=[net0]))
    # what a reboot takes: the container and the machine's namespace (tmpfs), and with the
    # namespace its veth and the node's end of it
    runc.delete(node.runc_root, machine["uuid"], force=True)
    ip.netns_delete(node.network.machine_netns(machine["uuid"]))
    node._invalidate_usage()
    assert node.machine_load(machine["uuid"])["state"] == "stopped"
    assert node.machine_start(machine["uuid"])["state"] == "running"
    assert_nic_inside(node, machine["uuid"], net0)


def test_destroy_leaves_no_veth_chain_or_namespace(node: LinuxBackend, spec: SpecFactory,
                                                   node_netns: Path) -> None:
    net0 = nic(4, "10.88.0.13/24", primary=True)
    machine = node.machine_create(spec(nics=[net0]))
    netns = node.network.machine_netns(machine["uuid"])
    assert ip.is_netns(netns)
    node.machine_destroy(machine["uuid"])
    assert host_end(net0["mac"]) not in node_links(node_netns)
    assert chain_of(net0["mac"]) not in node_chains(node_netns)
    assert not netns.exists()
    assert node.status()["leftovers"] == []


def test_status_names_what_no_machine_owns(node: LinuxBackend) -> None:
    stray = node.network.machine_netns(str(uuid.uuid4()))
    ip.netns_create(stray)
    try:
        node._invalidate_usage()  # status caches leftovers as it does usage
        assert node.status()["leftovers"] == [f"netns:{stray.name}"]
    finally:
        ip.netns_delete(stray)
    node._invalidate_usage()
    assert node.status()["leftovers"] == []


def test_a_machine_that_cannot_boot_leaves_no_network(
    node: LinuxBackend, spec: SpecFactory, node_netns: Path, image_server: FileServer
) -> None:
    image = served_image(image_server, "no-shell.tar", "none", applets=(), name="no-shell")
    node.image_ensure_present(image)
    net0 = nic(5, "10.88.0.14/24", primary=True)
    broken = spec(image_uuid=image["uuid"], nics=[net0])
    with pytest.raises(HostCommandError):
        node.machine_create(broken)
    assert node.machine_load(broken["uuid"])["state"] == "failed"
    assert host_end(net0["mac"]) not in node_links(node_netns)
    assert chain_of(net0["mac"]) not in node_chains(node_netns)
    assert not node.network.machine_netns(broken["uuid"]).exists()


def test_a_nic_on_a_tag_the_node_lacks_fails_the_create_and_leaves_nothing(
    node: LinuxBackend, spec: SpecFactory, node_netns: Path
) -> None:
    stray = nic(16, "10.88.0.17/24", nic_tag="internal", primary=True)
    machine = spec(nics=[stray])
    with pytest.raises(BackendError) as exc:
        node.machine_create(machine)
    assert exc.value.code == "NicTagNotFound"
    assert node.machine_load(machine["uuid"])["state"] == "failed"
    assert not node.network.machine_netns(machine["uuid"]).exists()
    assert host_end(stray["mac"]) not in node_links(node_netns)
    assert node.status()["leftovers"] == []


def test_nics_come_and_go_on_a_running_machine(node: LinuxBackend, spec: SpecFactory,
                                               node_netns: Path) -> None:
    net0 = nic(6, "10.88.0.15/24", gateways=["10.88.0.1"], primary=True)
    machine = node.machine_create(spec(nics=[net0]))
    net1 = nic(7, "10.89.0.15/24", interface="net1", vlan_id=12, mtu=1300)
    # net1's network brings a route through its own gateway
    added = node.machine_add_nics(machine["uuid"], [net1], {"10.98.0.0/16": "10.89.0.1"})
    assert added["nics"] == [{"mac": net0["mac"], "interface": "net0"},
                             {"mac": net1["mac"], "interface": "net1"}]
    assert_nic_inside(node, machine["uuid"], net1)
    assert "10.98.0.0/16 via 10.89.0.1 dev net1" in routes_inside(node, machine["uuid"])
    # adding the same NIC again changes nothing
    assert node.machine_add_nics(machine["uuid"], [net1])["nics"] == added["nics"]
    assert node.status()["leftovers"] == []

    removed = node.machine_remove_nics(machine["uuid"], [net1["mac"], "90:b8:d0:00:00:00"])
    assert removed["nics"] == [{"mac": net0["mac"], "interface": "net0"}]
    assert "net1" not in links_inside(node, machine["uuid"])
    assert host_end(net1["mac"]) not in node_links(node_netns)
    assert chain_of(net1["mac"]) not in node_chains(node_netns)
    assert_nic_inside(node, machine["uuid"], net0)
    assert "default via 10.88.0.1 dev net0" in routes_inside(node, machine["uuid"])


def test_a_nic_added_to_a_stopped_machine_is_there_at_its_next_boot(
    node: LinuxBackend, spec: SpecFactory, node_netns: Path
) -> None:
    machine = node.machine_create(spec())
    node.machine_stop(machine["uuid"])
    net0 = nic(8, "10.88.0.16/24", primary=True)
    assert node.machine_add_nics(machine["uuid"], [net0])["state"] == "stopped"
    assert host_end(net0["mac"]) not in node_links(node_netns)
    node.machine_start(machine["uuid"])
    assert_nic_inside(node, machine["uuid"], net0)
    node.machine_stop(machine["uuid"])
    node.machine_remove_nics(machine["uuid"], [net0["mac"]])
    node.machine_start(machine["uuid"])
    assert set(links_inside(node, machine["uuid"])) == {"lo"}


def test_two_machines_on_the_node_reach_each_other(node: LinuxBackend,
                                                   spec: SpecFactory) -> None:
    a_nic, b_nic = nic(9, "10.88.0.21/24", primary=True), nic(10, "10.88.0.22/24", primary=True)
    a = node.machine_create(spec(alias="a", nics=[a_nic]))
    b = node.machine_create(spec(alias="b", nics=[b_nic]))
    out = inside(node, a["uuid"], "ping", "-c", "1", "-W", "3", "10.88.0.22")
    assert "1 packets received" in out
    assert "1 packets received" in inside(node, b["uuid"], "ping", "-c", "1", "-W", "3",
                                          "10.88.0.21")
    # b learned a's MAC from the ping: the frames carried the NIC's own
    neighbours = inside(node, b["uuid"], "ip", "neigh", "show", "dev", "net0")
    assert a_nic["mac"] in neighbours


def test_update_nics_changes_the_live_filter_and_refuses_an_unknown_mac(
    node: LinuxBackend, spec: SpecFactory
) -> None:
    a_nic, b_nic = nic(11, "10.88.0.31/24", primary=True), nic(15, "10.88.0.32/24", primary=True)
    a = node.machine_create(spec(alias="a", nics=[a_nic]))
    node.machine_create(spec(alias="b", nics=[b_nic]))
    with pytest.raises(BackendError) as exc:
        node.machine_update_nics(a["uuid"], [{"mac": "90:b8:d0:00:00:01",
                                              "allow_ip_spoofing": True}])
    assert exc.value.code == "NicNotFound"
    # a takes an address that is not its own: the node drops what it sends from it
    inside(node, a["uuid"], "ip", "addr", "add", "10.88.0.99/24", "dev", "net0")
    spoofed_ping = ("ping", "-c", "1", "-W", "2", "-I", "10.88.0.99", "10.88.0.32")
    with pytest.raises(HostCommandError):
        inside(node, a["uuid"], *spoofed_ping)
    node.machine_update_nics(a["uuid"], [{"mac": a_nic["mac"], "allow_ip_spoofing": True,
                                          "allowed_ips": None}])
    # a loaded machine may lose the first ping's ARP exchange: the filter is what is
    # tested, so a few tries within seconds, where the refused one never got through
    wait_until(lambda: "1 packets received" in inside(node, a["uuid"], *spoofed_ping),
               timeout=20, interval=0.5, message="the spoofed ping, now allowed, to return")
    record = json.loads((node.machines_dir / a["uuid"] / "machine.json").read_text())
    assert record["nics"][0]["allow_ip_spoofing"] is True
    assert record["nics"][0]["allow_mac_spoofing"] is False


# -- edges --------------------------------------------------------------------------------------


def test_a_machine_without_nics_has_an_empty_namespace_of_its_own(
    node: LinuxBackend, spec: SpecFactory
) -> None:
    machine = node.machine_create(spec())
    assert machine["nics"] == []
    assert set(links_inside(node, machine["uuid"])) == {"lo"}
    state = runc.state(node.runc_root, machine["uuid"])
    assert state is not None
    assert os.readlink(f"/proc/{state['pid']}/ns/net") != os.readlink("/proc/self/ns/net")
    assert "127.0.0.1/8" in addresses_inside(node, machine["uuid"], "lo")


def test_a_nic_without_a_gateway_gives_no_default_route(node: LinuxBackend,
                                                        spec: SpecFactory) -> None:
    net0 = nic(12, "10.88.0.40/24", primary=True)
    machine = node.machine_create(spec(nics=[net0]))
    assert routes_inside(node, machine["uuid"]) == [
        "10.88.0.0/24 dev net0 scope link src 10.88.0.40"]


def test_routes_go_through_the_nic_whose_network_holds_their_gateway(
    node: LinuxBackend, spec: SpecFactory
) -> None:
    net0 = nic(13, "10.88.0.50/24")
    net1 = nic(14, "10.89.0.50/24", interface="net1", gateways=["10.89.0.1"], primary=True)
    machine = node.machine_create(spec(nics=[net0, net1], routes={"10.99.0.0/16": "10.89.0.254",
                                                                  "10.77.0.5": "10.89.0.253"}))
    routes = routes_inside(node, machine["uuid"])
    assert "default via 10.89.0.1 dev net1" in routes
    assert "10.99.0.0/16 via 10.89.0.254 dev net1" in routes
    assert "10.77.0.5 via 10.89.0.253 dev net1" in routes
    assert not [r for r in routes if r.startswith("default") and "net0" in r]


def test_the_node_reports_its_tags_and_the_overlay_it_applied(node: LinuxBackend) -> None:
    info = node.sysinfo()
    assert info["nic_tags"] == ["admin", "external"]
    assert info["nic_tag_uplinks"] == {"admin": {"link": None, "underlay": None},
                                       "external": {"link": None, "underlay": None}}
    assert node.status()["overlay_version"] == ""
    assert node.set_overlay_peers({TAG: []}, "0123456789abcdef") == {
        "version": "0123456789abcdef"}
    assert node.status()["overlay_version"] == "0123456789abcdef"


def test_the_runner_builds_the_node_network_from_the_settings(
    btrfs_pool: LoopPool, node_netns: Path, tmp_path: Path
) -> None:
    settings = load_settings(backend="linux", pool=str(btrfs_pool.mount), data_dir=tmp_path,
                             runc_root=btrfs_pool.runc_root, nic_tags="external,internal",
                             nic_uplink="vxlan", node_netns=str(node_netns))
    backend = make_backend(settings)
    assert isinstance(backend, LinuxBackend)
    assert backend.network.node_netns == node_netns
    assert backend.network.machine_netns("x").parent == netns_dir(btrfs_pool.runc_root)
    assert backend.sysinfo()["nic_tags"] == ["external", "internal"]
