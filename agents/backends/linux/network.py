"""The network of a Linux node: one bridge per (nic tag, VLAN) its machines use, with that
VLAN's uplink, and a veth pair per machine NIC between the bridge and the machine's own network
namespace, filtered by the node's anti-spoofing rules (:mod:`agents.backends.linux.nft`).

Everything node-level (the tags' links, bridges, uplinks, host veth ends, the nft table) lives
in the node's network namespace: the agent's own, or ``node_netns`` (how tests run two nodes on
one machine). The devices' names and the command lines are
:mod:`agents.backends.linux.netlines`'s. A machine's namespace is a bind mount at
``<runtime_dir>/<uuid>`` (tmpfs in production, so it goes with a reboot like the namespace
itself).

Uplinks: ``vlan`` puts an 802.1Q sub-interface of the tag's link on the bridge; ``vxlan`` a
VXLAN device (``nolearning``, no multicast) sending to the node's peers on the tag, one
all-zero-MAC forwarding entry per peer (head-end replication), from the head node's overlay
directory (:meth:`NodeNetwork.set_peers`, kept in ``<state_dir>/overlay.json``). ``auto`` uses
802.1Q where the kernel has it and VXLAN elsewhere, asked once. A tag without a link
(an etherstub) has a bridge and no uplink; so has a tag whose link has no IPv4 address to be a
VXLAN underlay (logged).

Changes are made in batches (``ip -batch``, one ``nft -f`` transaction, ``bridge -batch``) to
start few processes: a machine's first plug on bridges the agent has seen is three (``nft``;
``unshare ... ip -batch`` making the namespace, the veths from inside it and their
addresses; ``ip -batch`` putting the host ends on their bridges).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.backends.base import BackendError
from agents.backends.host import ip
from agents.backends.host import nft as nft_tool
from agents.backends.host.cmd import HostCommandError
from agents.backends.jsonfile import write_json
from agents.backends.linux import nft
from agents.backends.linux.netlines import (
    ANY_MAC,
    HOST_VETH,
    VXLAN_PORT,
    bridge_name,
    bridge_of,
    fdb_line,
    host_end_lines,
    host_veth,
    machine_lines,
    machine_veth_line,
    no_ipv6_address,
    refuse_colliding_tags,
    tag_hash,
    veth_lines,
    vlan_link_name,
    vni,
    vxlan_name,
)
from agents.backends.names import plain_name
from schemas.settings import SettingsError

log = logging.getLogger(__name__)

UPLINKS = ("auto", "vlan", "vxlan")
#: what a bridge without a VXLAN uplink carries as far as the node knows (no encapsulation)
ANY_MTU = 1 << 16
NIC_CHAIN = re.compile(rf"^{nft.CHAIN_PREFIX}[0-9a-f]{{12}}$")
#: the bridge the 802.1Q probe makes and removes at once
PROBE = "sdcprobe0"


@dataclass
class _Made:
    """What one plug created, to remove again when a later step fails."""

    netns: Path | None = None
    links: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # MACs


@dataclass
class _Segments:
    """Bridges a batch makes whole ({name: MTU its uplink carries}) and VXLAN uplinks it
    creates ([(tag, device)])."""

    whole: dict[str, int] = field(default_factory=dict)
    vxlans: list[tuple[str, str]] = field(default_factory=list)


class NodeNetwork:
    """A node's bridges and uplinks, and its machines' NICs (see the module's docstring)."""

    def __init__(self, nic_tags: dict[str, str | None], uplink: str, state_dir: Path,
                 runtime_dir: Path, node_netns: Path | None = None) -> None:
        if uplink not in UPLINKS:
            raise SettingsError(f"SDC_NIC_UPLINK: {uplink!r} is not one of {', '.join(UPLINKS)}")
        refuse_colliding_tags(nic_tags)
        self.nic_tags = dict(nic_tags)
        self.uplink = uplink
        self.state_dir = Path(state_dir)
        # iproute2 reads a path (not a /run/netns name) only when it has a slash; a batch line
        # splits on blanks
        self.runtime_dir = Path(runtime_dir).absolute()
        if any(c.isspace() for c in str(self.runtime_dir)):
            raise SettingsError(f"{self.runtime_dir}: a namespace directory without blanks")
        self.node_netns = node_netns
        self._mode: str | None = None if uplink == "auto" else uplink
        self._warned: set[str] = set()
        self._table_checked = False
        #: bridges this process made or saw with their uplink: {name: MTU the uplink carries}
        self._ready: dict[str, int] = {}
        # one agent per node, several task threads: node-level changes one at a time (two
        # plugs would both create a missing bridge)
        self._lock = threading.RLock()

    # --- nic tags and the overlay

    def nic_tag_uplinks(self) -> dict[str, dict[str, str | None]]:
        """{tag: {link, underlay}}: the underlay (the link's first IPv4 address) only where
        this node's uplinks are VXLAN, as that is what other nodes send to."""
        underlays: dict[str, str] = {}
        if any(self.nic_tags.values()) and self.uplink_mode() == "vxlan":
            underlays = self._underlays()
        return {tag: {"link": link, "underlay": underlays.get(tag)}
                for tag, link in self.nic_tags.items()}

    def uplink_mode(self) -> str:
        """``vlan`` or ``vxlan``; for ``auto`` the kernel is asked once (the answer stays)."""
        with self._lock:
            if self._mode is None:
                self._mode = "vlan" if self._kernel_has_8021q() else "vxlan"
                log.info("uplinks: %s (SDC_NIC_UPLINK=auto: the kernel %s 802.1Q)", self._mode,
                         "has" if self._mode == "vlan" else "lacks")
            return self._mode

    def _kernel_has_8021q(self) -> bool:
        # line 1 clears a probe a crash left; line 3 is the question
        failed = ip.probe_batch([f"link del {PROBE}", f"link add {PROBE} type bridge",
                                 f"link add {PROBE}.1 link {PROBE} type vlan id 1",
                                 f"link del {PROBE}"], self.node_netns)
        return not failed & {2, 3}

    def _underlays(self) -> dict[str, str]:
        addresses = ip.ipv4_addresses(self.node_netns)
        return {tag: addresses[link][0] for tag, link in self.nic_tags.items()
                if link and addresses.get(link)}

    def _overlay_path(self) -> Path:
        return self.state_dir / "overlay.json"

    def _overlay(self) -> dict[str, Any]:
        try:
            stored: dict[str, Any] = json.loads(self._overlay_path().read_text())
        except FileNotFoundError:
            return {"version": "", "peers": {}}
        except ValueError as exc:
            # reported as no version, so the head node sends the directory again
            log.warning("%s: unreadable (%s): no overlay peers", self._overlay_path(), exc)
            return {"version": "", "peers": {}}
        return stored

    def overlay_version(self) -> str:
        """The version of the peers last applied ("" for none)."""
        return str(self._overlay().get("version", ""))

    def set_peers(self, peers: dict[str, list[str]], version: str) -> None:
        """Make every VXLAN uplink send to exactly its tag's ``peers`` (unicast, one forwarding
        entry each), and keep them for the uplinks made later. The version is stored only once
        applied, so a failure is retried when the head node sees the old one reported."""
        for tag, addresses in peers.items():
            for address in addresses:
                try:
                    ipaddress.IPv4Address(address)
                except ValueError as exc:
                    raise BackendError("InvalidOverlayPeers",
                                       f"peer {address!r} of {tag} is not an IPv4 address") from exc
        with self._lock:
            self._apply_peers(peers)
            write_json(self._overlay_path(), {"version": version, "peers": peers})

    def _apply_peers(self, peers: Mapping[str, list[str]]) -> None:
        by_hash = {tag_hash(tag): tag for tag in self.nic_tags}
        devices = [link["ifname"] for link in ip.links(self.node_netns)
                   if link["ifname"].startswith("sdcx")]
        if not devices:
            return
        have: dict[str, set[str]] = {device: set() for device in devices}
        for entry in ip.fdb(self.node_netns):
            if entry.get("ifname") in have and entry.get("mac") == ANY_MAC and "dst" in entry:
                have[entry["ifname"]].add(entry["dst"])
        lines = []
        for device in devices:
            tag = by_hash.get(int(device[4:], 16) >> 12)
            want = set(peers.get(tag, [])) if tag is not None else set()
            lines += [fdb_line("del", device, peer) for peer in sorted(have[device] - want)]
            lines += [fdb_line("append", device, peer) for peer in sorted(want - have[device])]
        ip.bridge_batch(lines, self.node_netns)

    # --- machines

    def machine_netns(self, uuid: str) -> Path:
        return self.runtime_dir / plain_name(uuid, "machine uuid")

    def plug(self, uuid: str, nics: list[dict[str, Any]], routes: dict[str, str]) -> None:
        """Give a machine its namespace (made if missing) with loopback and every NIC of
        ``nics`` plugged, the default route and ``routes``. Idempotent; on failure what this
        call made is removed and BackendError raised with the tool's words."""
        self._attach(uuid, nics, routes, new_machine=True)

    def add_nics(self, uuid: str, nics: list[dict[str, Any]], routes: dict[str, str]) -> None:
        """Plug ``nics`` into the existing namespace of a (running) machine."""
        self._attach(uuid, nics, routes, new_machine=False)

    def remove_nics(self, uuid: str, macs: list[str]) -> None:
        """Unplug NICs (their veth pair, chain and map element); a missing one is no error."""
        with self._lock:
            self._remove(macs)

    def unplug(self, uuid: str, macs: list[str]) -> None:
        """Remove the machine's NICs (veths, chains) and its namespace; nothing left is fine."""
        with self._lock:
            self._remove(macs)
            ip.netns_delete(self.machine_netns(uuid))

    def update_filters(self, nics: list[dict[str, Any]]) -> None:
        """Rewrite the chain of each NIC (a full, merged NicSpec) that is plugged, in one
        transaction; a NIC of a stopped machine has no chain and gets none."""
        with self._lock:
            chains = self._nic_chains()
            lines = [line for nic in nics if nft.chain_name(nic["mac"]) in chains
                     for line in nft.nic_lines(nic, host_veth(nic["mac"]))]
            nft_tool.apply(lines, self.node_netns)

    def leftovers(self, machines: dict[str, list[str]]) -> list[str]:
        """What this library made that none of ``machines`` ({uuid: [mac]}) owns:
        ``veth:NAME``, ``nft:CHAIN``, ``netns:UUID``."""
        macs = [mac for owned in machines.values() for mac in owned]
        veths = {host_veth(mac) for mac in macs}
        chains = {nft.chain_name(mac) for mac in macs}
        found = [f"veth:{link['ifname']}" for link in ip.links(self.node_netns)
                 if HOST_VETH.match(link["ifname"]) and link["ifname"] not in veths]
        found += [f"nft:{chain}" for chain in sorted(self._nic_chains())
                  if NIC_CHAIN.match(chain) and chain not in chains]
        if self.runtime_dir.is_dir():
            found += [f"netns:{path.name}" for path in sorted(self.runtime_dir.iterdir())
                      if path.name not in machines]
        return found

    # --- the steps

    def _attach(self, uuid: str, nics: list[dict[str, Any]], routes: dict[str, str], *,
                new_machine: bool) -> None:
        netns = self.machine_netns(uuid)
        made = _Made()
        with self._lock:
            try:
                self._check_tags(nics)
                if ip.is_netns(netns):
                    self._plug_into(netns, nics, routes, made, loopback=new_machine)
                elif new_machine:
                    self._plug_fresh(netns, nics, routes, made)
                else:
                    raise BackendError("MachineNetworkMissing",
                                       f"machine {uuid} has no network namespace "
                                       "(NICs are added to a stopped machine at its start)")
            except Exception:
                self._undo(made)
                raise

    def _check_tags(self, nics: Sequence[Mapping[str, Any]]) -> None:
        for nic in nics:
            if nic["nic_tag"] not in self.nic_tags:
                raise BackendError("NicTagNotFound",
                                   f"this node does not provide nic tag {nic['nic_tag']!r} "
                                   f"(it has {', '.join(self.nic_tags) or 'none'})")

    def _plug_fresh(self, netns: Path, nics: list[dict[str, Any]], routes: dict[str, str],
                    made: _Made) -> None:
        """A machine's first plug (its namespace is new): the chains; the bridges and uplinks
        unless this process has seen them whole (no need to look at the node's links, the
        usual case); then one process makes the namespace and, inside it, the veths (host
        ends straight into the node's namespace), addresses and routes; one more puts the
        host ends on their bridges. Should the bridges have changed behind the agent's back,
        that last step fails and the node's links are looked at."""
        made.chains += [nic["mac"] for nic in nics]
        self._apply_chains(nics)
        if not all(self._ready.get(bridge_of(nic), 0) >= int(nic["mtu"]) for nic in nics):
            self._make_segments(nics, made)
        self._make_machine_netns(netns, nics, routes, made)
        host_ends = [line for nic in nics for line in host_end_lines(nic, bridge_of(nic))]
        try:
            ip.batch(host_ends, self.node_netns)
        except HostCommandError as exc:
            log.info("node links changed behind the agent (%s): looking at them", exc)
            self._ready.clear()
            self._make_segments(nics, made)
            ip.batch(host_ends, self.node_netns)

    def _plug_into(self, netns: Path, nics: list[dict[str, Any]], routes: dict[str, str],
                   made: _Made, *, loopback: bool) -> None:
        """Plug into an existing namespace (a second plug, add_nics) what it lacks."""
        if nics:
            present = self._links()
            made.chains += [nic["mac"] for nic in nics if host_veth(nic["mac"]) not in present]
            # the filter before the link: a running machine could raise its end at once
            self._apply_chains(nics)
            lines, made_segments = self._segment_lines_of(nics, present, made)
            for nic in nics:
                bridge, veth = bridge_of(nic), host_veth(nic["mac"])
                if veth not in present:
                    lines += veth_lines(nic, veth, bridge, netns)
                    made.links.append(veth)
                elif present[veth].get("master") != bridge:  # a plug cut short
                    lines.append(f"link set {veth} master {bridge} up")
            ip.batch(lines, self.node_netns)
            self._segments_made(made_segments)
        ip.batch(machine_lines(nics, routes, loopback=loopback), netns)

    def _make_machine_netns(self, netns: Path, nics: list[dict[str, Any]],
                            routes: dict[str, str], made: _Made) -> None:
        node = self.node_netns or Path(f"/proc/{os.getpid()}/ns/net")
        lines = [machine_veth_line(nic, node) for nic in nics]
        lines += machine_lines(nics, routes, loopback=True)
        veths = [host_veth(nic["mac"]) for nic in nics]
        made.netns = netns  # unshare mounts it before ip runs
        made.links += veths
        try:
            ip.netns_create(netns, lines)
        except HostCommandError as exc:
            if "File exists" not in exc.stderr:
                raise
            # a host end left by an earlier life of these NICs (a stop cut short): the
            # namespace is new, so no machine can be using it
            log.warning("machine %s: removing stale host veths before plugging", netns.name)
            ip.netns_delete(netns)
            self._delete_links(veths)
            ip.netns_create(netns, lines)

    def _make_segments(self, nics: Sequence[Mapping[str, Any]], made: _Made) -> None:
        """Create what the NICs' bridges and uplinks lack (before any veth: a veth that
        is the first link of an empty namespace has its peer's ifindex there, and the kernel
        then delays its carrier events by up to a second)."""
        lines, made_segments = self._segment_lines_of(nics, self._links(), made)
        ip.batch(lines, self.node_netns)
        self._segments_made(made_segments)

    def _segment_lines_of(self, nics: Sequence[Mapping[str, Any]],
                          present: dict[str, dict[str, Any]], made: _Made
                          ) -> tuple[list[str], _Segments]:
        lines: list[str] = []
        segments = _Segments()
        for nic in nics:
            bridge, carried = self._segment_lines(nic, present, lines, made, segments.vxlans)
            if carried:
                segments.whole[bridge] = max(segments.whole.get(bridge, 0), carried)
        return lines, segments

    def _segments_made(self, segments: _Segments) -> None:
        """Remember the bridges now whole; give new VXLAN uplinks their peers."""
        for bridge, mtu in segments.whole.items():
            self._ready[bridge] = max(self._ready.get(bridge, 0), mtu)
        if segments.vxlans:
            peers = self._overlay()["peers"]
            ip.bridge_batch([fdb_line("append", device, peer)
                             for tag, device in segments.vxlans
                             for peer in peers.get(tag, [])], self.node_netns)

    def _links(self) -> dict[str, dict[str, Any]]:
        return {link["ifname"]: link for link in ip.links(self.node_netns)}

    def _segment_lines(self, nic: Mapping[str, Any], present: dict[str, dict[str, Any]],
                       lines: list[str], made: _Made,
                       new_vxlans: list[tuple[str, str]]) -> tuple[str, int]:
        """Add to ``lines`` what the NIC's (tag, VLAN) bridge and uplink still need; return the
        bridge's name and the MTU its uplink then carries (0: it lacks its uplink)."""
        tag, vlan, mtu = nic["nic_tag"], int(nic.get("vlan_id", 0)), int(nic.get("mtu", 1500))
        segment = vni(tag, vlan)
        bridge = bridge_name(segment)
        if bridge not in present:
            lines += [f"link add {bridge} type bridge", f"link set {bridge} addrgenmode none",
                      f"link set {bridge} up"]
            made.links.append(bridge)
            present[bridge] = {"ifname": bridge}
        link = self.nic_tags[tag]
        if link is None:
            return bridge, ANY_MTU
        if self.uplink_mode() == "vlan":
            uplink = vlan_link_name(link, vlan, segment)
            if uplink not in present and vlan != 0:
                lines.append(f"link add {uplink} link {link} type vlan id {vlan}")
                made.links.append(uplink)
            if present.get(uplink, {}).get("master") != bridge:
                lines.append(f"link set {uplink} master {bridge} up")
                present[uplink] = {"ifname": uplink, "master": bridge}
            return bridge, ANY_MTU
        uplink = vxlan_name(segment)
        if uplink in present:
            if int(present[uplink].get("mtu", mtu)) < mtu:
                lines.append(f"link set {uplink} mtu {mtu}")
                present[uplink]["mtu"] = mtu
            return bridge, int(present[uplink].get("mtu", mtu))
        underlay = self._underlays().get(tag)
        if underlay is None:
            if tag not in self._warned:
                self._warned.add(tag)
                log.warning("nic tag %s: link %s has no IPv4 address to carry VXLAN: its "
                            "bridges have no uplink (their machines reach this node's only)",
                            tag, link)
            return bridge, 0
        lines += [f"link add {uplink} mtu {mtu} type vxlan id {segment} local {underlay} "
                  f"dstport {VXLAN_PORT} nolearning",
                  *no_ipv6_address(uplink, mtu),
                  f"link set {uplink} master {bridge} up"]
        made.links.append(uplink)
        new_vxlans.append((tag, uplink))
        present[uplink] = {"ifname": uplink, "mtu": mtu, "master": bridge}
        return bridge, mtu

    def _apply_chains(self, nics: Sequence[Mapping[str, Any]]) -> None:
        """Apply the NICs' chains, with the table's skeleton the first time this process does (and
        whenever the table is gone): rewriting the base chains costs the kernel a hook
        re-registration, three times what a NIC's chain costs."""
        lines = [line for nic in nics for line in nft.nic_lines(nic, host_veth(nic["mac"]))]
        if not lines:
            return
        if not self._table_checked:
            nft_tool.apply(nft.table_lines() + lines, self.node_netns)
            self._table_checked = True
            return
        try:
            nft_tool.apply(lines, self.node_netns)
        except HostCommandError as exc:
            if "No such file or directory" not in exc.stderr:
                raise
            nft_tool.apply(nft.table_lines() + lines, self.node_netns)

    def _remove(self, macs: Sequence[str]) -> None:
        # the link before its filter: never a moment when a plugged NIC is unfiltered
        self._delete_links([host_veth(mac) for mac in macs])
        nft_tool.apply([line for mac in macs for line in nft.remove_nic_lines(mac, host_veth(mac))],
                       self.node_netns)

    def _delete_links(self, names: Sequence[str]) -> None:
        """Delete links (a veth takes its peer along); missing ones are no error."""
        try:
            ip.batch([f"link del {name}" for name in names], self.node_netns)
        except HostCommandError:
            present = {link["ifname"] for link in ip.links(self.node_netns)}
            ip.batch([f"link del {name}" for name in names if name in present], self.node_netns)

    def _nic_chains(self) -> set[str]:
        objects = nft_tool.list_table(nft.FAMILY, nft.TABLE, self.node_netns) or []
        return {obj["chain"]["name"] for obj in objects if "chain" in obj}

    def _undo(self, made: _Made) -> None:
        """Remove what a failed plug made; a failure here is logged, the plug's error wins."""
        self._ready.clear()  # its bridges may be among what goes
        with contextlib.suppress(Exception):
            if made.links:
                failed = ip.probe_batch([f"link del {name}" for name in reversed(made.links)],
                                        self.node_netns)
                if failed:
                    log.debug("undo: %d links were gone already", len(failed))
        try:
            if made.chains:
                nft_tool.apply([line for mac in made.chains
                                for line in nft.remove_nic_lines(mac, host_veth(mac))],
                               self.node_netns)
            if made.netns is not None:
                ip.netns_delete(made.netns)
        except Exception:
            log.exception("could not remove what a failed plug made")
