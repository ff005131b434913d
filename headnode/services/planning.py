"""Capacity planning: what the fleet holds and what still fits, what-if simulations, and the
utilization history.

Every answer here is computed from the same placement code that serves creates (filters,
room left, the pipeline), so "fits" means what a create would get. Simulations run the
pipeline against an in-memory copy of a snapshot read in a read-only session: nothing is
written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from headnode.placement.filters import DEFAULT_FILTERS
from headnode.placement.pipeline import Pipeline
from headnode.placement.state import (
    Context,
    MachineRef,
    PlacementRequest,
    Policy,
    ServerState,
    Snapshot,
    cpu_total,
    unreserved_cpu,
    unreserved_disk,
    unreserved_ram,
    with_machine,
)
from headnode.services import fleet, placement
from headnode.services.context import ServiceContext
from headnode.services.errors import InvalidArgument
from headnode.services.networks import requested_networks
from headnode.services.resolve import resolve_owner, resolve_package
from headnode.store.models import CapacitySnapshot, Package, Server, utcnow

#: the filters that decide whether a server takes machines at all, whatever their size
PLACEABLE_STEPS = ("setup", "running", "reserved", "maintenance", "headnode")
#: at most this many machines placed one by one in one simulation
MAX_SIMULATED_MACHINES = 20_000
#: at most this many servers added by one simulation
MAX_SIMULATED_SERVERS = 20_000
RESOURCES = ("ram_mb", "cpu", "disk_mb")
PARTS = ("total", "provisioned", "reserved", "free")


def _policy(ctx: ServiceContext) -> Policy:
    return placement.policy_for(ctx)


def simulation_pipeline(ctx: ServiceContext) -> Pipeline:
    """The settings' pipeline, as creates use it, without the random scorer and without
    the candidate limit (a random sample): simulations answer the same question every
    time."""
    return placement.pipeline_for(ctx).with_weights(uniform_random=0).visiting_all()


def is_placeable(server: ServerState, policy: Policy) -> bool:
    empty = PlacementRequest(ram_mb=0, disk_mb=0)
    context = Context.build(empty, ())
    return all(h.passes(server, empty, policy, context)
               for h in DEFAULT_FILTERS if h.name in PLACEABLE_STEPS)


def free_of(server: ServerState, policy: Policy) -> dict[str, int]:
    """What placement can still give on a server (DAPI: no CPU share once a machine on
    it is uncapped)."""
    cpu = 0 if server.uncapped_count else unreserved_cpu(server, policy)
    return {"ram_mb": max(0, math.floor(unreserved_ram(server, policy))),
            "cpu": max(0, math.floor(cpu)),
            "disk_mb": max(0, math.floor(unreserved_disk(server, policy)))}


def server_report(row: Server, state: ServerState, policy: Policy) -> dict[str, Any]:
    """One server's part of ``report``: its RAM, CPU and disk (total, provisioned,
    reserved, free) and whether it takes machines."""
    free = free_of(state, policy)
    return {
        "uuid": row.uuid, "hostname": row.hostname, "placeable": is_placeable(state, policy),
        "machines": row.machine_count, "images_mb": row.images_mb,
        "ram_mb": {"total": row.ram_mb, "provisioned": row.ram_committed_mb,
                   "reserved": row.ram_inflight_mb, "free": free["ram_mb"]},
        "cpu": {"total": math.floor(cpu_total(state, policy)), "provisioned": row.cpu_committed,
                "reserved": row.cpu_inflight, "free": free["cpu"]},
        "disk_mb": {"total": row.disk_mb, "provisioned": row.disk_committed_mb,
                    "reserved": row.disk_inflight_mb, "free": free["disk_mb"]},
    }


def _fleet_totals(servers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sums over every server, except ``free``: only placeable servers offer their room."""
    totals: dict[str, Any] = {
        "servers": len(servers),
        "placeable_servers": sum(1 for s in servers if s["placeable"]),
        "machines": sum(s["machines"] for s in servers),
    }
    for resource in RESOURCES:
        totals[resource] = {part: sum(s[resource][part] for s in servers
                                      if part != "free" or s["placeable"]) for part in PARTS}
    return totals


def fits(servers: Iterable[ServerState], request: PlacementRequest, policy: Policy,
         pipeline: Pipeline) -> int:
    """How many more machines of ``request`` the servers take: each server packed with what
    its own room allows, after the same hard filters as a create."""
    return sum(pipeline.room_for(s, request, policy) for s in servers)


def _package_fits(packages: Iterable[Package], servers: Sequence[ServerState],
                  policy: Policy, pipeline: Pipeline) -> list[dict[str, Any]]:
    return [{"uuid": p.uuid, "name": p.name, "memory": p.memory, "disk": p.disk,
             "cpu_cap": p.cpu_cap,
             "fits": fits(servers, placement.build_request(p, None), policy, pipeline)}
            for p in packages]


def active_packages(session: Session) -> list[Package]:
    return list(session.scalars(select(Package).where(Package.active.is_(True))
                                .order_by(Package.name)))


def report(ctx: ServiceContext) -> dict[str, Any]:
    """``GET /ops/capacity``: per server and for the fleet, and per package what still fits."""
    policy = _policy(ctx)
    with ctx.read() as session:
        rows = list(session.scalars(select(Server).order_by(Server.hostname, Server.uuid)))
        states = [fleet.state_of(row) for row in rows]
        servers = [server_report(row, st, policy) for row, st in zip(rows, states, strict=True)]
        packages = _package_fits(active_packages(session), states, policy,
                                 simulation_pipeline(ctx))
    return {"servers": servers, "fleet": _fleet_totals(servers), "packages": packages}


# -- what if --------------------------------------------------------------------------------

def _template_servers(templates: Sequence[dict[str, Any]]) -> list[ServerState]:
    added: list[ServerState] = []
    for t, template in enumerate(templates):
        for i in range(template["count"]):
            n = len(added) + 1
            added.append(ServerState(
                uuid=f"simulated-{n}", hostname=f"new-{t + 1}-{i + 1}",
                backend=template.get("backend", "sim"), traits=template.get("traits") or {},
                ram_mb=template["ram_mb"], cpus=template["cpus"], disk_mb=template["disk_mb"],
                nic_tags=(None if template.get("nic_tags") is None
                          else frozenset(template["nic_tags"]))))
    return added


def _check_limits(body: dict[str, Any]) -> None:
    adding = sum(t["count"] for t in body.get("add_servers") or [])
    if adding > MAX_SIMULATED_SERVERS:
        raise InvalidArgument("add_servers", f"at most {MAX_SIMULATED_SERVERS} servers "
                              f"in one simulation, not {adding}")
    placing = sum(item["count"] for item in body.get("place") or [])
    if placing > MAX_SIMULATED_MACHINES:
        raise InvalidArgument("place", f"at most {MAX_SIMULATED_MACHINES} machines in one "
                              f"simulation, not {placing}")


def simulate(ctx: ServiceContext, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /ops/capacity/simulate``: add or remove servers, then place machines one by one
    as creates would; nothing is written."""
    _check_limits(body)
    policy = _policy(ctx)
    with ctx.read() as session:
        owner = resolve_owner(session, body["owner"]) if body.get("owner") else None
        snapshot = fleet.load_snapshot(session, owner.uuid if owner else None)
        items = []
        for i, item in enumerate(body.get("place") or []):
            try:
                package = resolve_package(session, item["package"])
            except InvalidArgument as exc:
                raise InvalidArgument(f"place.{i}.package", exc.message) from exc
            try:
                # as a create's: the networks named, else the owner's default network
                networks = requested_networks(session, owner.uuid if owner else "",
                                              item.get("networks"))
            except InvalidArgument as exc:
                raise InvalidArgument(f"place.{i}.networks", exc.message) from exc
            try:
                request = placement.build_request(package, None, owner.uuid if owner else "",
                                                  item.get("affinity"),
                                                  placement.nic_tags_of(networks))
            except InvalidArgument as exc:
                raise InvalidArgument(f"place.{i}.affinity", exc.message) from exc
            items.append((item, package, request))
        packages = active_packages(session)
        session.expunge_all()
    servers = _apply_server_changes(list(snapshot.servers), body)
    pipeline = simulation_pipeline(ctx)
    result = _place_all(Snapshot(servers, list(snapshot.owner_machines)), items, policy,
                        pipeline)
    after = result["servers"]
    placed_on: Counter[str] = result["placed_on"]
    added = {s.uuid for s in servers if s.uuid.startswith("simulated-")}
    return {
        "placements": result["placements"],
        "servers": [{"uuid": s.uuid, "hostname": s.hostname, "added": s.uuid in added,
                     "placeable": is_placeable(s, policy), "machines": s.machine_count,
                     "machines_placed": placed_on.get(s.uuid, 0), "free": free_of(s, policy)}
                    for s in after],
        "fleet_free": {r: sum(free_of(s, policy)[r] for s in after if is_placeable(s, policy))
                       for r in RESOURCES},
        "packages": _package_fits(packages, after, policy, pipeline),
        "removed": list(body.get("remove_servers") or []),
    }


def _apply_server_changes(servers: list[ServerState], body: dict[str, Any]) -> list[ServerState]:
    known = {s.uuid for s in servers}
    removing = [str(u) for u in body.get("remove_servers") or []]
    unknown = [u for u in removing if u not in known]
    if unknown:
        raise InvalidArgument("remove_servers", f"no server {', '.join(unknown)}")
    kept = [s for s in servers if s.uuid not in set(removing)]
    return kept + _template_servers(body.get("add_servers") or [])


def _place_all(snapshot: Snapshot, items: Sequence[tuple[dict[str, Any], Package,
                                                         PlacementRequest]],
               policy: Policy, pipeline: Pipeline) -> dict[str, Any]:
    servers = {s.uuid: s for s in snapshot.servers}
    owner_machines = list(snapshot.owner_machines)
    placed_on: Counter[str] = Counter()
    placements = []
    for item, package, request in items:
        alias = item.get("alias") or package.name
        on: Counter[str] = Counter()
        refusal = None
        for n in range(item["count"]):
            decision = pipeline.decide(Snapshot(list(servers.values()), owner_machines),
                                       request, policy)
            if decision.server is None:
                # Nothing changed since: every later machine of this item fits nowhere too.
                refusal = decision.explain(request)
                break
            chosen = decision.server
            servers[chosen.uuid] = with_machine(chosen, request)
            owner_machines.append(MachineRef(chosen.uuid, f"{alias}{n + 1}"))
            on[chosen.hostname or chosen.uuid] += 1
            placed_on[chosen.uuid] += 1
        count = sum(on.values())
        placements.append({"package": package.name, "requested": item["count"],
                           "placed": count, "refused": item["count"] - count,
                           "servers": dict(on), "refusal": refusal})
    return {"placements": placements, "servers": list(servers.values()),
            "placed_on": placed_on}


# -- history --------------------------------------------------------------------------------

def take_snapshot(session: Session, policy: Policy, keep_days: float,
                  now: datetime | None = None) -> CapacitySnapshot:
    """Record the fleet's utilization now and drop snapshots older than ``keep_days``."""
    now = now or utcnow()
    rows = list(session.scalars(select(Server)))
    totals = _fleet_totals([server_report(row, fleet.state_of(row), policy) for row in rows])
    snap = CapacitySnapshot(
        taken_at=now, servers=totals["servers"],
        placeable_servers=totals["placeable_servers"], machines=totals["machines"],
        **{f"{resource.removesuffix('_mb')}_{part}{'_mb' if resource.endswith('_mb') else ''}":
           totals[resource][part] for resource in RESOURCES for part in PARTS})
    session.add(snap)
    session.execute(delete(CapacitySnapshot)
                    .where(CapacitySnapshot.taken_at < now - timedelta(days=keep_days)))
    return snap


def snapshot_to_dict(snap: CapacitySnapshot) -> dict[str, Any]:
    answer: dict[str, Any] = {"taken_at": snap.taken_at, "servers": snap.servers,
                              "placeable_servers": snap.placeable_servers,
                              "machines": snap.machines}
    for resource in RESOURCES:
        prefix, unit = resource.removesuffix("_mb"), "_mb" if resource.endswith("_mb") else ""
        answer[resource] = {part: getattr(snap, f"{prefix}_{part}{unit}") for part in PARTS}
    return answer


def history(ctx: ServiceContext, since: datetime | None = None,
            limit: int = 10_000, most: int | None = None) -> list[dict[str, Any]]:
    """Snapshots since ``since``, oldest first, at most ``limit``; with ``most``, thinned in
    the database to at most that many evenly spread ones (the first and the last kept), so
    a month of 5-minute snapshots is not read to draw 300 points."""
    window = select(CapacitySnapshot.id, CapacitySnapshot.taken_at)
    if since is not None:
        window = window.where(CapacitySnapshot.taken_at >= _aware(since))
    with ctx.read() as session:
        ids = None
        if most is not None:
            ids = _evenly_spread(session, window.order_by(CapacitySnapshot.taken_at)
                                 .limit(limit).subquery(), most)
        query = select(CapacitySnapshot).order_by(CapacitySnapshot.taken_at).limit(limit)
        if since is not None:
            query = query.where(CapacitySnapshot.taken_at >= _aware(since))
        if ids is not None:
            query = query.where(CapacitySnapshot.id.in_(ids))
        return [snapshot_to_dict(s) for s in session.scalars(query)]


def history_count(ctx: ServiceContext, since: datetime | None = None) -> int:
    """How many snapshots there are since ``since``."""
    query = select(func.count()).select_from(CapacitySnapshot)
    if since is not None:
        query = query.where(CapacitySnapshot.taken_at >= _aware(since))
    with ctx.read() as session:
        return int(session.scalar(query) or 0)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _evenly_spread(session: Session, rows: Any, most: int) -> list[int] | None:
    """The ids of at most ``most`` of ``rows`` (id, taken_at), evenly spread in time order,
    first and last kept; None when there are no more than ``most`` (all of them)."""
    count = session.scalar(select(func.count()).select_from(rows)) or 0
    if count <= most:
        return None
    numbered = select(rows.c.id, func.row_number().over(order_by=rows.c.taken_at)
                      .label("n")).subquery()
    wanted = {round(i * (count - 1) / (most - 1)) + 1 for i in range(most)}
    return list(session.scalars(select(numbered.c.id).where(numbered.c.n.in_(sorted(wanted)))))


def record_history(ctx: ServiceContext) -> dict[str, Any]:
    """One history snapshot (the periodic task's work), with the configured retention."""
    with ctx.transaction() as session:
        snap = take_snapshot(session, _policy(ctx), ctx.settings.capacity_history_days)
        session.flush()
        return snapshot_to_dict(snap)
