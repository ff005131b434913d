"""Names and command lines of a node's network, as pure functions (no host access): the VNI
and device names of a (nic tag, VLAN) segment, a NIC's host veth end, and the ``ip`` and
``bridge`` batch lines :class:`agents.backends.linux.network.NodeNetwork` runs.

- VNI of a (tag, VLAN) = ``(crc32(tag) & 0xfff) << 12 | vlan``: 4096 tags' worth of blocks
  of 4096 VLANs; two tags of one node whose 12-bit hashes collide are refused.
- bridge ``sdcb<vni 6 hex>``; VXLAN uplink ``sdcx<vni 6 hex>``; 802.1Q uplink
  ``<link>.<vlan>`` (VLAN 0: the link itself); host veth end ``v<mac 12 hex>``, its peer
  ``netN`` in the machine's namespace. All fit IFNAMSIZ.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from schemas.settings import SettingsError

VXLAN_PORT = 4789
ANY_MAC = "00:00:00:00:00:00"
IFNAMSIZ = 15
IPV6_MIN_MTU = 1280
HOST_VETH = re.compile(r"^v[0-9a-f]{12}$")


def tag_hash(tag: str) -> int:
    return zlib.crc32(tag.encode()) & 0xFFF


def vni(tag: str, vlan: int) -> int:
    return tag_hash(tag) << 12 | vlan


def bridge_name(segment_vni: int) -> str:
    return f"sdcb{segment_vni:06x}"


def vxlan_name(segment_vni: int) -> str:
    return f"sdcx{segment_vni:06x}"


def vlan_link_name(link: str, vlan: int, segment_vni: int) -> str:
    """The tag link's 802.1Q sub-interface for ``vlan`` (the link itself for VLAN 0); a
    link name too long for ``.<vlan>`` gets ``sdcv<vni>`` instead."""
    if vlan == 0:
        return link
    name = f"{link}.{vlan}"
    return name if len(name) <= IFNAMSIZ else f"sdcv{segment_vni:06x}"


def host_veth(mac: str) -> str:
    return "v" + mac.replace(":", "").lower()


def machine_lines(nics: Sequence[Mapping[str, Any]], routes: Mapping[str, str], *,
                  loopback: bool) -> list[str]:
    """The ``ip`` batch run inside a machine's namespace: its NICs up with their addresses,
    the default route via the primary NIC's first gateway, and the ``routes`` whose gateway
    these NICs reach (the others wait for the NIC that does: :meth:`NodeNetwork.add_nics`).
    ``replace`` everywhere, so running it twice changes nothing."""
    lines = ["link set lo up"] if loopback else []
    lines += [f"link set {nic['interface']} up" for nic in nics]
    lines += [f"addr replace {addr} dev {nic['interface']}" for nic in nics for addr in nic["ips"]]
    primary = next((nic for nic in nics if nic.get("primary")), None)
    if primary is not None and primary["gateways"]:
        lines.append(f"route replace default via {primary['gateways'][0]} "
                     f"dev {primary['interface']}")
    for destination, gateway in routes.items():
        via = route_via(gateway, nics)
        if via is not None:
            lines.append(f"route replace {destination} {via}")
    return lines


LINK_LOCAL_GATEWAY = re.compile(r"^(nics|macs)\[(.+)\]$")


def route_via(gateway: str, nics: Sequence[Mapping[str, Any]]) -> str | None:
    """``via GW`` for a gateway on one of ``nics``' subnets, ``dev netN`` for vmadm's
    link-local forms ``nics[N]`` and ``macs[MAC]`` of one of them, else None."""
    interfaces = {nic["interface"] for nic in nics}
    form = LINK_LOCAL_GATEWAY.match(gateway)
    if form is not None:
        kind, key = form.groups()
        if kind == "nics":
            name = f"net{key}"
            return f"dev {name}" if name in interfaces else None
        owner = next((nic for nic in nics if nic["mac"] == key.lower()), None)
        return f"dev {owner['interface']}" if owner is not None else None
    try:
        address = ipaddress.IPv4Address(gateway)
    except ValueError:
        return None
    for nic in nics:
        for cidr in nic["ips"]:
            if address in ipaddress.IPv4Interface(cidr).network:
                return f"via {gateway} dev {nic['interface']}"
    return None


def bridge_of(nic: Mapping[str, Any]) -> str:
    return bridge_name(vni(nic["nic_tag"], int(nic["vlan_id"])))


def machine_veth_line(nic: Mapping[str, Any], node: Path) -> str:
    """Made inside the machine's namespace, the host end straight into the node's."""
    mtu = int(nic["mtu"])
    return (f"link add {nic['interface']} address {nic['mac']} mtu {mtu} type veth "
            f"peer name {host_veth(nic['mac'])} mtu {mtu} netns {node}")


def host_end_lines(nic: Mapping[str, Any], bridge: str) -> list[str]:
    veth = host_veth(nic["mac"])
    return [*no_ipv6_address(veth, int(nic["mtu"])), f"link set {veth} master {bridge} up"]


def veth_lines(nic: Mapping[str, Any], veth: str, bridge: str, netns: Path) -> list[str]:
    """The pair made in the node's namespace with its peer put straight into the machine's,
    named, addressed and sized there; the host end joins the bridge without an IPv6 address
    of its own (the machine must not reach the node through it)."""
    mtu = int(nic.get("mtu", 1500))
    return [f"link add {veth} mtu {mtu} type veth peer name {nic['interface']} "
            f"address {nic['mac']} mtu {mtu} netns {netns}",
            *no_ipv6_address(veth, mtu),
            f"link set {veth} master {bridge} up"]


def no_ipv6_address(link: str, mtu: int) -> list[str]:
    # below IPv6's minimum MTU a link has no IPv6 at all, and the kernel refuses the setting
    return [f"link set {link} addrgenmode none"] if mtu >= IPV6_MIN_MTU else []


def fdb_line(action: str, device: str, peer: str) -> str:
    tail = " permanent" if action == "append" else ""
    return f"fdb {action} {ANY_MAC} dev {device} dst {peer} self{tail}"


def refuse_colliding_tags(nic_tags: Mapping[str, str | None]) -> None:
    seen: dict[int, str] = {}
    for tag in nic_tags:
        block = tag_hash(tag)
        if block in seen:
            raise SettingsError(f"SDC_NIC_TAGS: nic tags {seen[block]} and {tag} share VXLAN "
                                f"id block {block:#05x} (crc32 & 0xfff): rename one")
        seen[block] = tag
