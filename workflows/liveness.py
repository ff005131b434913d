"""Server liveness from the heartbeat table, in set-based SQL (CNAPI's heartbeat reconciler).

The heartbeat table (Redis, one field per server) is handed to the database whole, as two
arrays, and the database finds what changes: one statement picks the servers whose status
changes and locks only those, another writes the displayed heartbeat of the servers whose
beat moved far enough (about one server in six per pass, each held only until the commit
that follows). Nothing loops over the fleet in Python.

No statement here waits for a server row: a provision holds the rows of the servers it tried
until it commits, and a row another transaction holds is skipped (SKIP LOCKED) and handled on
a later pass. The machines of a changing server are updated as before (that update may wait
for a job that holds one of them, as it always did).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis
from sqlalchemy import (
    Float,
    FromClause,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from headnode.store.models import Machine, Server

#: the database copy of a heartbeat is refreshed at most this often (it is for display)
HEARTBEAT_WRITE_INTERVAL = 30.0
#: Redis keys: since when the heartbeat table has been known, and when a pass last read it
TABLE_SINCE_KEY = "sdc:heartbeats:since"
TABLE_READ_KEY = "sdc:heartbeats:read"


def table_since(client: redis.Redis, lifetime: float, interval: float,
                now: float | None = None) -> float:
    """Since when the heartbeat table has been seen whole (see :func:`reconcile`'s
    ``table_since``): since Redis last came up empty (it keeps nothing across a restart
    without persistence), or since a pass read it after a gap longer than a heartbeat's
    ``lifetime`` beyond the pass ``interval``. Redis away that long (restarting, failing
    over) kept every node's beats out too: with persistence it comes back with every beat
    stale, and the whole fleet would turn unknown until each node beats again."""
    now = time.time() if now is None else now
    last_read = client.getset(TABLE_READ_KEY, now)  # SET ... GET needs Redis 6.2
    if last_read is not None and now - float(last_read) > lifetime + interval:
        client.set(TABLE_SINCE_KEY, now)
    client.set(TABLE_SINCE_KEY, now, nx=True)
    return float(client.get(TABLE_SINCE_KEY) or now)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pass:
    """What one pass changed: servers now unknown, servers running again (uuid order)."""

    unknown: list[str]
    running: list[str]


def reconcile(session: Session, heartbeats: dict[str, float], lifetime: float,
              now: float | None = None, table_since: float | None = None) -> Pass:
    """Mark servers with stale heartbeats unknown (and their running machines), fresh ones
    running again (and their machines as they were), and refresh displayed heartbeats.

    ``table_since`` is when the heartbeat table was first seen (it starts empty after a Redis
    restart): a server missing from a table younger than ``lifetime`` keeps its status, so
    losing Redis does not flap the whole fleet to unknown. The display write comes last: the
    rows it takes are held only until the commit that follows, with no wait in between."""
    now = time.time() if now is None else now
    young_table = table_since is not None and now - table_since <= lifetime
    beats = _beats(session, heartbeats)
    changed = _change_statuses(session, beats, lifetime, now, young_table)
    unknown = sorted(uuid for uuid, status in changed if status == "unknown")
    running = sorted(uuid for uuid, status in changed if status == "running")
    _machines_unknown(session, unknown)
    _restore_machines(session, running)
    _show_heartbeats(session, beats)
    return Pass(unknown, running)


def _beats(session: Session, heartbeats: dict[str, float]) -> FromClause:
    """The heartbeat table as a relation (uuid, beat) bound as parameters. PostgreSQL gets
    two arrays, each sent as one comma-separated string (``string_to_array``): at 10,000
    servers adapting Python lists to array parameters cost the client more than the whole
    statement costs the server. SQLite (``sdc up``), which has no arrays, gets one JSON
    object."""
    # a server uuid has no comma; a field that has one would shift the two arrays apart
    table = {uuid: beat for uuid, beat in heartbeats.items() if "," not in uuid}
    if session.get_bind().dialect.name == "postgresql":
        uuids = func.string_to_array(bindparam("beat_uuids", ",".join(table), type_=String),
                                     ",")
        times = cast(func.string_to_array(
            bindparam("beat_times", ",".join(map(repr, table.values())), type_=String), ","),
            ARRAY(Float))
        return func.unnest(uuids, times).table_valued("uuid", "beat").render_derived("beats")
    pairs = func.json_each(bindparam("beats_json", json.dumps(table), type_=String))
    relation = pairs.table_valued("key", "value").alias("beats")
    return select(relation.c.key.label("uuid"),
                  relation.c.value.label("beat")).subquery("beats")


def _change_statuses(session: Session, beats: FromClause, lifetime: float, now: float,
                     young_table: bool) -> list[tuple[str, str]]:
    """One statement: the servers whose status changes, locked unless another transaction
    holds them, set to their new status. Returns (uuid, new status) of each."""
    server = aliased(Server, name="candidate")
    beat = beats.c.beat
    fresh = and_(beat.is_not(None), literal(now) - beat <= lifetime)
    # a server missing from a table younger than a lifetime is not stale: it may not have
    # beaten since Redis came back
    stale = or_(and_(beat.is_(None), literal(not young_table)),
                and_(beat.is_not(None), literal(now) - beat > lifetime))
    comes_back = and_(fresh, server.status != "running")
    goes_away = and_(stale, server.status == "running")
    # FOR NO KEY UPDATE (key_share): the lock an UPDATE of non-key columns takes, which does
    # not conflict with the key-share locks of a provision's foreign keys
    changing = (
        select(server.uuid, server.status.label("was"), beat.label("beat"),
               case((comes_back, literal("running")), else_=literal("unknown")).label("becomes"))
        .select_from(server).outerjoin(beats, beats.c.uuid == server.uuid)
        .where(or_(comes_back, goes_away))
        .order_by(server.uuid)
        .with_for_update(of=server, key_share=True, skip_locked=True)
    )
    rows = changing.cte("changing")
    result = session.execute(
        update(Server)
        .where(Server.uuid == rows.c.uuid, Server.status == rows.c.was)
        .values(status=rows.c.becomes,
                last_heartbeat=func.coalesce(rows.c.beat, Server.last_heartbeat))
        .returning(Server.uuid, Server.status)
        .execution_options(synchronize_session=False))
    return [(uuid, status) for uuid, status in result]


def _show_heartbeats(session: Session, beats: FromClause) -> None:
    """Write the displayed heartbeat of the servers whose beat moved by at least
    :data:`HEARTBEAT_WRITE_INTERVAL` and that no other transaction holds now."""
    server = aliased(Server, name="shown")
    due = (
        select(server.uuid, beats.c.beat.label("beat"))
        .select_from(server).join(beats, beats.c.uuid == server.uuid)
        .where(or_(server.last_heartbeat.is_(None),
                   beats.c.beat - server.last_heartbeat >= HEARTBEAT_WRITE_INTERVAL))
        .order_by(server.uuid)
        .with_for_update(of=server, key_share=True, skip_locked=True)
    ).cte("due")
    session.execute(
        update(Server).where(Server.uuid == due.c.uuid).values(last_heartbeat=due.c.beat)
        .execution_options(synchronize_session=False))


def _machines_unknown(session: Session, server_uuids: list[str]) -> None:
    if server_uuids:
        session.execute(
            update(Machine)
            .where(Machine.server_uuid.in_(server_uuids), Machine.state == "running")
            .values(state="unknown", last_known_state="running")
            .execution_options(synchronize_session=False))


def _restore_machines(session: Session, server_uuids: list[str]) -> None:
    # Until the node's status report arrives, the last state we knew is the best guess.
    if server_uuids:
        session.execute(
            update(Machine)
            .where(Machine.server_uuid.in_(server_uuids), Machine.state == "unknown",
                   Machine.last_known_state.is_not(None))
            .values(state=Machine.last_known_state, last_known_state=None)
            .execution_options(synchronize_session=False))
