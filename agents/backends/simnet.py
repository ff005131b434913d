"""A sim node's networking, as bookkeeping: its nic tags and made-up underlays, and a
machine's NICs checked and changed the way a real node would (a nic tag the node lacks, an
interface twice, a change to a NIC it does not have), without a packet moving."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from agents.backends.base import BackendError
from schemas.nics import NIC_FLAG_FIELDS

#: what a node provides without SDC_NIC_TAGS: two host-local tags (etherstubs), no underlay
DEFAULT_NIC_TAGS: dict[str, str | None] = {"admin": None, "external": None}
#: where made-up underlay addresses come from: RFC 2544's benchmarking range, which no real
#: network routes, so a sim's address can never be mistaken for (or reach) a real host
SIM_UNDERLAY_NET = ipaddress.IPv4Network("198.18.0.0/15")


def sim_underlay(server_uuid: str, link: str) -> str:
    """A made-up underlay address of a sim node's link: the same for the same node and link
    across restarts (the head node's overlay directory then stays put), spread over
    SIM_UNDERLAY_NET so a fleet of sims gives the directory distinct peers to keep. Two nodes
    can draw the same address (one in ~130,000 per pair); the sim never sends to it."""
    digest = hashlib.sha256(f"{server_uuid}/{link}".encode()).digest()
    hosts = SIM_UNDERLAY_NET.num_addresses - 2
    return str(SIM_UNDERLAY_NET.network_address + 1 + int.from_bytes(digest[:8], "big") % hosts)


def uplinks(server_uuid: str, nic_tags: Mapping[str, str | None]
            ) -> dict[str, dict[str, str | None]]:
    """Sysinfo's uplinks: a linked tag's made-up underlay, none for a host-local tag."""
    return {tag: {"link": link, "underlay": sim_underlay(server_uuid, link) if link else None}
            for tag, link in nic_tags.items()}


def added(server_uuid: str, nic_tags: Mapping[str, str | None], have: list[dict[str, Any]],
          new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``have`` plus the NICs of ``new`` whose MAC is not there yet, in interface order;
    refused as a node would refuse them: a nic tag the node lacks, an interface twice."""
    nics = [dict(nic) for nic in have]
    macs = {nic["mac"] for nic in nics}
    for nic in new:
        if nic["mac"] in macs:
            continue
        if nic["nic_tag"] not in nic_tags:
            raise BackendError("NicTagNotFound",
                               f"server {server_uuid} does not provide nic tag "
                               f"{nic['nic_tag']} (it has {', '.join(nic_tags)})")
        taken = next((n["mac"] for n in nics if n["interface"] == nic["interface"]), None)
        if taken is not None:
            raise BackendError("InvalidNic", f"interface {nic['interface']} of NIC "
                                             f"{nic['mac']} is NIC {taken}'s")
        nics.append(dict(nic))
        macs.add(nic["mac"])
    return sorted(nics, key=interface_index)


def changed(uuid: str, nics: list[dict[str, Any]],
            changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``nics`` with NicFlagsSchema ``changes`` applied; every MAC is checked before anything
    changes, so a bad change list changes nothing (NicNotFound)."""
    by_mac = {nic["mac"]: dict(nic) for nic in nics}
    for change in changes:
        if change["mac"] not in by_mac:
            raise BackendError("NicNotFound", f"machine {uuid} has no NIC {change['mac']}")
    for change in changes:
        by_mac[change["mac"]].update({key: change[key] for key in NIC_FLAG_FIELDS
                                      if change.get(key) is not None})
    return list(by_mac.values())


def interface_index(nic: Mapping[str, Any]) -> int:
    return int(nic["interface"].removeprefix("net"))


def summary(nics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"mac": nic["mac"], "interface": nic["interface"]} for nic in nics]
