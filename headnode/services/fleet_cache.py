"""The fleet as creates see it: one snapshot per API process, kept current by reading only
the server rows that changed since the last read.

Why this shape. Reading every server with its aggregates cost a create about 70 ms at
10,000 servers, most of it moving and decoding rows that had not changed. The choice was
between a version counter bumped by every writer and a cache refreshed by "rows changed
since"; the counter would mean touching every statement that changes a server (capacity,
status reports, the reconciler, set-up, forget) and one hot row that every such
transaction locks until it commits. PostgreSQL keeps the version already: each row
version carries the id of the transaction that wrote it (the system column ``xmin``), and
a snapshot says which transactions it could not see (``pg_current_snapshot()``: every one
from its ``xmin`` on may still be running). So a refresh reads the rows written by
transactions from the previous read's snapshot ``xmin`` on, in one statement with the new
snapshot's ``xmin``: a row a slow transaction changes is read once that transaction has
committed, however late, and nothing is missed, without a migration, a trigger or a change
to any writer. Removed servers show as a count that no longer matches, and only then are
the uuids read. A full read every FULL_EVERY seconds, and whenever the transaction ids go
backwards (another database at the same address), is the backstop.

Freshness: a snapshot is at most MAX_AGE seconds old when a create decides on it; the
reservation's guarded UPDATE (services/capacity.py) is the final word, as it always was
against concurrent creates. A create asks for a fresh snapshot (``fresh=True``) and
decides again when the guard refused every candidate, and when the cached snapshot would
refuse it (services/machines.py ``_place``): a refusal always names the fleet as it is.
The guard checks fit.py's rules (running, set up, reserved, maintenance, room); what it
does not check (traits, what a node runs, its nic tags) comes with a node's registration
and changes rarely: a create in the MAX_AGE after such a change may still see the old one,
as a create that read the fleet just before the change would have.

What stays per request: the owner's machines (affinity) or their count per server, an
indexed read of the owner's rows only. Which images a server holds is part of its cached
state (every image it holds, not only the requested one: image_to_import asks the same
question of either): ``server_images`` changes only in a transaction that also writes the
server's row (a claim sticks only with the guard's UPDATE, which adds to ``images_mb``; a
forget deletes the row), so the row's version covers its images too. A writer that adds or
removes a server's images must keep that so (as ``images_mb`` already asks it to).

Read directly, not from here: a server named by the create (``only``: one row), and the
operator's views, which must be exact and are rare: the placement dry run (the funnel of
the database's truth), capacity reports and what-ifs (services/planning.py).

Processes and threads: gunicorn's workers are processes, each with its own cache (keyed by
the process id too, so a forked child never uses its parent's); the threads of one share
it, and one refresh runs at a time (a lock). The cache is immutable data published by
replacing a tuple: a decision in progress keeps the one it got.

SQLite (``sdc up``'s embedded store, small fleets) has no transaction ids to read: there a
create reads the fleet directly, as before.

The refresh runs on the create's own connection (no second connection per create, which
the pool could run out of); it must come before the transaction changes any server row,
as placement does (it reserves after it decides). Rows this transaction wrote are never
taken into the cache.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Executable,
    Text,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import UserDefinedType

from headnode.placement.state import NO_IMAGES, ServerState, Snapshot
from headnode.services import fleet
from headnode.services.statements import per_thread_cache
from headnode.store.models import Server, ServerImage

#: seconds a snapshot may be old when a create decides on it (the guard has the last word)
MAX_AGE = 0.25
#: seconds between full reads (the backstop against anything the delta could miss)
FULL_EVERY = 300.0
#: transaction ids as rows store them (``xid``) wrap around at 2**32
XID_SPAN = 1 << 32

SERVERS = Server.__table__


class _Xid(UserDefinedType[int]):
    """PostgreSQL's 32-bit transaction id, as rows carry it (``xmin``)."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "xid"


@per_thread_cache
def _changed_rows() -> Executable:
    """The rows written by transactions from ``b_since`` (a 32-bit xid) on, or all rows when
    it is null, with the images each holds; each joined to one row of this snapshot's
    facts, so an unchanged fleet
    still answers one row: the snapshot's xmin (64-bit), how many servers there are, and
    this transaction's own id (null before it writes)."""
    meta = select(
        cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)
        .label("snapshot_xmin"),
        select(func.count()).select_from(SERVERS).scalar_subquery().label("fleet_size"),
        cast(cast(func.pg_current_xact_id_if_assigned(), Text), BigInteger)
        .label("own_xid"),
    ).subquery("meta")
    since = bindparam("b_since", type_=BigInteger)
    row_xid: Any = literal_column("servers.xmin")
    # age() counts back from one reference for both sides, so it compares ids modulo 2**32
    # (row ids older than the snapshot by more than 2**31 are frozen and never "new")
    changed = or_(since.is_(None),
                  func.age(row_xid) <= func.age(cast(cast(since, Text), _Xid())))
    held = (select(func.array_agg(ServerImage.image_uuid))
            .where(ServerImage.server_uuid == SERVERS.c.uuid).scalar_subquery())
    return (select(*fleet.SERVER_COLUMNS, held, cast(cast(row_xid, Text), BigInteger),
                   meta.c.snapshot_xmin, meta.c.fleet_size, meta.c.own_xid)
            .select_from(meta.outerjoin(SERVERS, changed)))


#: the columns of fleet.SERVER_COLUMNS a node reports as text (traits, what it runs, its nic
#: tags): decoded again only when the text changed
_STATIC = slice(8, 11)
_NO_STATIC = (None, None, None)
#: the sets of images servers hold: a fleet has few distinct ones, each kept once
_HELD: dict[tuple[str, ...], frozenset[str]] = {}
_HELD_MAX = 4096


def _held(images: list[str] | None) -> frozenset[str]:
    if not images:
        return NO_IMAGES
    key = tuple(sorted(images))
    found = _HELD.get(key)
    if found is None:
        found = frozenset(key)
        if len(_HELD) < _HELD_MAX:
            _HELD[key] = found
    return found


#: per server: where it is in the published tuple, its state, the texts decoded into it
Entry = tuple[int, ServerState, tuple[Any, ...]]


class FleetCache:
    """One process's snapshot of one database's servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self.servers: tuple[ServerState, ...] = ()
        self._xmin: int | None = None  # the last read's snapshot xmin (64-bit)
        self._read_at = float("-inf")  # when the last refresh sent its statement
        self._full_at = float("-inf")

    def current(self, session: Session, max_age: float | None = None,
                fresh: bool = False) -> tuple[ServerState, ...]:
        """The servers, as of at most ``max_age`` (default MAX_AGE) seconds ago; with
        ``fresh``, as of a read that started after this call."""
        limit = MAX_AGE if max_age is None else max_age
        asked = time.monotonic()
        if not fresh and asked - self._read_at <= limit:
            return self.servers
        with self._lock:
            # another thread's read that started since is as fresh as one started now
            if self._read_at >= asked or (not fresh and asked - self._read_at <= limit):
                return self.servers
            self._refresh(session)
        return self.servers

    def _refresh(self, session: Session) -> None:
        started = time.monotonic()
        full = self._xmin is None or started - self._full_at > FULL_EVERY
        rows = self._read(session, None if full else self._xmin)
        if not full and self._xmin is not None and rows[0][-3] < self._xmin:
            full, rows = True, self._read(session, None)  # another database at this address
        snapshot_xmin, fleet_size, own_xid = rows[0][-3:]
        own = None if own_xid is None else own_xid % XID_SPAN
        # this transaction's own writes are not committed: never cached
        changed = [row[:-4] for row in rows if row[0] is not None and row[-4] != own]
        if full or changed or len(self._entries) != fleet_size:
            entries, servers = ({}, []) if full else (dict(self._entries), list(self.servers))
            self._merge(entries, servers, changed)
            if len(entries) != fleet_size:
                entries, servers = _without_removed(session, entries, servers)
            # published only once the read has succeeded, each as one assignment; a
            # change replaces one item of a copy (a C-level copy), not the whole walk
            self._entries, self.servers = entries, tuple(servers)
        self._xmin, self._read_at = snapshot_xmin, started
        if full:
            self._full_at = started

    @staticmethod
    def _read(session: Session, since: int | None) -> Sequence[Any]:
        return session.connection().execute(
            _changed_rows(), {"b_since": None if since is None else since % XID_SPAN}).all()

    @staticmethod
    def _merge(entries: dict[str, Entry], servers: list[ServerState],
               rows: Iterable[Any]) -> None:
        """Rows of fleet.SERVER_COLUMNS and the images held, into ``entries`` and
        ``servers`` (a known server keeps its place, a new one goes last)."""
        for *columns, images in rows:
            uuid, static = columns[0], tuple(columns[_STATIC])
            old = entries.get(uuid)
            if old is None or old[2] != static:
                state = fleet.states_from_rows((columns,))[0]
            else:
                state = fleet.states_from_rows(((*columns[:8], *_NO_STATIC,
                                                 *columns[11:]),))[0]
                state.traits, state.runs, state.nic_tags = (old[1].traits, old[1].runs,
                                                            old[1].nic_tags)
            state.images = _held(images)
            if old is None:
                entries[uuid] = (len(servers), state, static)
                servers.append(state)
            else:
                entries[uuid] = (old[0], state, static)
                servers[old[0]] = state


def _without_removed(session: Session, entries: dict[str, Entry],
                     servers: list[ServerState]) -> tuple[dict[str, Entry], list[ServerState]]:
    """The servers the database still has (read only when the count says some went)."""
    present = set(session.connection().execute(select(SERVERS.c.uuid)).scalars())
    kept = [state for state in servers if state.uuid in present]
    return ({state.uuid: (i, state, entries[state.uuid][2]) for i, state in enumerate(kept)},
            kept)


_CACHES: dict[tuple[int, str], FleetCache] = {}
_CACHES_LOCK = threading.Lock()


def forget_all() -> None:
    """Drop this process's caches: the next create reads the fleet whole (tests, which
    empty the tables between them)."""
    with _CACHES_LOCK:
        _CACHES.clear()


def cache_for(session: Session) -> FleetCache | None:
    """This process's cache of the session's database; None where there is none (SQLite)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    key = (os.getpid(), bind.engine.url.render_as_string(hide_password=True))
    found = _CACHES.get(key)
    if found is None:
        with _CACHES_LOCK:
            found = _CACHES.setdefault(key, FleetCache())
    return found


def serves(session: Session, only: str | None = None) -> bool:
    """Whether load_snapshot answers from the cache (else it reads the fleet directly)."""
    return not only and cache_for(session) is not None


def load_snapshot(session: Session, owner_uuid: str | None, only: str | None = None,
                  with_machines: bool = True, image_uuid: str = "",
                  fresh: bool = False) -> Snapshot:
    """What fleet.load_snapshot answers, from this process's cache; ``fresh``: from a read
    started by this call or after it (a create whose pick the guard refused)."""
    cache = None if only else cache_for(session)
    if cache is None:
        return fleet.load_snapshot(session, owner_uuid, only, with_machines, image_uuid)
    servers = cache.current(session, fresh=fresh)
    if with_machines:
        return Snapshot(servers, fleet.load_owner_machines(session, owner_uuid))
    return Snapshot(servers, owner_counts=fleet.load_owner_counts(session, owner_uuid))
