"""Node events and concurrent creates never form a lock cycle on ``servers`` (real PostgreSQL).

A create holds locks on server rows until it commits: FOR KEY SHARE from the foreign keys of
what it inserts, and the row lock of each guarded UPDATE it tried, even a refused one. The
reconciler and a registration lock server rows too; each test below sets up, step by step,
the interleaving that made PostgreSQL abort one side with a deadlock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from headnode.placement.allocator import Policy
from headnode.services import capacity
from headnode.store.models import Server, new_uuid
from tests.unit.workflows.conftest import make_image, make_server
from workflows import liveness, nodes

LIFETIME = 11.0


class Beside(threading.Thread):
    """``work`` in a transaction of its own, in a thread; keeps its result or its error."""

    def __init__(self, ctx: Any, work: Callable[[Session], Any]) -> None:
        super().__init__(daemon=True)
        self.ctx, self.work = ctx, work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.ctx.transaction() as session:
                self.result = self.work(session)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    def finish(self) -> Any:
        self.join(15)
        assert not self.is_alive(), "still waiting after 15 s"
        if self.error is not None:
            raise self.error
        return self.result


def waiting_for_locks(ctx: Any) -> int:
    with ctx.read() as session:
        return int(session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")) or 0)


def settle(ctx: Any, thread: Beside, waiting: int) -> None:
    """Until ``thread`` has ended or ``waiting`` sessions wait for a lock (at most 5 s)."""
    deadline = time.monotonic() + 5
    while thread.is_alive() and waiting_for_locks(ctx) < waiting:
        assert time.monotonic() < deadline, "the other session neither ended nor waited"
        time.sleep(0.02)


def reserve(session: Session, server: Server, image_uuid: str, ram_mb: int = 1024) -> bool:
    return capacity.reserve(session, server.uuid, new_uuid(), new_uuid(), ram_mb, 10240, 0,
                            Policy(), image_uuid, 500)


def test_reconciler_and_a_create_that_lost_a_server(ctx: Any) -> None:
    # Physical order (the reconciler's scan order): second first, then first.
    now = time.time()
    second = make_server(ctx, hostname="cn2", last_heartbeat=now)
    first = make_server(ctx, hostname="cn1", last_heartbeat=now, ram_mb=64)  # full
    image = make_image(ctx, name="base-64").uuid
    beats = {first.uuid: now, second.uuid: now}  # nothing for the reconciler to change

    with ctx.sessions() as create, create.begin():
        # Placement chose the first server, whose room another create had just taken: the
        # guard refuses, and the create keeps the first's key-share lock (its image claim).
        assert not reserve(create, first, image)
        reconciler = Beside(ctx, lambda s: liveness.reconcile(s, beats, LIFETIME, now=now))
        reconciler.start()
        settle(ctx, reconciler, 1)
        # ... and tries the second server.
        assert reserve(create, second, image)
    assert reconciler.finish() == liveness.Pass([], [])


def test_registration_does_not_wait_for_a_create(ctx: Any) -> None:
    server = make_server(ctx, hostname="cn1", ram_mb=64)  # full
    image = make_image(ctx, name="base-64").uuid
    sysinfo = {"UUID": server.uuid, "Hostname": "cn1-new", "SDC Backend": "sim",
               "CPU Total Cores": 16, "MiB of Memory": 65536, "Zpool Size in MiB": 1_000_000}

    with ctx.sessions() as create, create.begin():
        assert not reserve(create, server, image)  # holds the row's key-share lock
        # A registration changes no key: the create's foreign-key lock does not hold it up.
        registration = Beside(ctx, lambda s: nodes.register_server(s, sysinfo).uuid)
        registration.start()
        registration.join(5)
        assert not registration.is_alive(), "the registration waited for the create"
    assert registration.finish() == server.uuid
    with ctx.read() as session:
        assert session.get(Server, server.uuid).hostname == "cn1-new"  # type: ignore[union-attr]
