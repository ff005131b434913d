"""The node's anti-spoofing rules as ``nft -f`` scripts (pure functions: no host access).

One table, ``bridge sdc``. Its base chains ``forward`` (frames the bridge passes on) and
``input`` (frames for the node itself) hook in before anything else and send every frame that
came in on a machine's host veth end to that NIC's own chain through the verdict map ``nics``
(host veth name -> ``jump nic_<mac hex>``); frames from anywhere else pass. A NIC's chain drops
what the machine must not send, rule by rule, each lifted by its vmadm flag:

- ``allow_mac_spoofing``: frames and ARP from another MAC than the NIC's;
- ``allow_restricted_traffic``: ether types other than IPv4, IPv6 and ARP (this also stops
  802.1Q-tagged frames from reaching past the filter);
- ``allow_dhcp_spoofing``: DHCP server replies (UDP source port 67, DHCPv6 547); it implies
  ``allow_ip_spoofing`` as in vmadm;
- ``allow_ip_spoofing``: ARP and IPv4 from addresses other than the NIC's ``ips`` and
  ``allowed_ips`` (0.0.0.0 stays allowed in ARP: address probes), IPv6 from other than
  link-local (and ``::``, duplicate address detection) and router advertisements.

The machine cannot touch these: they live in the node's network namespace, not its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

FAMILY = "bridge"
TABLE = "sdc"
MAP = "nics"
BASE_CHAINS = ("forward", "input")
#: before other bridge filters, so nothing else accepts a frame first
PRIORITY = -200
CHAIN_PREFIX = "nic_"


def chain_name(mac: str) -> str:
    return CHAIN_PREFIX + mac.replace(":", "").lower()


def table_lines() -> list[str]:
    """Create the table, its map and base chains if missing, and (re)write the base chains'
    one rule each: idempotent, and atomic within the script's transaction."""
    where = f"{FAMILY} {TABLE}"
    lines = [f"add table {where}",
             f"add map {where} {MAP} {{ type ifname : verdict; }}"]
    for hook in BASE_CHAINS:
        lines.append(f"add chain {where} {hook} {{ type filter hook {hook} priority {PRIORITY}; "
                     "policy accept; }")
    for hook in BASE_CHAINS:
        lines += [f"flush chain {where} {hook}", f"add rule {where} {hook} iifname vmap @{MAP}"]
    return lines


def nic_lines(nic: Mapping[str, Any], ifname: str) -> list[str]:
    """(Re)write the chain of one NIC (a NicSpec dict) and its map element, ``ifname`` being
    its host veth end."""
    where, chain = f"{FAMILY} {TABLE}", chain_name(nic["mac"])
    lines = [f"add chain {where} {chain}", f"flush chain {where} {chain}"]
    lines += [f"add rule {where} {chain} {rule}" for rule in nic_rules(nic)]
    lines.append(f'add element {where} {MAP} {{ "{ifname}" : jump {chain} }}')
    return lines


def remove_nic_lines(mac: str, ifname: str) -> list[str]:
    """Remove a NIC's element and chain whether or not they exist: ``add`` makes both exist
    first (nft 1.0.6 has no ``destroy``), so the script never fails on a missing one."""
    where, chain = f"{FAMILY} {TABLE}", chain_name(mac)
    element = f'{{ "{ifname}" : jump {chain} }}'
    return [f"add table {where}",
            f"add map {where} {MAP} {{ type ifname : verdict; }}",
            f"add chain {where} {chain}",
            f"add element {where} {MAP} {element}",
            f'delete element {where} {MAP} {{ "{ifname}" }}',
            f"delete chain {where} {chain}"]


def nic_rules(nic: Mapping[str, Any]) -> list[str]:
    """The rules of one NIC's chain, in order (each a drop)."""
    mac = nic["mac"].lower()
    ip_spoofing = nic.get("allow_ip_spoofing") or nic.get("allow_dhcp_spoofing")
    rules = []
    if not nic.get("allow_mac_spoofing"):
        rules += [f"ether saddr != {mac} drop", f"arp saddr ether != {mac} drop"]
    if not nic.get("allow_restricted_traffic"):
        rules.append("ether type != { ip, ip6, arp } drop")
    if not nic.get("allow_dhcp_spoofing"):
        rules.append("udp sport { 67, 547 } drop")
    if not ip_spoofing:
        allowed = allowed_ipv4(nic)
        rules.append(f"arp saddr ip != {nft_set(allowed_ipv4(nic, '0.0.0.0'))} drop")
        rules.append(f"ip saddr != {nft_set(allowed)} drop" if allowed else "ether type ip drop")
        rules.append("ip6 saddr != { ::, fe80::/10 } drop")
        rules.append("icmpv6 type nd-router-advert drop")
    return rules


def allowed_ipv4(nic: Mapping[str, Any], *extra: str) -> list[str]:
    """The NIC's own addresses, its ``allowed_ips`` and ``extra``, merged where they overlap
    (nft refuses overlapping intervals in one set)."""
    nets = [ipaddress.IPv4Network(ipaddress.IPv4Interface(ip).ip) for ip in nic.get("ips", [])]
    nets += [ipaddress.IPv4Network(a, strict=False)
             for a in [*(nic.get("allowed_ips") or []), *extra]]
    return [str(n.network_address) if n.prefixlen == 32 else str(n)
            for n in ipaddress.collapse_addresses(nets)]


def nft_set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"
