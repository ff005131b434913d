"""Machines on the network, end to end: the head node's processes and two real Linux nodes,
each an `sdc agent run --backend linux` with its own btrfs pool and its node network in a
namespace this test makes; the two namespaces are joined by a veth link that carries the
nodes' VXLAN uplinks (this kernel has no 802.1Q). Nothing is made in the host's own network
namespace and no packet leaves the test's namespaces.

What is asserted is what the kernels say: `ip` inside the machines, `ping` between them,
`ip -d link`, `bridge link` and `nft list ruleset` in the node namespaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import netns
from tests.support.btrfs import missing_host

MISSING = missing_host() or netns.missing_host()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

# Imported after the skip decision: these drive btrfs, runc and namespaces on the host.
from agents.backends.host import runc  # noqa: E402
from agents.backends.host.cmd import HostCommandError  # noqa: E402
from tests.support.linux_cloud import (  # noqa: E402
    LinuxCloud,
    LinuxNode,
    cloud_with_namespaces,
)
from tests.support.triton import home_with_key, triton_runner  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

PACKAGE: dict[str, Any] = {"name": "lx-net", "memory": 128, "disk": 48}
LAN = {"name": "lan0", "subnet": "10.70.0.0/24", "gateway": "10.70.0.1",
       "provision_start_ip": "10.70.0.10", "provision_end_ip": "10.70.0.99",
       "resolvers": ["10.70.0.2"], "nic_tag": "external", "vlan_id": 0, "public": True}
LAN5 = {"name": "lan5", "subnet": "10.70.5.0/24", "gateway": "10.70.5.1",
        "provision_start_ip": "10.70.5.10", "provision_end_ip": "10.70.5.99",
        "nic_tag": "external", "vlan_id": 5, "public": True}


#: the link each node's namespace has to the other's, which carries its VXLAN uplink
UNDERLAY_LINK = "ul0"
UNDERLAY_ADDRESSES = ("192.0.2.1/24", "192.0.2.2/24")


class NetCloud(LinuxCloud):
    def place(self, alias: str, node: LinuxNode, *networks: str) -> dict[str, Any]:
        return self.provision(alias, PACKAGE["name"], server_uuid=node.server,
                              networks=list(networks))

    def nics(self, machine_uuid: str) -> list[dict[str, Any]]:
        return list(self.api.get(f"/ops/machines/{machine_uuid}/nics"))

    def pings(self, machine_uuid: str, address: str, source: str | None = None,
              tries: int = 2) -> bool:
        """One answer within ``tries`` pings of 2 s (the first packet of a fresh path may be
        lost while neighbours are found)."""
        argv = ["ping", "-c", "1", "-W", "2", *(["-I", source] if source else []), address]
        for _ in range(tries):
            try:
                self.inside(machine_uuid, *argv)
            except HostCommandError:
                continue
            return True
        return False

    def link(self, machine_uuid: str, interface: str) -> dict[str, Any] | None:
        """What `ip` inside the machine says of one interface: mac, mtu, IPv4 addresses."""
        try:
            out = self.inside(machine_uuid, "ip", "-o", "addr", "show", "dev", interface)
            link = self.inside(machine_uuid, "ip", "-o", "link", "show", "dev", interface)
        except HostCommandError:
            return None
        mac = re.search(r"link/ether ([0-9a-f:]{17})", link)
        mtu = re.search(r"mtu (\d+)", link)
        return {"mac": mac.group(1) if mac else None, "mtu": int(mtu.group(1)) if mtu else None,
                "ips": re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out)}

    def node_says(self, node: LinuxNode, *argv: str) -> str:
        assert node.netns is not None
        return netns.run_in(node.netns, list(argv)).stdout

    def report(self) -> str:
        """What each node's namespace holds, for a failed assertion's message."""
        parts = []
        for node in self.nodes:
            for argv in (["ip", "-d", "-br", "link"], ["bridge", "fdb", "show"],
                         ["bridge", "link"], ["nft", "list", "ruleset"]):
                parts.append(f"--- {node.name}: {' '.join(argv)}\n"
                             + netns.run_in(node.netns, argv, check=False).stdout
                             if node.netns else "")
        return "\n".join(parts)

    def set_flags(self, machine_uuid: str, mac: str, **flags: Any) -> None:
        self.succeed(self.api.put(f"/ops/machines/{machine_uuid}/nics/{mac}", flags))


@pytest.fixture(scope="module")
def cloud(postgres_server: Any, redis_server: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCloud]:
    workdir = tmp_path_factory.mktemp("linux-net")
    spaces = netns.workdir("e2e")
    nodes = [netns.create(spaces / "node0"), netns.create(spaces / "node1")]
    # MTU 1600 under 1500-byte NICs: room for VXLAN's 50 bytes
    netns.link(nodes[0], UNDERLAY_LINK, UNDERLAY_ADDRESSES[0],
               nodes[1], UNDERLAY_LINK, UNDERLAY_ADDRESSES[1], mtu=1600)
    with cloud_with_namespaces(postgres_server, redis_server, workdir, NetCloud, spaces) as c:
        for i, space in enumerate(nodes):
            c.add_node(f"net{i}", space, {"SDC_NIC_TAGS": f"external:{UNDERLAY_LINK}",
                                          "SDC_NIC_UPLINK": "vxlan"})
        c.seed([PACKAGE])
        for network in (LAN, LAN5):
            c.api.post("/ops/networks", network)
        yield c


@pytest.fixture(scope="module")
def pair(cloud: NetCloud) -> tuple[dict[str, Any], dict[str, Any]]:
    """One machine on each node, both on lan0."""
    first, second = cloud.nodes
    return cloud.place("a", first, "lan0"), cloud.place("b", second, "lan0")


def test_machines_on_two_nodes_reach_each_other_with_what_the_api_says(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = pair
    for machine in (a, b):
        nic = cloud.nics(machine["uuid"])[0]
        seen = cloud.link(machine["uuid"], "net0")
        assert seen is not None
        assert (seen["mac"], seen["ips"], seen["mtu"]) == (nic["mac"], [f"{nic['ip']}/24"],
                                                           1500)
        routes = cloud.inside(machine["uuid"], "ip", "route")
        assert "default via 10.70.0.1 dev net0" in routes
        assert cloud.inside(machine["uuid"], "cat", "/etc/resolv.conf").split() == [
            "nameserver", "10.70.0.2"]
    assert cloud.pings(a["uuid"], b["primary_ip"]), cloud.report()
    assert cloud.pings(b["uuid"], a["primary_ip"]), cloud.report()


def test_a_machine_on_another_vlan_of_the_tag_cannot_reach_them(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, _ = pair
    other = cloud.place("c", cloud.nodes[1], "lan5")
    mac = cloud.nics(other["uuid"])[0]["mac"]
    # Even from an address of lan0's subnet, which its own NIC's filter is told to allow:
    # only the VLAN keeps it apart.
    cloud.set_flags(other["uuid"], mac, allow_ip_spoofing=True)
    cloud.inside(other["uuid"], "ip", "addr", "add", "10.70.0.200/24", "dev", "net0")
    assert not cloud.pings(other["uuid"], a["primary_ip"], source="10.70.0.200")
    assert not cloud.pings(a["uuid"], "10.70.0.200")
    cloud.succeed(cloud.api.delete(f"/ops/machines/{other['uuid']}"))


def test_a_spoofed_address_or_mac_gets_no_answer_until_the_operator_allows_it(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = pair
    mac = cloud.nics(a["uuid"])[0]["mac"]
    # b must ask again where a is after each change (it caches what it learnt, or failed to)
    forget = ("ip", "neigh", "flush", "dev", "net0")
    cloud.inside(a["uuid"], "ip", "addr", "add", "10.70.0.201/24", "dev", "net0")
    try:
        assert not cloud.pings(a["uuid"], b["primary_ip"], source="10.70.0.201")
        cloud.set_flags(a["uuid"], mac, allow_ip_spoofing=True)
        cloud.inside(b["uuid"], *forget)
        assert cloud.pings(a["uuid"], b["primary_ip"], source="10.70.0.201")
        cloud.set_flags(a["uuid"], mac, allow_ip_spoofing=False)
        cloud.inside(b["uuid"], *forget)
        assert not cloud.pings(a["uuid"], b["primary_ip"], source="10.70.0.201")
    finally:
        cloud.inside(a["uuid"], "ip", "addr", "del", "10.70.0.201/24", "dev", "net0")

    cloud.inside(a["uuid"], "ip", "link", "set", "net0", "address", "90:b8:d0:ee:ee:01")
    try:
        cloud.inside(b["uuid"], *forget)
        assert not cloud.pings(a["uuid"], b["primary_ip"])
        cloud.set_flags(a["uuid"], mac, allow_mac_spoofing=True)
        cloud.inside(b["uuid"], *forget)
        assert cloud.pings(a["uuid"], b["primary_ip"])
        cloud.set_flags(a["uuid"], mac, allow_mac_spoofing=False)
        cloud.inside(b["uuid"], *forget)
        assert not cloud.pings(a["uuid"], b["primary_ip"])
    finally:
        cloud.inside(a["uuid"], "ip", "link", "set", "net0", "address", mac)
    cloud.inside(b["uuid"], *forget)
    assert cloud.pings(a["uuid"], b["primary_ip"])


@pytest.fixture(scope="module")
def triton(cloud: NetCloud, triton_bin: str,
           tmp_path_factory: pytest.TempPathFactory) -> Any:
    """alice's `triton` CLI, with a fresh key she registered through the operator API."""
    from tests.support.httpsig_client import Signer

    signer = Signer("alice")
    cloud.api.post("/ops/accounts/alice/keys", {"key": signer.public_line, "name": "cli"})
    home = home_with_key(tmp_path_factory.mktemp("alice-home"), signer)
    return triton_runner(triton_bin, home, "alice", signer.fingerprint,
                         f"http://{cloud.env['SDC_API_BIND']}")


def test_triton_nic_create_plugs_net1_into_the_running_machine_and_delete_unplugs_it(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]], triton: Any) -> None:
    a, _ = pair
    peer = cloud.place("d", cloud.nodes[1], "lan5")
    created = json.loads(triton("instance", "nic", "create", "--wait", "-j", a["uuid"], "lan5"))
    assert created["ip"].startswith("10.70.5.")
    seen = cloud.link(a["uuid"], "net1")
    assert seen is not None and seen["mac"] == created["mac"]
    assert seen["ips"] == [f"{created['ip']}/24"]
    assert cloud.pings(a["uuid"], peer["primary_ip"])
    listed = triton("instance", "nic", "list", "-j", a["uuid"])
    assert created["mac"] in listed
    triton("instance", "nic", "delete", "--force", a["uuid"], created["mac"])
    wait_until(lambda: cloud.link(a["uuid"], "net1") is None, timeout=30,
               message="net1 to go from the machine")
    # the row goes, and the address with it, once the job has heard from the node
    wait_until(lambda: created["ip"] not in json.dumps(cloud.api.get("/ops/networks/lan5/ips")),
               timeout=30, message="the address to be free again")
    assert len(cloud.nics(a["uuid"])) == 1
    cloud.succeed(cloud.api.delete(f"/ops/machines/{peer['uuid']}"))


def _identity(cloud: NetCloud, machine: dict[str, Any]) -> dict[str, Any] | None:
    return cloud.link(machine["uuid"], "net0")


def test_the_same_nic_comes_back_after_stop_start_reboot_and_an_agent_restart(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = pair
    before = _identity(cloud, a)
    assert before is not None
    cloud.act(a["uuid"], action="stop")
    assert _identity(cloud, a) is None  # no process, no namespace to look into
    cloud.act(a["uuid"], action="start")
    assert _identity(cloud, a) == before
    cloud.act(a["uuid"], action="reboot")
    assert _identity(cloud, a) == before
    node = cloud.node_of(a["uuid"])
    cloud.procs.restart(f"agent-{node.name}")
    assert _identity(cloud, a) == before  # the running machine kept its NIC
    cloud.act(a["uuid"], action="reboot")
    assert _identity(cloud, a) == before
    assert cloud.pings(a["uuid"], b["primary_ip"])


def _reboot_node(cloud: NetCloud, node: LinuxNode) -> None:
    """What a node's reboot takes away, with its agent down meanwhile: every container, every
    machine's network namespace (tmpfs), the node's own links and its nft table."""
    cloud.procs.stop(f"agent-{node.name}")
    for container in runc.list_containers(node.pool.runc_root):
        runc.delete(node.pool.runc_root, container["id"], force=True)
    runtime = node.pool.runc_root.with_name(node.pool.runc_root.name + "-netns")
    for space in runtime.iterdir() if runtime.is_dir() else []:
        netns.delete(space)
    assert node.netns is not None
    for link in json.loads(cloud.node_says(node, "ip", "-j", "link", "show")):
        if link["ifname"].startswith(("sdcb", "sdcx", "v")):
            netns.run_in(node.netns, ["ip", "link", "del", link["ifname"]], check=False)
    netns.run_in(node.netns, ["nft", "delete", "table", "bridge", "sdc"], check=False)
    cloud.start_agent(node)


def test_after_a_node_reboot_the_machine_starts_with_the_same_nic(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = pair
    before = _identity(cloud, a)
    assert before is not None
    _reboot_node(cloud, cloud.node_of(a["uuid"]))
    wait_until(lambda: cloud.api.get(f"/ops/machines/{a['uuid']}")["state"] == "stopped",
               timeout=60, message="the head node to see the machine stopped")
    cloud.act(a["uuid"], action="start")
    assert _identity(cloud, a) == before
    assert cloud.pings(a["uuid"], b["primary_ip"])


def test_destroy_leaves_no_veth_chain_bridge_port_or_address(
        cloud: NetCloud, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, b = pair
    node = cloud.node_of(b["uuid"])
    mac = cloud.nics(b["uuid"])[0]["mac"]
    hexmac = mac.replace(":", "")
    assert f"v{hexmac}" in cloud.node_says(node, "ip", "-d", "link")
    cloud.succeed(cloud.api.delete(f"/ops/machines/{b['uuid']}"))
    assert f"v{hexmac}" not in cloud.node_says(node, "ip", "-d", "link")
    assert hexmac not in cloud.node_says(node, "nft", "list", "ruleset")
    assert f"v{hexmac}" not in cloud.node_says(node, "bridge", "link")
    assert b["primary_ip"] not in json.dumps(cloud.api.get("/ops/networks/lan0/ips"))
