"""What the benchmarks share: a private PostgreSQL (migrated) and redis-server, a percentile,
a counter of SQL statements, the fleet the in-process benches provision into, and the CPU time
of a process tree."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event

from headnode.services.context import ServiceContext
from headnode.store.migrate import upgrade
from headnode.store.models import Account, Image, Package, Server, new_uuid
from tests.support.net import free_port
from tests.support.services import PostgresServer, RedisServer, postgres_bin_dir


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Stack:
    workdir: Path
    database_url: str
    redis: RedisServer | None
    #: PostgreSQL's main process (its backends are its children)
    postgres_pid: int = 0


@contextmanager
def private_stack(name: str, redis: bool = True) -> Iterator[Stack]:
    """A migrated database on a PostgreSQL of its own and, with ``redis``, a redis-server,
    both on free loopback ports, and a work directory; all gone on exit."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sdc-bench-{name}-"))
    # its own directory: PostgreSQL runs as postgres, who cannot enter workdir
    pg_dir = Path(tempfile.mkdtemp(prefix="sdc-bench-pg-"))
    pg = PostgresServer(postgres_bin_dir(), pg_dir, free_port())
    server = None
    if redis:
        (workdir / "redis").mkdir()
        server = RedisServer(shutil.which("redis-server") or "/usr/bin/redis-server",
                             workdir / "redis", free_port())
    try:
        if server is not None:
            server.start()
        pg.start()
        url = pg.create_database("sdc_bench")
        upgrade(url)
        yield Stack(workdir, url, server, pg.postmaster_pid())
    finally:
        pg.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


def populate(ctx: ServiceContext, servers: int) -> None:
    """``servers`` set-up sim servers with room to spare, account ``bench``, package
    ``g1-512m`` and image ``base-64``."""
    with ctx.transaction() as session:
        session.add_all(Server(uuid=new_uuid(), hostname=f"cn{i}", backend="sim", setup=True,
                               status="running", ram_mb=262144, cpus=48, disk_mb=4_000_000,
                               last_heartbeat=time.time()) for i in range(servers))
        session.add_all([Account(login="bench", email="bench@example.com"),
                         Package(name="g1-512m", memory=512, disk=5120),
                         Image(name="base-64", version="24.4.1", os="smartos", size_mb=300)])


class StatementCounter:
    """Counts the SQL statements an engine sends; ``last`` keeps their text."""

    def __init__(self, engine: Any) -> None:
        self.count = 0
        self.last: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.count += 1
        self.last.append(statement)


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each named process with all its descendants,
    from one walk of /proc. A child that exited and was reaped still counts, in its parent's
    cutime/cstime: PostgreSQL backends and Celery or gunicorn children come and go."""
    children = _children_by_parent()
    ticks = os.sysconf("SC_CLK_TCK")

    def total(pid: int) -> float:
        try:
            # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name
            own = sum(int(v) for v in _stat_fields(pid)[11:15]) / ticks
        except (OSError, ValueError):
            return 0.0
        return own + sum(total(child) for child in children.get(pid, []))

    return {name: total(pid) for name, pid in pids.items()}
