"""One heartbeat reconciler pass at 10,000 servers: the set-based pass (workflows/liveness.py)
against the per-server Python pass it replaced, on the same database in the same run.

A private PostgreSQL with N set-up servers (2 machines each). Every server has beaten within
the last 5 s and its displayed heartbeat is 0-35 s old, so a steady pass changes no status
and rewrites the displayed heartbeat of about a seventh of the fleet; the "1 % stale" pass
also finds 1 % of the servers silent for 60 s (status and machines to unknown). Each pass runs
in a transaction that is rolled back, so both implementations start from the same rows;
passes alternate between the two. Prints median and max wall time of each, and the median CPU
time the calling process (the workflow worker, in production) spent.

    .venv/bin/python bench/reconcile.py [--servers 10000] [--passes 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.common import populate, private_stack  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.models import Account, Image, Machine, Package, Server, new_uuid  # noqa: E402
from workflows import liveness  # noqa: E402

LIFETIME = 11.0
Pass = Callable[[Session, dict[str, float], float], Any]


# -- the pass as it was before workflows/liveness.py (workflows/nodes.py at f80fbc7), the
# -- baseline of this comparison only

def per_server_pass(session: Session, heartbeats: dict[str, float], now: float) -> Any:
    gone, back, shown = [], [], {}
    servers = session.execute(
        select(Server.uuid, Server.status, Server.last_heartbeat).order_by(Server.uuid)).all()
    for uuid, status, last_heartbeat in servers:
        beat = heartbeats.get(uuid)
        fresh = beat is not None and now - beat <= LIFETIME
        if fresh and status != "running":
            if _change_status(session, uuid, status, "running", beat):
                _restore_machines(session, uuid)
                back.append(uuid)
        elif not fresh and status == "running":
            if _change_status(session, uuid, status, "unknown", beat):
                _machines_unknown(session, uuid)
                gone.append(uuid)
        elif beat is not None and (last_heartbeat is None
                                   or beat - last_heartbeat >= liveness.HEARTBEAT_WRITE_INTERVAL):
            shown[uuid] = beat
    if shown:
        free = session.scalars(
            select(Server.uuid).where(Server.uuid.in_(sorted(shown))).order_by(Server.uuid)
            .with_for_update(key_share=True, skip_locked=True)).all()
        if free:
            session.execute(update(Server), [{"uuid": uuid, "last_heartbeat": shown[uuid]}
                                             for uuid in free])
    return gone, back


def _change_status(session: Session, uuid: str, was: str, status: str,
                   beat: float | None) -> bool:
    values: dict[str, Any] = {"status": status}
    if beat is not None:
        values["last_heartbeat"] = beat
    changed = session.execute(
        update(Server).where(Server.uuid == uuid, Server.status == was).values(values)
        .execution_options(synchronize_session=False))
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


def _machines_unknown(session: Session, server_uuid: str) -> None:
    session.execute(
        update(Machine).where(Machine.server_uuid == server_uuid, Machine.state == "running")
        .values(state="unknown", last_known_state="running")
        .execution_options(synchronize_session=False))


def _restore_machines(session: Session, server_uuid: str) -> None:
    session.execute(
        update(Machine)
        .where(Machine.server_uuid == server_uuid, Machine.state == "unknown",
               Machine.last_known_state.is_not(None))
        .values(state=Machine.last_known_state, last_known_state=None)
        .execution_options(synchronize_session=False))


def set_based_pass(session: Session, heartbeats: dict[str, float], now: float) -> Any:
    return liveness.reconcile(session, heartbeats, LIFETIME, now=now)


# -- the fleet and the timing ---------------------------------------------------------------

def add_machines(ctx: ServiceContext, per_server: int) -> None:
    with ctx.transaction() as session:
        owner = session.scalar(select(Account.uuid))
        package = session.scalar(select(Package.uuid))
        image = session.scalar(select(Image.uuid))
        servers = session.scalars(select(Server.uuid)).all()
        session.execute(insert(Machine), [
            {"uuid": new_uuid(), "alias": f"m{i}-{n}", "owner_uuid": owner,
             "package_uuid": package, "image_uuid": image, "server_uuid": uuid,
             "state": "running", "ram_mb": 512, "disk_mb": 5120}
            for i, uuid in enumerate(servers) for n in range(per_server)])


def heartbeat_table(ctx: ServiceContext, now: float, stale_share: float) -> dict[str, float]:
    """Beats of the last 5 s (``stale_share`` of the servers: 60 s old); the displayed
    heartbeats set 0-35 s behind."""
    rng = random.Random(16)
    with ctx.transaction() as session:
        servers = session.scalars(select(Server.uuid).order_by(Server.uuid)).all()
        session.execute(update(Server), [
            {"uuid": uuid, "last_heartbeat": now - 5 - rng.uniform(0, 35), "status": "running"}
            for uuid in servers])
    stale = set(rng.sample(list(servers), int(len(servers) * stale_share)))
    return {uuid: now - (60 if uuid in stale else rng.uniform(0, 5)) for uuid in servers}


def timed(ctx: ServiceContext, run: Pass, beats: dict[str, float],
          now: float) -> tuple[float, float]:
    """Wall time of one pass, and the CPU time this (the worker's) process spent on it."""
    with ctx.sessions() as session:
        session.begin()
        start, cpu = time.perf_counter(), time.process_time()
        run(session, beats, now)
        session.flush()
        took = (time.perf_counter() - start, time.process_time() - cpu)
        session.rollback()  # the next pass starts from the same rows
    return took


def compare(ctx: ServiceContext, label: str, stale_share: float, passes: int) -> None:
    now = time.time()
    beats = heartbeat_table(ctx, now, stale_share)
    runs: dict[str, list[tuple[float, float]]] = {"per-server (before)": [],
                                                  "set-based (liveness)": []}
    for _ in range(passes):
        runs["per-server (before)"].append(timed(ctx, per_server_pass, beats, now))
        runs["set-based (liveness)"].append(timed(ctx, set_based_pass, beats, now))
    for name, times in runs.items():
        wall = [w for w, _ in times]
        cpu = statistics.median(c for _, c in times)
        print(f"  {label:<10} {name:<21} median {statistics.median(wall) * 1000:6.1f} ms"
              f"  max {max(wall) * 1000:6.1f} ms  worker CPU {cpu * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    with private_stack("reconcile", redis=False) as stack:
        ctx = ServiceContext(get_settings(database_url=stack.database_url,
                                          data_dir=stack.workdir))
        populate(ctx, args.servers)
        add_machines(ctx, 2)
        print(f"reconciler pass, {args.servers} servers, PostgreSQL, {args.passes} passes each")
        compare(ctx, "steady", 0.0, args.passes)
        compare(ctx, "1 % stale", 0.01, args.passes)


if __name__ == "__main__":
    main()
