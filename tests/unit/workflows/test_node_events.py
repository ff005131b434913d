"""Node events a batch at a time (workflows/event_consumer.py, workflows/node_events.py) on
the real PostgreSQL and Redis: signed messages checked, reports of many servers applied in
one transaction, delta reports, reports that come before their registration, a bad message
among good ones."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from headnode.store.models import Server, new_uuid
from schemas.agent import NODES_QUEUE
from sdccommon import signing
from tests.unit.headnode.services.conftest import make_machine, make_server, server_row
from tests.unit.workflows.conftest import get_machine
from tests.unit.workflows.test_nodes import REPORT_TIME, status, sysinfo
from workflows import event_consumer
from workflows.event_consumer import Consumer, Event

MESSAGE_KEY = b"unit-node-events-key"


@pytest.fixture(autouse=True)
def as_headnode() -> Iterator[None]:
    """This process checks messages as the head node does, with a key the test knows."""
    saved = copy.copy(signing._config)
    signing._config.keyring = None
    signing.serve_headnode(lambda: MESSAGE_KEY)
    signing._config.revoked = lambda _node: False
    yield
    signing._config.keyring, signing._config.headnode = saved.keyring, saved.headnode
    signing._config.revoked = saved.revoked


@pytest.fixture
def client(settings: Any) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture
def consumer(ctx: Any, client: redis.Redis) -> Consumer:
    asked: list[Any] = []
    consumer = Consumer(ctx.sessions, client, 30.0, asked.extend, lambda _m: None)
    consumer.asked = asked  # type: ignore[attr-defined]
    return consumer


def signed(task: str, node: str, payload: dict[str, Any], key: bytes | None = None,
           acks: list[str] | None = None) -> Event:
    """An event as ``node``'s agent sends it (``key``: another key than the node's own)."""
    task_id, args = new_uuid(), [payload]
    key = key or signing.derive(MESSAGE_KEY, node)
    headers = {signing.SENDER: node, signing.AUDIENCE: signing.HEADNODE,
               signing.SIGNATURE: signing.digest(key, task, task_id, node, signing.HEADNODE,
                                                 args, {})}
    return Event(task, task_id, headers, args, {},
                 ack=(lambda: acks.append(task_id)) if acks is not None else (lambda: None))


def report(server: str, machines: list[tuple[str, str]], **overrides: Any) -> Event:
    return signed(event_consumer.STATUS, server, status(server, machines, **overrides))


def test_a_batch_of_reports_from_many_servers(ctx: Any, fleet: dict[str, Any],
                                              consumer: Consumer) -> None:
    servers = [fleet["server"]] + [make_server(ctx, hostname=f"cn{n}") for n in (2, 3)]
    machines = {s.uuid: make_machine(ctx, fleet, server_uuid=s.uuid, state="running",
                                     alias=s.hostname)
                for s in servers}
    acks: list[str] = []
    events = []
    for s in servers:  # two reports each, the newer one first in the batch
        uuid = machines[s.uuid].uuid
        events.append(report(s.uuid, [(uuid, "running")], timestamp=REPORT_TIME + 2,
                             pool_used_mb=222))
        events.append(report(s.uuid, [(uuid, "stopped")], timestamp=REPORT_TIME + 1,
                             pool_used_mb=111))
    for event in events:
        event.ack = (lambda i: lambda: acks.append(i))(event.id)
    assert consumer.handle(events) == 6
    assert sorted(acks) == sorted(e.id for e in events)
    for s in servers:
        # applied oldest first: stopped, then running again
        assert get_machine(ctx, machines[s.uuid].uuid).state == "running"
        row = server_row(ctx, s.uuid)
        assert row.pool_used_mb == 222
        assert row.last_status_at is not None
        assert row.last_status_at.timestamp() == REPORT_TIME + 2
        assert row.reported_machines == {machines[s.uuid].uuid: "running"}


def test_a_stale_report_in_a_later_batch_changes_nothing(ctx: Any, fleet: dict[str, Any],
                                                          consumer: Consumer) -> None:
    server = fleet["server"].uuid
    machine = make_machine(ctx, fleet, state="running")
    consumer.handle([report(server, [(machine.uuid, "running")], timestamp=REPORT_TIME + 5)])
    consumer.handle([report(server, [(machine.uuid, "stopped")], timestamp=REPORT_TIME)])
    assert get_machine(ctx, machine.uuid).state == "running"


def test_a_delta_leaves_unlisted_machines_alone(ctx: Any, fleet: dict[str, Any],
                                                consumer: Consumer) -> None:
    server = fleet["server"].uuid
    a = make_machine(ctx, fleet, alias="a", state="running")
    b = make_machine(ctx, fleet, alias="b", state="running")
    consumer.handle([report(server, [(a.uuid, "running"), (b.uuid, "running")],
                            timestamp=REPORT_TIME)])
    consumer.handle([report(server, [(a.uuid, "stopped")], full=False,
                            timestamp=REPORT_TIME + 1)])
    assert get_machine(ctx, a.uuid).state == "stopped"
    unlisted = get_machine(ctx, b.uuid)
    assert unlisted.state == "running" and unlisted.missing_since is None
    assert server_row(ctx, server).reported_machines == {a.uuid: "stopped",
                                                         b.uuid: "running"}
    assert consumer.asked == []  # type: ignore[attr-defined]


def test_a_full_report_suspects_what_it_leaves_out(ctx: Any, fleet: dict[str, Any],
                                                   consumer: Consumer) -> None:
    server = fleet["server"].uuid
    a = make_machine(ctx, fleet, alias="a", state="running")
    b = make_machine(ctx, fleet, alias="b", state="running")
    # an old agent's report (no "full") counts as full
    consumer.handle([report(server, [(a.uuid, "running")])])
    left_out = get_machine(ctx, b.uuid)
    assert left_out.state == "running" and left_out.missing_since is not None
    assert server_row(ctx, server).reported_machines == {a.uuid: "running"}
    asked = consumer.asked  # type: ignore[attr-defined]
    assert [(q.server_uuid, q.machine_uuid) for q in asked] == [(server, b.uuid)]


def test_a_report_before_the_registration_is_applied_at_it(ctx: Any, consumer: Consumer,
                                                          client: redis.Redis) -> None:
    server = new_uuid()
    consumer.handle([report(server, [], pool_used_mb=4321)])
    with ctx.read() as session:
        assert session.get(Server, server) is None
    assert client.llen(event_consumer.EARLY_KEY + server) == 1  # kept, as signed
    consumer.handle([signed(event_consumer.SYSINFO, server, sysinfo(server))])
    row = server_row(ctx, server)
    assert row.pool_used_mb == 4321
    assert row.last_status_at is not None and row.last_status_at.timestamp() == REPORT_TIME
    assert client.exists(event_consumer.EARLY_KEY + server) == 0


def test_a_forged_early_report_is_refused_at_the_registration(ctx: Any, consumer: Consumer,
                                                              client: redis.Redis) -> None:
    """Anyone who reaches Redis could write the kept reports: they are checked again."""
    server = new_uuid()
    forged = report(server, [], pool_used_mb=999)
    forged.args[0]["pool_used_mb"] = 1  # changed after signing
    event_consumer.keep_early(client, [forged])
    consumer.handle([signed(event_consumer.SYSINFO, server, sysinfo(server))])
    assert server_row(ctx, server).pool_used_mb == 0


def test_a_bad_message_does_not_sink_the_batch(ctx: Any, fleet: dict[str, Any],
                                               consumer: Consumer) -> None:
    good = [fleet["server"]] + [make_server(ctx, hostname="cn2")]
    bad = make_server(ctx, hostname="cn3")
    acks: list[str] = []
    events = [report(s.uuid, [], pool_used_mb=77) for s in good]
    # valid on the wire, refused by the database (integer out of range)
    events.insert(1, report(bad.uuid, [], pool_used_mb=2**40))
    for event in events:
        event.ack = (lambda i: lambda: acks.append(i))(event.id)
    assert consumer.handle(events) == 2
    assert [server_row(ctx, s.uuid).pool_used_mb for s in good] == [77, 77]
    assert server_row(ctx, bad.uuid).last_status_at is None
    assert len(acks) == 3  # the bad one is dropped (logged), not left to come back


def test_forged_and_unsigned_events_are_refused(ctx: Any, fleet: dict[str, Any],
                                                consumer: Consumer) -> None:
    server, other = fleet["server"].uuid, new_uuid()
    machine = make_machine(ctx, fleet, state="running")
    acks: list[str] = []
    unsigned = report(server, [(machine.uuid, "stopped")])
    unsigned.headers = {}
    wrong_key = signed(event_consumer.STATUS, server, status(server, [(machine.uuid,
                                                                       "stopped")]),
                       key=signing.derive(MESSAGE_KEY, other))
    # a node speaking for another: signed with its own key, naming the other server
    for_another = signed(event_consumer.STATUS, other, status(server, [(machine.uuid,
                                                                        "stopped")]))
    reply = signed("events.task_reply", server, {"server_uuid": server})
    events = [unsigned, wrong_key, for_another, reply]
    for event in events:
        event.ack = (lambda i: lambda: acks.append(i))(event.id)
    assert consumer.handle(events) == 0
    assert get_machine(ctx, machine.uuid).state == "running"
    assert server_row(ctx, server).last_status_at is None
    assert len(acks) == 4  # dropped, not delivered again


def test_a_revoked_node_is_refused(ctx: Any, fleet: dict[str, Any],
                                   consumer: Consumer) -> None:
    server = fleet["server"].uuid
    signing._config.revoked = lambda node: node == server
    assert consumer.handle([report(server, [], pool_used_mb=5)]) == 0
    assert server_row(ctx, server).last_status_at is None


def test_the_consumer_takes_batches_from_the_queue(ctx: Any, settings: Any,
                                                   consumer: Consumer,
                                                   client: redis.Redis) -> None:
    """Agents' messages as Celery sends them, on the ``nodes`` queue, applied in batches."""
    from workflows.celery_app import make_app

    app = make_app(settings)
    signing.serve_headnode(lambda: MESSAGE_KEY)  # make_app installed the settings' key
    servers = [make_server(ctx, hostname=f"cn{n}").uuid for n in range(30)]
    for uuid in servers:
        # the head node's keyring derives every node's key: it can sign as the node here
        app.send_task(event_consumer.STATUS, args=[status(uuid, [], pool_used_mb=42)],
                      queue=NODES_QUEUE, headers={signing.SENDER: uuid})
    stop = threading.Event()
    with app.connection_for_read() as connection:
        thread = threading.Thread(target=consumer.run, args=(connection, 8, 0.05, stop))
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with ctx.read() as session:
                    done = session.query(Server).filter(Server.pool_used_mb == 42).count()
                if done == len(servers):
                    break
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)
    assert done == len(servers)
    # taken and acknowledged: none waits, none is held for redelivery
    assert (client.llen(NODES_QUEUE), client.hlen("unacked")) == (0, 0)


def test_a_delta_cannot_change_a_machine_of_another_server(ctx: Any, fleet: dict[str, Any],
                                                           consumer: Consumer) -> None:
    other = make_server(ctx, hostname="cn2")
    theirs = make_machine(ctx, fleet, server_uuid=other.uuid, state="running")
    consumer.handle([report(fleet["server"].uuid, [(theirs.uuid, "stopped")], full=False),
                     report(other.uuid, [], full=False)])
    assert get_machine(ctx, theirs.uuid).state == "running"
    assert get_machine(ctx, theirs.uuid).missing_since is None
