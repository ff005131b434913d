"""The overlay directory: which other nodes each node's VXLAN uplinks send to.

A node says in its sysinfo (``SDC NIC Tags``: ``{tag: {"link", "underlay"}}``) which nic tags
it carries over an overlay, and its underlay address for each. Its *peers* on a tag are the
underlay addresses of every other set-up server that provides the tag with an underlay,
whatever their liveness: a node that blinks keeps its peers (Triton's portolan keeps a CN's
mappings in the same way); a server whose row is gone drops out. A node gets peers for each
tag it carries with an underlay of its own (an empty list included, so it learns that its
last peer left), nothing for the others.

The version is a digest of the peers. A node with no overlay tag has nothing to apply: its
version is ``""``, what a node that applied nothing reports, so nodes without an overlay
(host-local tags, 802.1Q uplinks, SmartOS, sim) are never sent anything.

Head-end replication is a full mesh: on a tag that N nodes share, each node's list has N - 1
addresses, and a change to one node's uplinks is sent to the N - 1 others.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from headnode.store.models import Server
from schemas.agent import SYSINFO_NIC_TAGS, agent_queue, agent_task

#: the agent task that hands a node its peers
SET_PEERS = "node_set_overlay_peers"
#: the version of a node with nothing to apply
NO_OVERLAY = ""

Peers = dict[str, list[str]]
#: one node's underlay address per overlay tag
Underlays = dict[str, str]


def underlays(sysinfo: Mapping[str, Any] | None) -> Underlays:
    """The tags a node carries over an overlay, with its underlay address on each, from its
    raw sysinfo (a tag without an underlay is host-local or on 802.1Q: no peers)."""
    uplinks = (sysinfo or {}).get(SYSINFO_NIC_TAGS) or {}
    return {tag: str(uplink["underlay"]) for tag, uplink in uplinks.items()
            if isinstance(uplink, Mapping) and uplink.get("underlay")}


def version_of(peers: Mapping[str, Iterable[str]]) -> str:
    """First 16 hex digits of the SHA-256 of the peers' canonical JSON (keys and each list
    sorted, no spaces); "" for none."""
    return _digest({tag: sorted(ips) for tag, ips in peers.items()})


def _digest(peers: Mapping[str, list[str]]) -> str:
    """version_of for lists already sorted (the directory's)."""
    if not peers:
        return NO_OVERLAY
    canonical = json.dumps(peers, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Message:
    """``node_set_overlay_peers`` for one node, sent after the commit. ``repair``: sent
    because the node reported another version (at most once per resend interval), not
    because its peers changed (always sent)."""

    server_uuid: str
    peers: Peers
    version: str
    repair: bool = False

    def task(self) -> tuple[str, str, list[Any]]:
        """(queue, task name, args), as the engine's outbox and CeleryTransport.send_raw
        take a fire-and-forget agent call: no reply is asked for."""
        params = {"peers": self.peers, "version": self.version}
        return agent_queue(self.server_uuid), agent_task(SET_PEERS), [self.server_uuid,
                                                                      params, None]


def overlay_nodes(session: Session) -> list[tuple[str, bool, Underlays]]:
    """Every server that carries a tag over an overlay: (uuid, set up, its underlays), in
    uuid order. One statement; the uplinks come as text and only the servers that report
    any are decoded (a fleet of sim or SmartOS nodes reports none)."""
    uplinks = cast(Server.sysinfo[SYSINFO_NIC_TAGS], Text)
    rows = session.execute(select(Server.uuid, Server.setup, uplinks).order_by(Server.uuid))
    found = []
    for server_uuid, setup, text in rows:
        if text and text not in _NONE:
            mine = _decoded(text)
            if mine:
                found.append((server_uuid, bool(setup), mine))
    return found


#: what an absent or empty uplink report reads as, as text
_NONE = ("null", "{}")
#: uplink reports (as text) already decoded: a node's changes only when it registers, and
#: every status report of an overlay node reads them all (decoding was a third of that)
_SEEN: dict[str, Underlays] = {}
_SEEN_MAX = 50_000


def _decoded(text: str) -> Underlays:
    found = _SEEN.get(text)
    if found is None:
        found = underlays({SYSINFO_NIC_TAGS: json.loads(text)})
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[text] = found
    return found


class Directory:
    """Every set-up server's underlays by tag; the peers of any node from it. Each tag's
    addresses are sorted once, so a node's peers are that list without its own address."""

    def __init__(self, members: Iterable[tuple[str, Underlays]]) -> None:
        by_tag: dict[str, dict[str, str]] = {}
        for server_uuid, mine in members:
            for tag, address in mine.items():
                by_tag.setdefault(tag, {})[server_uuid] = address
        self.members = by_tag
        #: per tag, every member's address, sorted, and how many members have each
        self.sorted: dict[str, list[str]] = {}
        self.holders: dict[str, Counter[str]] = {}
        for tag, addresses in by_tag.items():
            self.holders[tag] = Counter(addresses.values())
            self.sorted[tag] = sorted(self.holders[tag])

    @classmethod
    def of(cls, nodes: Iterable[tuple[str, bool, Underlays]]) -> Directory:
        return cls((uuid, mine) for uuid, setup, mine in nodes if setup)

    def peers_of(self, server_uuid: str, mine: Iterable[str]) -> Peers:
        """For each of the node's own overlay tags, the other members' underlay addresses,
        sorted, without duplicates."""
        return {tag: self._others(tag, server_uuid) for tag in sorted(mine)}

    def _others(self, tag: str, server_uuid: str) -> list[str]:
        everyone = self.sorted.get(tag, [])
        own = self.members.get(tag, {}).get(server_uuid)
        if own is None or self.holders[tag][own] > 1:
            return list(everyone)  # not a member (not set up), or another has its address
        at = bisect.bisect_left(everyone, own)
        return everyone[:at] + everyone[at + 1:]

    def message_for(self, server_uuid: str, mine: Iterable[str],
                    repair: bool = False) -> Message:
        peers = self.peers_of(server_uuid, mine)
        return Message(server_uuid, peers, _digest(peers), repair)


def message_for(session: Session, server: Server, repair: bool = False) -> Message:
    """What ``server`` should have applied now (reads the fleet only when the node carries
    a tag over an overlay: otherwise it has nothing to apply)."""
    mine = underlays(server.sysinfo)
    if not mine:
        return Message(server.uuid, {}, NO_OVERLAY, repair)
    return Directory.of(overlay_nodes(session)).message_for(server.uuid, mine, repair)


def changed_tags(before: Underlays, after: Underlays) -> set[str]:
    """The tags on which a node's underlay appeared, went or moved."""
    return {tag for tag in before.keys() | after.keys() if before.get(tag) != after.get(tag)}


def updates_for(session: Session, tags: set[str], exclude: str,
                nodes: list[tuple[str, bool, Underlays]] | None = None) -> list[Message]:
    """The new peers of every node but ``exclude`` that carries one of ``tags`` over an
    overlay: after a set-up server's underlays on them changed, or it went away. Set up or
    not, each gets them (a node not yet set up has peers too: the set-up ones). ``nodes``:
    :func:`overlay_nodes` if already read."""
    if not tags:
        return []
    nodes = overlay_nodes(session) if nodes is None else nodes
    directory = Directory.of(nodes)
    return [directory.message_for(uuid, mine) for uuid, _setup, mine in nodes
            if uuid != exclude and mine.keys() & tags]


def after_registration(session: Session, server: Server, was: Underlays) -> list[Message]:
    """What to send once a node's registration commits: its own peers (it may have
    restarted and kept them, or been rebuilt and lost them), and, when it is set up and its
    underlays differ from ``was`` (its set-up underlays before), the new peers of every
    node sharing a changed tag. One read of the fleet."""
    now = underlays(server.sysinfo)
    changed = changed_tags(was, now if server.setup else {})
    if not now and not changed:
        return []
    nodes = overlay_nodes(session)
    out = [Directory.of(nodes).message_for(server.uuid, now)] if now else []
    return out + updates_for(session, changed, server.uuid, nodes)


def directory_digest(nodes: Iterable[tuple[str, bool, Underlays]]) -> str:
    """A digest of who is in the directory with which underlay on which tag: it changes
    exactly when some node's peers change (a server set up or taken out of service, an
    underlay that moved, a row gone)."""
    members = sorted((uuid, sorted(mine.items())) for uuid, setup, mine in nodes if setup)
    return hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).hexdigest()


def everyone(nodes: list[tuple[str, bool, Underlays]]) -> list[Message]:
    """The peers of every node that carries a tag over an overlay, set up or not."""
    directory = Directory.of(nodes)
    return [directory.message_for(uuid, mine) for uuid, _setup, mine in nodes]
