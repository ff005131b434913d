"""Hard filters: each removes the servers that cannot take the machine, for one reason.

Every filter has one signature, ``(server, request, policy, context) -> bool`` (True: the
server passes), and one reason constant, phrased so that "12 lack RAM" reads as the summary
of a refusal. The pipeline runs them in the order of ``DEFAULT_FILTERS``: cheapest and most
restrictive first, as DAPI's production chain.

The filters about room and about taking machines at all (setup, running, reserved,
maintenance, vm-count,
capness, min-ram, min-cpu, min-disk) only ask fit.py's rules, the ones the reservation's SQL
guard is built from: a server passes them exactly when a reservation on it succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from headnode.config import OPTIONAL_FILTERS
from headnode.placement import fit
from headnode.placement.runs import BACKEND_RUNS, NOTHING, backend_installs
from headnode.placement.state import (
    Context,
    PlacementRequest,
    Policy,
    ServerState,
)

EXCLUDED = "were taken by concurrent provisions"
NOT_SETUP = "are not set up"
NOT_RUNNING = "are not running"
RESERVED = "are reserved"
MAINTENANCE = "are in maintenance"
HEADNODE = "are the head node"
TRAITS = "have traits that do not match"
BACKEND = "cannot run the image's OS"
NIC_TAGS = "lack a nic tag of the networks"
IMAGE_FORMAT = "cannot install the image's file format"
TOO_MANY_MACHINES = "have too many machines"
CAPNESS = "would mix capped and uncapped machines"
NOT_ENOUGH_RAM = "lack RAM"
NOT_ENOUGH_CPU = "lack CPU"
NOT_ENOUGH_DISK = "lack disk"
AFFINITY = "break an affinity rule"

Passes = Callable[[ServerState, PlacementRequest, Policy, Context], bool]
Needed = Callable[[PlacementRequest, Context], bool]


@dataclass(frozen=True)
class HardFilter:
    name: str
    reason: str
    passes: Passes
    #: when given and False for a request, every server would pass: the step is skipped
    needed: Needed | None = None


def excluded(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return s.uuid not in r.exclude


def setup(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.is_set_up(s)


def running(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.is_running(s)


def not_reserved(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.is_unreserved(s, fit.PYTHON)


def not_in_maintenance(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.is_in_service(s, fit.PYTHON)


def not_headnode(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return p.allow_headnode or not s.headnode


def trait_satisfied(wanted: Any, offered: Any) -> bool:
    """A server's trait value meets a wanted one: equal, or one of a list on either side."""
    wanted_values = wanted if isinstance(wanted, list) else [wanted]
    offered_values = offered if isinstance(offered, list) else [offered]
    return any(w == o for w in wanted_values for o in offered_values)


def traits_match(server_traits: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    # Both ways, as DAPI: a server with traits is kept for machines that ask for them, and a
    # machine that asks for traits goes only where each of them is offered.
    if not wanted:
        return not server_traits
    return all(k in server_traits and trait_satisfied(v, server_traits[k])
               for k, v in wanted.items())


def traits(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return traits_match(s.traits, r.traits)


def backend(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    if not r.image_os and not r.image_type:
        return True  # no image in the question (capacity counts per package)
    # Its node's report says what it runs; for an older node, its backend's table (runs.py;
    # an unknown backend runs nothing).
    runs = s.runs or BACKEND_RUNS.get(s.backend, NOTHING)
    return runs.image(r.image_os, r.image_type)


def image_format(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    # A node installs an image only from a file it can take: a Linux node unpacks tarballs, a
    # SmartOS node's imgadm receives ZFS send streams (docker layers excepted). Its report
    # says which, per image type; for an older node, its backend's table (runs.py).
    if not r.image_format:
        return True  # no image file in the question (as ``needed`` says)
    if s.runs is None or s.runs.formats is None:
        return backend_installs(s.backend, r.image_format, r.image_type)
    return (r.image_format, r.image_type) in s.runs.formats


def nic_tags(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    # A machine's NIC is plumbed on its tag's link or bridge: a node without the tag cannot
    # carry it. A row whose sysinfo says nothing about tags (no agent registered it) passes,
    # as an older node's silence about what it runs does.
    return s.nic_tags is None or r.nic_tags <= s.nic_tags


def machine_count(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.below_machine_limit(s, p)


def capness(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.keeps_capness(s, r.cpu_cap > 0)


def min_ram(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return fit.ram_fits(s, p, r.ram_mb)


def min_cpu(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    # An uncapped machine claims no share; capness keeps it away from capped ones.
    return r.cpu_cap <= 0 or fit.cpu_fits(s, p, r.cpu_cap)


def min_disk(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    # The image too, if this server must still import it (as the guard counts it).
    return fit.disk_fits(s, p, r.disk_mb,
                         fit.image_to_import(s.images, r.image_uuid, r.image_mb))


def affinity(s: ServerState, r: PlacementRequest, p: Policy, c: Context) -> bool:
    return all((s.uuid in hosts) == rule.near for rule, hosts in c.hard_rules)


#: cheapest and most restrictive first
DEFAULT_FILTERS: tuple[HardFilter, ...] = (
    HardFilter("excluded", EXCLUDED, excluded, lambda r, c: bool(r.exclude)),
    HardFilter("setup", NOT_SETUP, setup),
    HardFilter("running", NOT_RUNNING, running),
    HardFilter("reserved", RESERVED, not_reserved),
    HardFilter("maintenance", MAINTENANCE, not_in_maintenance),
    HardFilter("headnode", HEADNODE, not_headnode),
    HardFilter("traits", TRAITS, traits),
    HardFilter("backend", BACKEND, backend, lambda r, c: bool(r.image_os or r.image_type)),
    HardFilter("image-format", IMAGE_FORMAT, image_format, lambda r, c: bool(r.image_format)),
    HardFilter("nic-tags", NIC_TAGS, nic_tags, lambda r, c: bool(r.nic_tags)),
    HardFilter("vm-count", TOO_MANY_MACHINES, machine_count),
    HardFilter("capness", CAPNESS, capness),
    HardFilter("min-ram", NOT_ENOUGH_RAM, min_ram),
    HardFilter("min-cpu", NOT_ENOUGH_CPU, min_cpu, lambda r, c: r.cpu_cap > 0),
    HardFilter("min-disk", NOT_ENOUGH_DISK, min_disk),
    HardFilter("affinity", AFFINITY, affinity, lambda r, c: bool(c.hard_rules)),
)

def enabled(names: Iterable[str]) -> tuple[HardFilter, ...]:
    """The filters that always run (the reservation's guard applies the same rules, or a
    create relies on them) and the optional ones named (config.OPTIONAL_FILTERS: an
    operator's SDC_PLACEMENT_FILTERS), in DEFAULT_FILTERS' order whatever the names'."""
    chosen = set(names)
    return tuple(f for f in DEFAULT_FILTERS
                 if f.name not in OPTIONAL_FILTERS or f.name in chosen)
