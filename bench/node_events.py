"""Status reports applied per second by one process: one transaction per report (the
``events.server_status`` Celery task's body, as the workflow worker ran every report before)
against batches of the node-event consumer (workflows/event_consumer.py), in the same run
on the same database.

A private PostgreSQL and Redis with N set-up servers, M running machines each. Every report
is signed by its node and checked, as on the wire (the broker's own cost is left out of
both). Three kinds of report:

* full, nothing changed: what a node sent every minute before delta reports;
* delta, nothing changed (``full: false``, no machines): the periodic report now;
* full, one machine of each changed state (running <-> stopped).

    .venv/bin/python bench/node_events.py [--servers 2000] [--machines 4] [--batch 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench.common import populate, private_stack  # noqa: E402
from bench.reconcile import add_machines  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.services import doctor  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.models import Machine, new_uuid  # noqa: E402
from sdccommon import signing  # noqa: E402
from workflows import event_consumer, nodes  # noqa: E402
from workflows.event_consumer import Consumer, Event  # noqa: E402

KEY = b"bench-node-events"
Kind = Callable[[str, list[tuple[str, str]], int], dict[str, Any]]


def fleet(ctx: ServiceContext) -> dict[str, list[tuple[str, str]]]:
    with ctx.read() as session:
        rows = session.execute(select(Machine.server_uuid, Machine.uuid, Machine.state)
                               .order_by(Machine.server_uuid, Machine.uuid)).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for server, uuid, state in rows:
        out.setdefault(server or "", []).append((uuid, state))
    return out


def report(server: str, machines: list[tuple[str, str]], at: float, full: bool = True,
           flip: bool = False) -> dict[str, Any]:
    listed = machines if full else []
    if flip and listed:
        first, state = listed[0]
        listed = [(first, "stopped" if state == "running" else "running"), *listed[1:]]
    return {"server_uuid": server, "machines": [{"uuid": u, "state": s} for u, s in listed],
            "pool_size_mb": 4_000_000, "pool_used_mb": 1000, "ram_mb": 262144,
            "ram_free_mb": 100000, "timestamp": at, "full": full}


def signed(payload: dict[str, Any]) -> Event:
    node, task_id, args = payload["server_uuid"], new_uuid(), [payload]
    key = signing.derive(KEY, node)
    headers = {signing.SENDER: node, signing.AUDIENCE: signing.HEADNODE,
               signing.SIGNATURE: signing.digest(key, event_consumer.STATUS, task_id, node,
                                                 signing.HEADNODE, args, {})}
    return Event(event_consumer.STATUS, task_id, headers, args, {})


def one_by_one(ctx: ServiceContext, client: redis.Redis, events: list[Event]) -> None:
    """What the ``events.server_status`` task did per message (after SignedTask's check)."""
    for event in events:
        signing.check(event.task, event, event.args, event.kwargs)
        with ctx.transaction() as session:
            nodes.apply_status(session, event.args[0], [])
            nodes.due_questions(session, 30.0, server_uuid=event.args[0]["server_uuid"])
        doctor.keep_leftovers(client, event.args[0])


def batched(consumer: Consumer, events: list[Event], size: int) -> None:
    for start in range(0, len(events), size):
        consumer.handle(events[start:start + size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=2000)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    signing.serve_headnode(lambda: KEY)
    with private_stack("node-events") as stack:
        assert stack.redis is not None
        ctx = ServiceContext(get_settings(database_url=stack.database_url,
                                          data_dir=stack.workdir, redis_url=stack.redis.url))
        populate(ctx, args.servers)
        add_machines(ctx, args.machines)
        machines = fleet(ctx)
        client = redis.Redis.from_url(stack.redis.url)
        consumer = Consumer(ctx.sessions, client, 30.0, lambda _q: None, lambda _m: None)
        print(f"status reports, {args.servers} servers x {args.machines} machines, "
              f"PostgreSQL; batches of {args.batch}")
        at = time.time() + 3600  # after every row the runs write (a flip stamps updated_at)
        kinds = {"full, unchanged": {}, "delta, unchanged": {"full": False},
                 "full, 1 machine changed": {"flip": True}}
        for label, options in kinds.items():
            for name in ("one by one", "batched"):
                at += 1
                events = [signed(report(s, ms, at, **options)) for s, ms in machines.items()]
                started = time.perf_counter()
                if name == "one by one":
                    one_by_one(ctx, client, events)
                else:
                    batched(consumer, events, args.batch)
                took = time.perf_counter() - started
                print(f"  {label:<24} {name:<11} {len(events) / took:8.0f} reports/s "
                      f"({took * 1000 / len(events):.2f} ms each)")
                machines = fleet(ctx)  # a flip sticks: the next report starts from it


if __name__ == "__main__":
    main()
