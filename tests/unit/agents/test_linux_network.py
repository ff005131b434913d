"""The Linux node's network library, for real: two "node" namespaces joined by a veth link
(the underlay, MTU 1600 so 1500-byte NICs fit in VXLAN), a NodeNetwork for each with VXLAN
uplinks and the other as its peer, and "machine" namespaces plugged with NICs that ping each
other with busybox. The 802.1Q uplink is checked by its argument lists (this kernel has no
802.1Q); the rules' rendering by its text.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.host.cmd import Completed, use_runner
from agents.backends.linux import netlines as names
from agents.backends.linux import network as net
from agents.backends.linux import nft
from agents.backends.linux.network import NodeNetwork
from schemas.nics import NicSpecSchema
from schemas.settings import SettingsError
from tests.support import netns

UNDERLAY_MTU = 1600


def make_nic(n: int, ip: str | None, *, tag: str = "external", vlan: int = 0,
             interface: str = "net0", primary: bool = True, gateways: Sequence[str] = (),
             mtu: int = 1500, **flags: Any) -> dict[str, Any]:
    spec = {"mac": f"02:08:20:00:00:{n:02x}", "interface": interface, "nic_tag": tag,
            "vlan_id": vlan, "ips": [ip] if ip else [], "gateways": list(gateways),
            "primary": primary, "mtu": mtu, **flags}
    loaded: dict[str, Any] = NicSpecSchema().load(spec)
    return loaded


# --- rendering (no host needed)


def test_nic_rules_drop_every_spoof_by_default() -> None:
    rules = nft.nic_rules(make_nic(1, "10.88.0.11/24", allowed_ips=["10.99.0.0/16",
                                                                    "10.88.0.11"]))
    assert rules == [
        "ether saddr != 02:08:20:00:00:01 drop",
        "arp saddr ether != 02:08:20:00:00:01 drop",
        "ether type != { ip, ip6, arp } drop",
        "udp sport { 67, 547 } drop",
        "arp saddr ip != { 0.0.0.0, 10.88.0.11, 10.99.0.0/16 } drop",
        "ip saddr != { 10.88.0.11, 10.99.0.0/16 } drop",
        "ip6 saddr != { ::, fe80::/10 } drop",
        "icmpv6 type nd-router-advert drop",
    ]


@pytest.mark.parametrize(("flag", "lifted"), [
    ("allow_mac_spoofing", {"ether saddr", "arp saddr ether"}),
    ("allow_restricted_traffic", {"ether type !="}),
    ("allow_ip_spoofing", {"arp saddr ip", "ip saddr", "ip6 saddr", "icmpv6"}),
    # DHCP spoofing implies IP spoofing, as in vmadm
    ("allow_dhcp_spoofing", {"udp sport", "arp saddr ip", "ip saddr", "ip6 saddr", "icmpv6"}),
])
def test_each_flag_lifts_its_rules(flag: str, lifted: set[str]) -> None:
    strict = nft.nic_rules(make_nic(1, "10.88.0.11/24"))
    lifting: dict[str, Any] = {flag: True}
    loose = nft.nic_rules(make_nic(1, "10.88.0.11/24", **lifting))
    gone = [rule for rule in strict if rule not in loose]
    assert {prefix for prefix in lifted if any(rule.startswith(prefix) for rule in gone)} == lifted
    assert len(gone) == len(lifted)


def test_a_nic_without_ips_sends_no_ipv4() -> None:
    rules = nft.nic_rules(make_nic(1, None))
    assert "ether type ip drop" in rules
    assert "arp saddr ip != { 0.0.0.0 } drop" in rules


def test_names_fit_ifnamsiz_and_vni_holds_tag_and_vlan() -> None:
    segment = names.vni("external", 4094)
    assert segment >> 12 == names.tag_hash("external") and segment & 0xFFF == 4094
    assert len(names.bridge_name(segment)) == len(names.vxlan_name(segment)) == 10
    assert names.host_veth("02:08:20:00:00:01") == "v020820000001"
    assert names.vlan_link_name("eth1", 0, segment) == "eth1"
    assert names.vlan_link_name("eth1", 42, segment) == "eth1.42"
    assert names.vlan_link_name("enp0s31f6abcd", 4094, segment) == f"sdcv{segment:06x}"


def test_colliding_tags_are_refused(tmp_path: Path) -> None:
    by_hash: dict[int, str] = {}
    for n in range(10_000):
        tag = f"tag{n}"
        if names.tag_hash(tag) in by_hash:
            first = by_hash[names.tag_hash(tag)]
            break
        by_hash[names.tag_hash(tag)] = tag
    with pytest.raises(SettingsError, match=f"{first} and {tag}"):
        NodeNetwork({first: None, tag: None}, "vxlan", tmp_path, tmp_path / "run")


def test_machine_lines_route_only_through_reachable_gateways() -> None:
    nics = [make_nic(1, "10.88.0.11/24", gateways=["10.88.0.1"]),
            make_nic(2, "10.99.0.5/24", interface="net1", primary=False)]
    routes = {"10.50.0.0/16": "10.99.0.1", "10.60.0.0/16": "10.77.0.1",
              "192.168.5.5": "nics[1]", "192.168.6.0/24": "macs[02:08:20:00:00:01]"}
    assert names.machine_lines(nics, routes, loopback=True) == [
        "link set lo up", "link set net0 up", "link set net1 up",
        "addr replace 10.88.0.11/24 dev net0", "addr replace 10.99.0.5/24 dev net1",
        "route replace default via 10.88.0.1 dev net0",
        "route replace 10.50.0.0/16 via 10.99.0.1 dev net1",
        "route replace 192.168.5.5 dev net1",
        "route replace 192.168.6.0/24 dev net0",
    ]


def test_vlan_uplink_argument_lists(tmp_path: Path) -> None:
    """802.1Q mode: the tag's link's sub-interface (the link itself for VLAN 0) is the
    bridge's port; no VXLAN, no fdb entries, no underlay reported."""
    calls: list[tuple[tuple[str, ...], str]] = []

    def runner(argv: Sequence[str], data: bytes | None, timeout: float,
               output: Path | None) -> Completed:
        calls.append((tuple(argv), (data or b"").decode()))
        out = json.dumps([{"ifname": "lo"}, {"ifname": "eth1", "mtu": 1500}]) \
            if "-j" in argv else ""
        return Completed(tuple(argv), 0, out, "")

    network = NodeNetwork({"external": "eth1"}, "vlan", tmp_path / "state", tmp_path / "run")
    nics = [make_nic(1, "10.88.0.11/24", vlan=42),
            make_nic(2, "10.88.1.11/24", vlan=0, interface="net1", primary=False)]
    with use_runner(runner):
        network.plug("m1", nics, {})
        uplinks = network.nic_tag_uplinks()
    assert uplinks == {"external": {"link": "eth1", "underlay": None}}
    b42 = names.bridge_name(names.vni("external", 42))
    b0 = names.bridge_name(names.vni("external", 0))
    node = f"/proc/{os.getpid()}/ns/net"
    assert [(argv, data.splitlines()) for argv, data in calls if argv[0] != "nft"] == [
        (("ip", "-j", "link", "show"), []),
        (("ip", "-batch", "-"), [
            f"link add {b42} type bridge", f"link set {b42} addrgenmode none",
            f"link set {b42} up",
            "link add eth1.42 link eth1 type vlan id 42", f"link set eth1.42 master {b42} up",
            f"link add {b0} type bridge", f"link set {b0} addrgenmode none", f"link set {b0} up",
            f"link set eth1 master {b0} up"]),
        (("unshare", f"--net={tmp_path}/run/m1", "ip", "-batch", "-"), [
            "link add net0 address 02:08:20:00:00:01 mtu 1500 type veth peer name v020820000001 "
            f"mtu 1500 netns {node}",
            "link add net1 address 02:08:20:00:00:02 mtu 1500 type veth peer name v020820000002 "
            f"mtu 1500 netns {node}",
            "link set lo up", "link set net0 up", "link set net1 up",
            "addr replace 10.88.0.11/24 dev net0", "addr replace 10.88.1.11/24 dev net1"]),
        (("ip", "-batch", "-"), [
            "link set v020820000001 addrgenmode none", f"link set v020820000001 master {b42} up",
            "link set v020820000002 addrgenmode none", f"link set v020820000002 master {b0} up"]),
    ]
    nft_scripts = [data for argv, data in calls if argv[0] == "nft"]
    assert len(nft_scripts) == 1 and "jump nic_020820000002" in nft_scripts[0]


@pytest.mark.parametrize(("returncode", "stderr", "mode"), [
    (0, "", "vlan"),
    (1, 'Cannot find device "sdcprobe0"\nCommand failed -:1\n', "vlan"),
    (1, "Error: Unknown device type.\nCommand failed -:3\n", "vxlan"),
    (127, "ip: command not found", "vxlan"),
])
def test_auto_asks_the_kernel_once(tmp_path: Path, returncode: int, stderr: str,
                                   mode: str) -> None:
    calls: list[tuple[str, ...]] = []

    def runner(argv: Sequence[str], data: bytes | None, timeout: float,
               output: Path | None) -> Completed:
        calls.append(tuple(argv))
        return Completed(tuple(argv), returncode, "", stderr)

    network = NodeNetwork({"external": "eth1"}, "auto", tmp_path, tmp_path / "run")
    with use_runner(runner):
        assert network.uplink_mode() == mode
        assert network.uplink_mode() == mode
    assert calls == [("ip", "-force", "-batch", "-")]


def test_an_unreadable_overlay_file_is_no_version(tmp_path: Path) -> None:
    (tmp_path / "overlay.json").write_text("{not json")
    assert NodeNetwork({}, "vxlan", tmp_path, tmp_path / "run").overlay_version() == ""


# --- for real, in namespaces


pytestmark_host = pytest.mark.skipif(netns.missing_host() is not None,
                                     reason=netns.missing_host() or "")


@dataclass
class Node:
    netns: Path
    network: NodeNetwork
    underlay: str

    def run(self, *argv: str) -> str:
        return netns.run_in(self.netns, argv).stdout

    def links(self) -> dict[str, dict[str, Any]]:
        return {link["ifname"]: link for link in json.loads(self.run("ip", "-j", "-d", "link"))}

    def ruleset(self) -> str:
        return self.run("nft", "list", "ruleset")


@pytest.fixture
def lab() -> Iterator[Path]:
    reason = netns.missing_host()
    if reason is not None:
        pytest.skip(reason)
    path = netns.workdir("linuxnet")
    try:
        yield path
    finally:
        netns.remove_workdir(path)


def make_node(lab: Path, name: str, underlay: str, link: str, *,
              uplink: str = "vxlan") -> Node:
    node_ns = netns.create(lab / f"{name}.node")
    network = NodeNetwork({"external": link, "admin": None}, uplink, lab / f"{name}-state",
                          lab / f"{name}-machines", node_netns=node_ns)
    return Node(node_ns, network, underlay)


@pytest.fixture
def nodes(lab: Path) -> tuple[Node, Node]:
    one = make_node(lab, "n1", "192.0.2.1", "u1")
    two = make_node(lab, "n2", "192.0.2.2", "u2")
    netns.link(one.netns, "u1", "192.0.2.1/24", two.netns, "u2", "192.0.2.2/24",
               mtu=UNDERLAY_MTU)
    one.network.set_peers({"external": [two.underlay]}, "p1")
    two.network.set_peers({"external": [one.underlay]}, "p1")
    return one, two


def plug(node: Node, *nics: dict[str, Any], routes: dict[str, str] | None = None) -> Path:
    machine = str(uuid.uuid4())
    node.network.plug(machine, list(nics), routes or {})
    wait_forwarding(node, [names.host_veth(nic["mac"]) for nic in nics])
    return node.network.machine_netns(machine)


def wait_forwarding(node: Node, ports: list[str], timeout: float = 2.0) -> None:
    """Wait until the bridge forwards on ``ports``: the kernel turns a port on when it hears
    of its carrier (linkwatch, a work queue), a moment after the plug's last command; on a
    loaded machine a single ping's first ARP request can fall into that moment."""
    deadline = time.monotonic() + timeout
    while True:
        states = {port["ifname"]: port.get("state")
                  for port in json.loads(node.run("bridge", "-j", "link", "show"))}
        if all(states.get(port) == "forwarding" for port in ports):
            return
        assert time.monotonic() < deadline, f"ports not forwarding: {states}"
        time.sleep(0.01)


def in_machine(machine: Path, *argv: str) -> str:
    return netns.run_in(machine, argv).stdout


@pytestmark_host
def test_same_network_pings_across_nodes(nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    a = plug(one, make_nic(1, "10.88.0.11/24", gateways=["10.88.0.1"]))
    b = plug(two, make_nic(2, "10.88.0.12/24"))
    assert netns.pings(a, "10.88.0.12", tries=3)
    assert netns.pings(b, "10.88.0.11")
    inside = json.loads(in_machine(a, "ip", "-j", "addr", "show", "net0"))[0]
    assert (inside["address"], inside["mtu"], inside["operstate"]) == \
        ("02:08:20:00:00:01", 1500, "UP")
    assert [f"{i['local']}/{i['prefixlen']}" for i in inside["addr_info"]
            if i["family"] == "inet"] == ["10.88.0.11/24"]
    assert "default via 10.88.0.1 dev net0" in in_machine(a, "ip", "route")
    # node 1's uplink: VXLAN to node 2 only, no learning, on the bridge of (external, 0)
    segment = names.vni("external", 0)
    vxlan = one.links()[names.vxlan_name(segment)]
    assert vxlan["master"] == names.bridge_name(segment)
    assert vxlan["linkinfo"]["info_data"]["id"] == segment
    assert vxlan["linkinfo"]["info_data"]["learning"] is False
    # the node has no address on the machines' segments (nothing of its own to reach)
    assert one.run("ip", "-6", "addr", "show", "dev", names.bridge_name(segment)) == ""
    assert one.run("ip", "-6", "addr", "show", "dev", "v020820000001") == ""


@pytestmark_host
def test_another_vlan_of_the_tag_is_out_of_reach(nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    a = plug(one, make_nic(1, "10.88.0.11/24"))
    plug(two, make_nic(2, "10.88.0.12/24"))
    plug(two, make_nic(3, "10.88.0.13/24", vlan=5))
    assert netns.pings(a, "10.88.0.12", tries=3)
    assert not netns.pings(a, "10.88.0.13")


@pytestmark_host
def test_a_second_address_gets_no_answer_until_ip_spoofing_is_allowed(
        nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    spec = make_nic(1, "10.88.0.11/24")
    a = plug(one, spec)
    plug(two, make_nic(2, "10.88.0.12/24"))
    assert netns.pings(a, "10.88.0.12", tries=3)
    in_machine(a, "ip", "addr", "add", "10.88.0.50/24", "dev", "net0")
    assert not netns.pings(a, "10.88.0.12", source="10.88.0.50")
    one.network.update_filters([{**spec, "allow_ip_spoofing": True}])
    assert netns.pings(a, "10.88.0.12", source="10.88.0.50", tries=2)
    assert "ip saddr" not in one.ruleset()


@pytestmark_host
def test_a_changed_mac_gets_no_answer_until_mac_spoofing_is_allowed(
        nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    spec = make_nic(1, "10.88.0.11/24")
    a = plug(one, spec)
    b = plug(two, make_nic(2, "10.88.0.12/24"))
    assert netns.pings(a, "10.88.0.12", tries=3)
    in_machine(a, "ip", "link", "set", "net0", "address", "02:08:20:00:00:99")
    in_machine(b, "ip", "neigh", "flush", "all")
    assert not netns.pings(a, "10.88.0.12")
    one.network.update_filters([{**spec, "allow_mac_spoofing": True}])
    in_machine(b, "ip", "neigh", "flush", "all")
    assert netns.pings(a, "10.88.0.12", tries=2)


#: sends one broadcast frame of ether type 0x88b5 (local experimental) on net0
SEND_FRAME = """
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("net0", 0))
s.send(b"\\xff" * 6 + bytes.fromhex("020820000001") + b"\\x88\\xb5" + b"sdc-test" * 8)
"""
#: prints "got" when such a frame arrives on net0 within a second, else "none"
RECEIVE_FRAME = """
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("net0", 0))
s.settimeout(1.0)
print("ready", flush=True)
try:
    while True:
        if s.recv(2048)[12:14] == b"\\x88\\xb5":
            print("got")
            break
except socket.timeout:
    print("none")
"""


def heard(sender: Path, send: list[str], receiver: Path, receive: str) -> str:
    """What the ``receive`` script, listening in ``receiver``, printed after ``send`` ran
    in ``sender`` (the listener says "ready" first, then one line)."""
    listen = subprocess.Popen(["nsenter", f"--net={receiver}", sys.executable, "-c",
                               receive], stdout=subprocess.PIPE, text=True)
    try:
        assert listen.stdout is not None and listen.stdout.readline().strip() == "ready"
        netns.run_in(sender, [sys.executable, "-c", *send])
        return listen.stdout.readline().strip()
    finally:
        listen.wait(timeout=5)


def frame_arrives(sender: Path, receiver: Path) -> bool:
    return heard(sender, [SEND_FRAME], receiver, RECEIVE_FRAME) == "got"



#: binds UDP port 67 (a DHCP server's) and sends one datagram to argv[1]:9967
SEND_FROM_67 = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 67))
s.sendto(b"offer", (sys.argv[1], 9967))
"""
#: prints what arrives on UDP port 9967 within a second, else "none"
RECEIVE_ON_9967 = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 9967))
s.settimeout(1.0)
print("ready", flush=True)
try:
    print(s.recv(100).decode())
except socket.timeout:
    print("none")
"""


def dhcp_reply_arrives(sender: Path, receiver: Path, address: str) -> bool:
    return heard(sender, [SEND_FROM_67, address], receiver, RECEIVE_ON_9967) == "offer"


def dhcp_reply_to_b_arrives(sender: Path, receiver: Path) -> bool:
    return dhcp_reply_arrives(sender, receiver, "10.99.0.12")


@pytestmark_host
@pytest.mark.parametrize(("flag", "arrives"), [
    ("allow_restricted_traffic", frame_arrives),  # an ether type other than ip, ip6, arp
    ("allow_dhcp_spoofing", dhcp_reply_to_b_arrives),  # a DHCP server's reply
])
def test_what_a_flag_lets_through_passes_only_with_it(
        lab: Path, flag: str, arrives: Callable[[Path, Path], bool]) -> None:
    node = make_node(lab, "n1", "192.0.2.1", "u1")
    spec = make_nic(1, "10.99.0.11/24", tag="admin")
    a = plug(node, spec)
    b = plug(node, make_nic(2, "10.99.0.12/24", tag="admin"))
    assert netns.pings(a, "10.99.0.12")
    assert not arrives(a, b)
    node.network.update_filters([{**spec, flag: True}])
    assert arrives(a, b)


@pytestmark_host
def test_plug_twice_changes_nothing(nodes: tuple[Node, Node]) -> None:
    one, _ = nodes
    machine = str(uuid.uuid4())
    nics = [make_nic(1, "10.88.0.11/24", gateways=["10.88.0.1"]),
            make_nic(2, "10.99.0.11/24", tag="admin", interface="net1", primary=False)]
    routes = {"10.50.0.0/16": "10.99.0.1"}
    one.network.plug(machine, nics, routes)
    inside = one.network.machine_netns(machine)

    def snapshot() -> tuple[str, ...]:
        # what changes on its own is left out: the bridges' timers, the MACs they learn, IPv6
        # link-local addresses going from tentative to valid, a new bridge's operstate going
        # from UNKNOWN to UP once the kernel has seen its first port up
        links = re.sub(r"\w+_timer\s+[0-9.]+", "", one.run("ip", "-d", "link"))
        links = re.sub(r" state (UNKNOWN|UP) ", " state UP ", links)
        fdb = [line for line in one.run("bridge", "fdb", "show").splitlines()
               if "permanent" in line]
        return (links, one.ruleset(), "\n".join(fdb), in_machine(inside, "ip", "-d", "link"),
                in_machine(inside, "ip", "-4", "addr"), in_machine(inside, "ip", "route"))

    before = snapshot()
    one.network.plug(machine, nics, routes)
    after = snapshot()
    for was, now in zip(before, after, strict=True):
        assert now == was, "\n".join(difflib.unified_diff(was.splitlines(), now.splitlines()))
    assert "10.50.0.0/16 via 10.99.0.1 dev net1" in before[-1]


@pytestmark_host
def test_unplug_leaves_no_veth_chain_element_or_namespace(nodes: tuple[Node, Node]) -> None:
    one, _ = nodes
    machine = str(uuid.uuid4())
    macs = ["02:08:20:00:00:01", "02:08:20:00:00:02"]
    one.network.plug(machine, [make_nic(1, "10.88.0.11/24"),
                               make_nic(2, "10.99.0.11/24", tag="admin", interface="net1",
                                        primary=False)], {})
    assert "v020820000002" in one.links()
    one.network.unplug(machine, macs)
    links = one.links()
    assert not [name for name in links if names.HOST_VETH.match(name)]
    assert not [link for link in links.values() if link.get("master", "").startswith("sdcb")
                and not link["ifname"].startswith("sdcx")]
    ruleset = one.ruleset()
    assert "nic_" not in ruleset and "v0208" not in ruleset
    assert not one.network.machine_netns(machine).exists()
    assert one.network.leftovers({}) == []
    one.network.unplug(machine, macs)  # again: nothing to do, no error


@pytestmark_host
def test_leftovers_names_what_no_machine_owns(nodes: tuple[Node, Node]) -> None:
    one, _ = nodes
    machine = str(uuid.uuid4())
    one.network.plug(machine, [make_nic(1, "10.88.0.11/24")], {})
    one.run("ip", "link", "add", "v0208200000ff", "type", "veth", "peer", "name", "x0")
    netns.run_in(one.netns, ["nft", "-f", "-"],
                 input="add chain bridge sdc nic_0208200000fe\n")
    stray = str(uuid.uuid4())
    (one.network.runtime_dir / stray).touch()
    assert one.network.leftovers({machine: ["02:08:20:00:00:01"]}) == [
        "veth:v0208200000ff", "nft:nic_0208200000fe", f"netns:{stray}"]
    assert one.network.leftovers({}) == [
        "veth:v020820000001", "veth:v0208200000ff", "nft:nic_020820000001",
        "nft:nic_0208200000fe", *sorted([f"netns:{machine}", f"netns:{stray}"])]


@pytestmark_host
def test_nics_come_and_go_on_a_plugged_machine(nodes: tuple[Node, Node]) -> None:
    one, _ = nodes
    machine = str(uuid.uuid4())
    a = plug(one, make_nic(3, "10.99.0.13/24", tag="admin"))
    one.network.plug(machine, [make_nic(1, "10.88.0.11/24")], {})
    inside = one.network.machine_netns(machine)
    extra = make_nic(2, "10.99.0.11/24", tag="admin", interface="net1", primary=False)
    one.network.add_nics(machine, [extra], {"10.50.0.0/16": "10.99.0.1"})
    wait_forwarding(one, ["v020820000002"])
    net1 = json.loads(in_machine(inside, "ip", "-j", "addr", "show", "net1"))[0]
    assert net1["address"] == "02:08:20:00:00:02"
    assert "10.50.0.0/16 via 10.99.0.1 dev net1" in in_machine(inside, "ip", "route")
    assert netns.pings(inside, "10.99.0.13") and netns.pings(a, "10.99.0.11")
    one.network.remove_nics(machine, ["02:08:20:00:00:02"])
    assert "net1" not in in_machine(inside, "ip", "link")
    assert "v020820000002" not in one.links()
    assert "nic_020820000002" not in one.ruleset()
    assert "net0" in in_machine(inside, "ip", "link")
    one.network.remove_nics(machine, ["02:08:20:00:00:02"])  # again: no error
    with pytest.raises(BackendError) as missing:
        one.network.add_nics(str(uuid.uuid4()), [extra], {})
    assert missing.value.code == "MachineNetworkMissing"


def fdb_peers(node: Node, device: str) -> list[str]:
    return sorted(entry["dst"] for entry in json.loads(node.run("bridge", "-j", "fdb", "show",
                                                                 "dev", device))
                  if entry["mac"] == names.ANY_MAC)


@pytestmark_host
def test_set_peers_replaces_the_forwarding_entries(nodes: tuple[Node, Node]) -> None:
    one, _ = nodes
    plug(one, make_nic(1, "10.88.0.11/24"), make_nic(2, "10.88.1.11/24", vlan=7,
                                                     interface="net1", primary=False))
    devices = [names.vxlan_name(names.vni("external", vlan)) for vlan in (0, 7)]
    assert [fdb_peers(one, device) for device in devices] == [["192.0.2.2"]] * 2
    one.network.set_peers({"external": ["192.0.2.2", "192.0.2.9"]}, "p2")
    assert [fdb_peers(one, device) for device in devices] == [["192.0.2.2", "192.0.2.9"]] * 2
    one.network.set_peers({"external": ["192.0.2.3"]}, "p3")
    assert [fdb_peers(one, device) for device in devices] == [["192.0.2.3"]] * 2
    assert one.network.overlay_version() == "p3"
    one.network.set_peers({}, "p4")
    assert [fdb_peers(one, device) for device in devices] == [[], []]
    again = NodeNetwork(one.network.nic_tags, "vxlan", one.network.state_dir,
                        one.network.runtime_dir, node_netns=one.netns)
    assert again.overlay_version() == "p4"
    with pytest.raises(BackendError, match="not an IPv4"):
        one.network.set_peers({"external": ["nope"]}, "p5")
    assert one.network.overlay_version() == "p4"


@pytestmark_host
def test_auto_uplink_falls_back_to_vxlan_here_and_reports_underlays(lab: Path) -> None:
    node = make_node(lab, "n1", "192.0.2.1", "u1", uplink="auto")
    other = netns.create(lab / "other.node")
    netns.link(node.netns, "u1", "192.0.2.1/24", other, "u2", "192.0.2.2/24")
    assert node.network.nic_tag_uplinks() == {
        "external": {"link": "u1", "underlay": "192.0.2.1"},
        "admin": {"link": None, "underlay": None}}
    assert node.network.uplink_mode() == "vxlan"
    assert "sdcprobe0" not in node.links()


@pytestmark_host
def test_a_link_without_ipv4_has_no_uplink_and_says_so(
        lab: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = make_node(lab, "n1", "192.0.2.1", "u1")
    node.run("ip", "link", "add", "u1", "type", "veth", "peer", "name", "u1peer")
    with caplog.at_level(logging.WARNING, logger=net.__name__):
        a = plug(node, make_nic(1, "10.88.0.11/24"))
        b = plug(node, make_nic(2, "10.88.0.12/24"))
    assert "u1 has no IPv4 address" in caplog.text
    assert not [name for name in node.links() if name.startswith("sdcx")]
    assert netns.pings(a, "10.88.0.12") and netns.pings(b, "10.88.0.11")


@pytestmark_host
def test_edges_no_nics_no_gateway_small_and_jumbo_mtu(lab: Path) -> None:
    node = make_node(lab, "n1", "192.0.2.1", "u1")
    empty = plug(node)
    links = json.loads(in_machine(empty, "ip", "-j", "link"))
    assert [(link["ifname"], "UP" in link["flags"]) for link in links] == [("lo", True)]
    assert node.ruleset().strip() == ""
    bare = plug(node, make_nic(1, "10.99.0.11/24", tag="admin", mtu=576))
    # (no "linkdown": that flag, too, follows the carrier a moment late)
    assert [line.replace("linkdown", "").strip()
            for line in in_machine(bare, "ip", "route").splitlines()] == [
        "10.99.0.0/24 dev net0 proto kernel scope link src 10.99.0.11"]
    assert json.loads(in_machine(bare, "ip", "-j", "link", "show", "net0"))[0]["mtu"] == 576
    assert node.links()["v020820000001"]["mtu"] == 576
    jumbo = [plug(node, make_nic(n, f"10.99.1.{n}/24", tag="admin", vlan=9, mtu=9000))
             for n in (2, 3)]
    assert json.loads(in_machine(jumbo[0], "ip", "-j", "link", "show", "net0"))[0]["mtu"] == 9000
    assert netns.pings(jumbo[0], "10.99.1.3", size=8900)


@pytestmark_host
def test_a_failed_plug_removes_what_it_made(nodes: tuple[Node, Node]) -> None:
    one, _ = nodes
    machine = str(uuid.uuid4())
    before = set(one.links())
    with pytest.raises(BackendError) as failed:
        one.network.plug(machine, [make_nic(1, "10.88.0.11/24", gateways=["10.77.0.1"])], {})
    assert "Nexthop has invalid gateway" in failed.value.message or "unreachable" in \
        failed.value.message.lower()
    assert set(one.links()) <= before | {names.bridge_name(names.vni("external", 0))}
    assert "nic_" not in one.ruleset()
    assert not one.network.machine_netns(machine).exists()
    with pytest.raises(BackendError) as unknown:
        one.network.plug(machine, [make_nic(1, "10.88.0.11/24", tag="nope")], {})
    assert unknown.value.code == "NicTagNotFound"
    assert not one.network.machine_netns(machine).exists()


@pytestmark_host
def test_plug_repairs_what_changed_behind_its_back(nodes: tuple[Node, Node]) -> None:
    """A host veth end left by a stop cut short is replaced; a bridge deleted by hand after
    the agent made it is made again (with its uplink and peers)."""
    one, two = nodes
    b = plug(two, make_nic(2, "10.88.0.12/24"))
    plug(one, make_nic(3, "10.88.0.13/24"))
    one.run("ip", "link", "add", "v020820000001", "type", "veth", "peer", "name", "old0")
    bridge = names.bridge_name(names.vni("external", 0))
    one.run("ip", "link", "del", bridge)
    one.run("ip", "link", "del", names.vxlan_name(names.vni("external", 0)))
    a = plug(one, make_nic(1, "10.88.0.11/24"))
    assert one.links()["v020820000001"]["master"] == bridge
    assert "old0" not in one.links()
    assert fdb_peers(one, names.vxlan_name(names.vni("external", 0))) == ["192.0.2.2"]
    assert netns.pings(a, "10.88.0.12", tries=3) and netns.pings(b, "10.88.0.11")


#: plugs two machines from inside the node's namespace, as the agent runs in production
#: (node_netns None): argv[1] the runtime dir, argv[2:] the machines' uuids
PLUG_IN_OWN_NAMESPACE = """
import sys
from pathlib import Path
from agents.backends.linux.network import NodeNetwork
from schemas.nics import NicSpecSchema
network = NodeNetwork({"admin": None}, "auto", Path(sys.argv[1]), Path(sys.argv[1]))
for n, uuid in enumerate(sys.argv[2:], start=1):
    nic = NicSpecSchema().load({"mac": f"02:08:20:00:00:{n:02x}", "interface": "net0",
                                "nic_tag": "admin", "ips": [f"10.99.0.{n}/24"]})
    network.plug(uuid, [nic], {})
"""


@pytestmark_host
def test_plugs_from_the_agents_own_namespace(lab: Path) -> None:
    node = make_node(lab, "n1", "192.0.2.1", "u1")
    machines = [str(uuid.uuid4()), str(uuid.uuid4())]
    runtime = lab / "own"
    netns.run_in(node.netns, [sys.executable, "-c", PLUG_IN_OWN_NAMESPACE, str(runtime),
                              *machines])
    wait_forwarding(node, ["v020820000001", "v020820000002"])
    assert netns.pings(runtime / machines[0], "10.99.0.2")
    assert "nic_020820000002" in node.ruleset()


@pytestmark_host
def test_plug_and_unplug_timings(nodes: tuple[Node, Node]) -> None:
    """Not a benchmark: a guard that one NIC's plug and unplug stay in the tens of ms."""
    one, _ = nodes
    plug(one, make_nic(9, "10.88.0.19/24"))  # the bridge and uplink exist from here on
    plugs, unplugs = [], []
    for n in range(5):
        machine = str(uuid.uuid4())
        nic = make_nic(n + 1, f"10.88.0.{n + 20}/24", gateways=["10.88.0.1"])
        started = time.perf_counter()
        one.network.plug(machine, [nic], {})
        plugs.append(time.perf_counter() - started)
        started = time.perf_counter()
        one.network.unplug(machine, [nic["mac"]])
        unplugs.append(time.perf_counter() - started)
    print(f"plug p50 {sorted(plugs)[2] * 1000:.1f} ms, unplug p50 "
          f"{sorted(unplugs)[2] * 1000:.1f} ms")
    assert sorted(plugs)[2] < 1.0 and sorted(unplugs)[2] < 1.0
