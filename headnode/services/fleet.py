"""The fleet as placement sees it: one snapshot read from the servers' aggregates.

Plain columns, not ORM objects: this runs on every provision over every server, and
building objects would cost more than the query. Machines are never walked; the only ones
read are the requesting owner's (for affinity rules and spread), through their index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Executable, Text, bindparam, cast, exists, func, select
from sqlalchemy.orm import Session

from headnode.placement.runs import Runs, reported
from headnode.placement.state import MachineRef, ServerState, Snapshot
from headnode.services.statements import per_thread_cache
from headnode.store.models import ALIAS_HOLDING_STATES, Machine, Server, ServerImage
from schemas.agent import SYSINFO_RUNS, SysinfoSchema

#: sysinfo's key of the nic tags a node provides (SysinfoSchema.nic_tags on the wire)
SYSINFO_NIC_NAMES: str = SysinfoSchema().fields["nic_tags"].data_key or "nic_tags"


def fit_columns() -> SimpleNamespace:
    """A server row as placement/fit.py's rules read it (ServerState's names): what it
    has, and what it uses (in flight + committed). The snapshot selects these; the
    reservation guard (services/capacity.py) evaluates the rules over them. Built anew on
    each call, so that statements built per thread share no expression objects."""
    s = Server.__table__.c
    return SimpleNamespace(
        status=s.status, setup=s.setup, reserved=s.reserved, maintenance=s.maintenance,
        ram_mb=s.ram_mb, cpus=s.cpus, disk_mb=s.disk_mb,
        ram_used_mb=s.ram_inflight_mb + s.ram_committed_mb,
        disk_used_mb=s.disk_inflight_mb + s.disk_committed_mb,
        cpu_used=s.cpu_inflight + s.cpu_committed,
        images_mb=s.images_mb, machine_count=s.machine_count,
        capped_count=s.capped_count, uncapped_count=s.uncapped_count)


def _server_columns() -> tuple[Any, ...]:
    """In ServerState's field order."""
    f = fit_columns()
    return (Server.uuid, Server.hostname, f.status, f.setup, f.reserved, f.maintenance,
            Server.headnode,
            Server.backend, cast(Server.traits, Text),
            cast(Server.sysinfo[SYSINFO_RUNS], Text),
            cast(Server.sysinfo[SYSINFO_NIC_NAMES], Text), f.ram_mb, f.cpus, f.disk_mb,
            f.ram_used_mb, f.disk_used_mb, f.cpu_used, f.images_mb, f.machine_count,
            f.capped_count, f.uncapped_count)


#: traits come as text: most servers have none, and decoding 10,000 "{}" costs more than
#: reading the rest of their rows
SERVER_COLUMNS = _server_columns()


NO_TRAITS = ("", "{}", "null")


def _traits(text: str | None) -> dict[str, Any]:
    return {} if text is None or text in NO_TRAITS else dict(json.loads(text))


#: what nodes said they run (sysinfo "SDC Runs", as JSON text) -> its placement view: a fleet
#: has a few distinct reports, and decoding one per server would cost more than the read
_RUNS_SEEN: dict[str, Runs | None] = {}
_RUNS_SEEN_MAX = 256


def _runs(text: str | None) -> Runs | None:
    if text is None or text == "null":
        return None  # an agent older than the report: the backend's table decides
    found = _RUNS_SEEN.get(text, False)
    if found is not False:
        return found  # type: ignore[return-value]
    runs = reported(json.loads(text))
    if len(_RUNS_SEEN) < _RUNS_SEEN_MAX:
        _RUNS_SEEN[text] = runs
    return runs


#: a node's nic tags (sysinfo "NIC Names", as JSON text) -> a set: as with "SDC Runs", a
#: fleet has a few distinct lists
_TAGS_SEEN: dict[str, frozenset[str] | None] = {}


def _nic_tags(text: str | None) -> frozenset[str] | None:
    if text is None or text == "null":
        return None  # no agent registered the row: the nic-tags filter lets it through
    found = _TAGS_SEEN.get(text)
    if found is not None:
        return found
    tags = frozenset(str(tag) for tag in json.loads(text) or ())
    if len(_TAGS_SEEN) < _RUNS_SEEN_MAX:
        _TAGS_SEEN[text] = tags
    return tags


def states_from_rows(rows: Iterable[Any], image_uuid: str = "") -> list[ServerState]:
    """Rows of SERVER_COLUMNS -> placement's view of each server. With ``image_uuid``, each
    row ends with one more column: whether the server holds that image (_holds_image)."""
    states = []
    if not image_uuid:
        for u, h, st, su, rs, mt, hn, be, tr, rn, nt, *rest in rows:
            state = ServerState(u, h, st, su, rs, hn, be, _traits(tr), *rest)
            if mt:
                state.maintenance = True
            if rn is not None:  # still being built: nothing else has seen it
                state.runs = _runs(rn)
            if nt is not None:
                state.nic_tags = _nic_tags(nt)
            states.append(state)
        return states
    held = frozenset((image_uuid,))
    for u, h, st, su, rs, mt, hn, be, tr, rn, nt, *rest, holds in rows:
        state = ServerState(u, h, st, su, rs, hn, be, _traits(tr), *rest)
        if mt:
            state.maintenance = True
        if rn is not None:
            state.runs = _runs(rn)
        if nt is not None:
            state.nic_tags = _nic_tags(nt)
        if holds:
            state.images = held
        states.append(state)
    return states


def _holds_image() -> Any:
    """Whether the server holds image ``b_image`` already: the disk rule counts an image
    only where it must still be imported, as the reservation's claim does."""
    return (exists().where(ServerImage.server_uuid == Server.uuid,
                           ServerImage.image_uuid == bindparam("b_image"))
            .label("holds_image"))


def load_servers(session: Session, only: str | None = None,
                 image_uuid: str = "") -> list[ServerState]:
    query = select(*SERVER_COLUMNS)
    if image_uuid:
        query = query.add_columns(_holds_image())
    if only:
        query = query.where(Server.uuid == only)
    # Core, not the ORM: these are plain columns and this runs on every provision.
    return states_from_rows(session.connection().execute(query, {"b_image": image_uuid}),
                            image_uuid)


def load_owner_machines(session: Session, owner_uuid: str | None) -> list[MachineRef]:
    if not owner_uuid:
        return []
    rows = session.execute(
        select(Machine.server_uuid, Machine.alias, Machine.uuid, Machine.tags)
        .where(Machine.owner_uuid == owner_uuid, Machine.state.in_(ALIAS_HOLDING_STATES),
               Machine.server_uuid.is_not(None))
    )
    return [MachineRef(server_uuid, alias, uuid, tags or {})
            for server_uuid, alias, uuid, tags in rows]


def load_owner_counts(session: Session, owner_uuid: str | None) -> dict[str, int]:
    """The owner's live machines per server, from the owner's rows only (their index)."""
    if not owner_uuid:
        return {}
    rows = session.connection().execute(_owner_counts(), {"b_owner": owner_uuid})
    return {server_uuid: int(n) for server_uuid, n in rows}


@per_thread_cache
def _owner_counts() -> Executable:
    return (select(Machine.server_uuid, func.count())
            .where(Machine.owner_uuid == bindparam("b_owner"),
                   Machine.state.in_(ALIAS_HOLDING_STATES), Machine.server_uuid.is_not(None))
            .group_by(Machine.server_uuid))


@per_thread_cache
def _servers_and_counts(pinned: bool, with_image: bool = False) -> Executable:
    """Built once (building it on every provision cost more than the rest of the read):
    parameters ``b_owner``, when ``pinned`` ``b_server``, when ``with_image`` ``b_image``."""
    counts = (select(Machine.server_uuid, func.count().label("n"))
              .where(Machine.owner_uuid == bindparam("b_owner"),
                     Machine.state.in_(ALIAS_HOLDING_STATES),
                     Machine.server_uuid.is_not(None))
              .group_by(Machine.server_uuid)
              .subquery())
    columns = (*SERVER_COLUMNS, _holds_image()) if with_image else SERVER_COLUMNS
    query = (select(*columns, counts.c.n)
             .outerjoin(counts, counts.c.server_uuid == Server.uuid))
    return query.where(Server.uuid == bindparam("b_server")) if pinned else query


def load_servers_and_counts(session: Session, owner_uuid: str, only: str | None = None,
                            image_uuid: str = "") -> tuple[list[ServerState], dict[str, int]]:
    """The servers and the owner's machines on each, in one statement (one round trip)."""
    rows = session.connection().execute(
        _servers_and_counts(bool(only), bool(image_uuid)),
        {"b_owner": owner_uuid, "b_server": only, "b_image": image_uuid}).all()
    owned = {row[0]: int(row[-1]) for row in rows if row[-1]}
    return states_from_rows((row[:-1] for row in rows), image_uuid), owned


def load_snapshot(session: Session, owner_uuid: str | None = None,
                  only: str | None = None, with_machines: bool = True,
                  image_uuid: str = "") -> Snapshot:
    """``with_machines=False`` when no affinity rule will look at the owner's machines:
    spreading needs only how many the owner has on each server. ``image_uuid``: the image
    a create asks for, so that each server says whether it holds it."""
    if with_machines:
        return Snapshot(load_servers(session, only, image_uuid),
                        load_owner_machines(session, owner_uuid))
    if not owner_uuid:
        return Snapshot(load_servers(session, only, image_uuid), owner_counts={})
    servers, counts = load_servers_and_counts(session, owner_uuid, only, image_uuid)
    return Snapshot(servers, owner_counts=counts)


def state_of(server: Server) -> ServerState:
    """The placement view of a loaded server row (reports; decisions use load_servers)."""
    return ServerState(
        server.uuid, server.hostname, server.status, server.setup, server.reserved,
        server.headnode, server.backend, server.traits or {}, server.ram_mb, server.cpus,
        server.disk_mb, server.ram_inflight_mb + server.ram_committed_mb,
        server.disk_inflight_mb + server.disk_committed_mb,
        server.cpu_inflight + server.cpu_committed, server.images_mb, server.machine_count,
        server.capped_count, server.uncapped_count,
        runs=reported((server.sysinfo or {}).get(SYSINFO_RUNS)),
        nic_tags=listed_nic_tags(server.sysinfo), maintenance=server.maintenance)


def listed_nic_tags(sysinfo: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The nic tags a node's sysinfo says it provides (``NIC Names``); None when it says
    nothing (no agent registered the row): the nic-tags filter lets such a server through."""
    value = (sysinfo or {}).get(SYSINFO_NIC_NAMES)
    return None if value is None else frozenset(str(tag) for tag in value)
