"""The first allocator: a pure pipeline of hard filters and one scorer over a fleet snapshot.

Each filter has one signature, ``(server, request, policy) -> reason | None``; a reason is a
constant naming why the server cannot take the machine, so "why did nothing fit?" always has
an answer. The decision is pure; applying it (an atomic reservation) is the caller's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

NOT_SETUP = "not set up"
NOT_RUNNING = "not running"
RESERVED = "reserved"
HEADNODE = "head node"
TOO_MANY_MACHINES = "too many machines"
NOT_ENOUGH_RAM = "not enough RAM"
NOT_ENOUGH_DISK = "not enough disk"
EXCLUDED = "excluded by the request"


@dataclass(frozen=True)
class ServerState:
    """What placement needs to know of one server (one row of ``servers``)."""

    uuid: str
    hostname: str = ""
    status: str = "running"
    setup: bool = True
    reserved: bool = False
    headnode: bool = False
    ram_mb: int = 0
    disk_mb: int = 0
    ram_used_mb: int = 0  # in flight + committed
    disk_used_mb: int = 0
    machine_count: int = 0


@dataclass(frozen=True)
class PlacementRequest:
    ram_mb: int
    disk_mb: int
    owner_uuid: str = ""
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    reservation_ratio: float = 0.15
    pool_usable_ratio: float = 0.94
    max_machines: int = 224
    allow_headnode: bool = False


def unreserved_ram(server: ServerState, policy: Policy) -> float:
    return server.ram_mb * (1 - policy.reservation_ratio) - server.ram_used_mb


def unreserved_disk(server: ServerState, policy: Policy) -> float:
    return server.disk_mb * policy.pool_usable_ratio - server.disk_used_mb


Filter = Callable[[ServerState, PlacementRequest, Policy], str | None]


def filter_excluded(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return EXCLUDED if s.uuid in r.exclude else None


def filter_setup(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return None if s.setup else NOT_SETUP


def filter_running(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return None if s.status == "running" else NOT_RUNNING


def filter_reserved(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return RESERVED if s.reserved else None


def filter_headnode(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return HEADNODE if s.headnode and not p.allow_headnode else None


def filter_machine_count(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return TOO_MANY_MACHINES if s.machine_count >= p.max_machines else None


def filter_ram(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return None if unreserved_ram(s, p) >= r.ram_mb else NOT_ENOUGH_RAM


def filter_disk(s: ServerState, r: PlacementRequest, p: Policy) -> str | None:
    return None if unreserved_disk(s, p) >= r.disk_mb else NOT_ENOUGH_DISK


#: cheapest and most restrictive first
DEFAULT_FILTERS: tuple[Filter, ...] = (
    filter_excluded,
    filter_setup,
    filter_running,
    filter_reserved,
    filter_headnode,
    filter_machine_count,
    filter_ram,
    filter_disk,
)


@dataclass
class Decision:
    server: ServerState | None
    considered: int
    reasons: Counter[str] = field(default_factory=Counter)

    def explain(self, request: PlacementRequest) -> str:
        if self.server is not None:
            return f"placed on {self.server.hostname or self.server.uuid}"
        if not self.considered:
            return "no server can fit the machine: there are no servers"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
        return (f"no server can fit {request.ram_mb} MiB of RAM and {request.disk_mb} MiB "
                f"of disk: {parts}")


def score_unreserved_ram(server: ServerState, policy: Policy) -> float:
    # Emptiest first spreads machines over the fleet, as DAPI's default weights do.
    return unreserved_ram(server, policy)


def allocate(
    servers: Iterable[ServerState],
    request: PlacementRequest,
    policy: Policy = Policy(),
    filters: Sequence[Filter] = DEFAULT_FILTERS,
) -> Decision:
    reasons: Counter[str] = Counter()
    best: ServerState | None = None
    best_score = float("-inf")
    considered = 0
    for server in servers:
        considered += 1
        reason = next((r for f in filters if (r := f(server, request, policy))), None)
        if reason:
            reasons[reason] += 1
            continue
        score = score_unreserved_ram(server, policy)
        if score > best_score or (score == best_score and best and server.uuid < best.uuid):
            best, best_score = server, score
    return Decision(server=best, considered=considered, reasons=reasons)
