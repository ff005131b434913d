"""What placement decides over: a fleet snapshot, one request, the policy's ratios.

Everything here is plain data. ``ServerState`` is one row of ``servers`` with its capacity
aggregates (kept up to date by services.capacity), so a decision never walks machines; the
only machines a decision sees are the requesting owner's (for affinity and spread).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headnode.placement.affinity import AffinityRule

# Room left on a server is defined once, in fit.py, which also serves the guard's SQL; named
# here too for the scorers, capacity reports and simulation.
from headnode.placement.fit import cpu_total as cpu_total
from headnode.placement.fit import image_to_import
from headnode.placement.fit import unreserved_cpu as unreserved_cpu
from headnode.placement.fit import unreserved_disk as unreserved_disk
from headnode.placement.fit import unreserved_ram as unreserved_ram
from headnode.placement.runs import Runs

NO_IMAGES: frozenset[str] = frozenset()


@dataclass(slots=True)
class ServerState:
    """One server as placement sees it. Treated as immutable (``with_machine`` makes a new
    one); not declared frozen because a frozen dataclass is several times slower to build,
    and a decision builds one per server."""

    uuid: str
    hostname: str = ""
    status: str = "running"
    setup: bool = True
    reserved: bool = False
    headnode: bool = False
    backend: str = "sim"
    traits: Mapping[str, Any] = field(default_factory=dict)
    ram_mb: int = 0
    cpus: int = 0
    disk_mb: int = 0  # pool size
    ram_used_mb: int = 0  # in flight + committed
    disk_used_mb: int = 0  # machine quotas, in flight + committed
    cpu_used: int = 0  # sum of the cpu caps (percent of one CPU), in flight + committed
    images_mb: int = 0  # images imported into the pool
    machine_count: int = 0
    capped_count: int = 0
    uncapped_count: int = 0
    #: of the images a decision asks about, those the server holds already (a snapshot
    #: reads only the request's image: the rest never matters to it)
    images: frozenset[str] = NO_IMAGES
    #: the image OSes and types its node says it runs; None: the node does not say (an
    #: older agent), and its backend's table decides (runs.py)
    runs: Runs | None = None
    #: the nic tags its node provides (sysinfo "NIC Names"); None: its sysinfo has no such
    #: key (a row no agent registered), and the nic-tags filter lets it through
    nic_tags: frozenset[str] | None = None
    #: in maintenance (an operator's flag): takes no new machines, keeps those it has
    maintenance: bool = False


@dataclass(frozen=True, slots=True)
class MachineRef:
    """One of the requesting owner's live machines: what affinity rules and spread need."""

    server_uuid: str
    alias: str = ""
    uuid: str = ""
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlacementRequest:
    ram_mb: int
    disk_mb: int
    cpu_cap: int = 0  # percent of one CPU; 0 = uncapped
    owner_uuid: str = ""
    #: the package's and the image's traits, merged (the image's win on a clash, as DAPI)
    traits: Mapping[str, Any] = field(default_factory=dict)
    image_os: str = ""  # empty: no image given (capacity counts), any server will do
    image_type: str = ""
    image_uuid: str = ""
    image_mb: int = 0  # taken from the pool of a server that does not have the image yet
    #: the format of the image's file (tar, zfs: schemas.image_manifest); empty: no image
    image_format: str = ""
    affinity: tuple[AffinityRule, ...] = ()
    exclude: frozenset[str] = frozenset()
    #: the nic tags of the machine's networks: a server must provide every one (compared
    #: as given: nic tags are case-sensitive, as in nictagadm)
    nic_tags: frozenset[str] = frozenset()

    def excluding(self, server_uuid: str) -> PlacementRequest:
        return dataclasses.replace(self, exclude=self.exclude | {server_uuid})


@dataclass(frozen=True)
class Policy:
    """DAPI's ALLOC_* defaults (sdc-cnapi's SAPI template)."""

    reservation_ratio: float = 0.15
    pool_usable_ratio: float = 0.94
    ram_overprovision: float = 1.0
    cpu_overprovision: float = 4.0
    disk_overprovision: float = 1.0
    max_machines: int = 224
    allow_headnode: bool = False


@dataclass(frozen=True)
class Snapshot:
    """A fleet at one moment, plus the requesting owner's machines."""

    servers: Sequence[ServerState]
    owner_machines: Sequence[MachineRef] = ()
    #: the owner's machines per server, when the machines themselves are not needed (no
    #: affinity rules): reading counts is much cheaper than reading every machine
    owner_counts: Mapping[str, int] | None = None


def merged_traits(package_traits: Mapping[str, Any] | None,
                  image_traits: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**(package_traits or {}), **(image_traits or {})}


def with_machine(s: ServerState, r: PlacementRequest) -> ServerState:
    """The server once it holds one more machine of the request (simulation, packing),
    and the request's image."""
    capped = r.cpu_cap > 0
    imported = image_to_import(s.images, r.image_uuid, r.image_mb)
    return dataclasses.replace(
        s,
        images_mb=s.images_mb + imported,
        images=s.images | {r.image_uuid} if imported else s.images,
        ram_used_mb=s.ram_used_mb + r.ram_mb,
        disk_used_mb=s.disk_used_mb + r.disk_mb,
        cpu_used=s.cpu_used + r.cpu_cap,
        machine_count=s.machine_count + 1,
        capped_count=s.capped_count + capped,
        uncapped_count=s.uncapped_count + (not capped),
    )


@dataclass(frozen=True)
class Context:
    """What one decision derives once from the owner's machines, for every server."""

    owner_counts: Mapping[str, int]
    #: each hard rule with the servers that host a machine it matches
    hard_rules: tuple[tuple[AffinityRule, frozenset[str]], ...]
    soft_rules: tuple[tuple[AffinityRule, frozenset[str]], ...]

    @classmethod
    def build(cls, request: PlacementRequest, owner_machines: Sequence[MachineRef],
              owner_counts: Mapping[str, int] | None = None) -> Context:
        counts: dict[str, int] = dict(owner_counts or {})
        for m in owner_machines:
            counts[m.server_uuid] = counts.get(m.server_uuid, 0) + 1
        resolved = tuple((rule, rule.servers_with_matches(owner_machines))
                         for rule in request.affinity)
        return cls(owner_counts=counts,
                   hard_rules=tuple(pair for pair in resolved if not pair[0].soft),
                   soft_rules=tuple(pair for pair in resolved if pair[0].soft))
