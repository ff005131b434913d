"""``events.migration_progress`` through the node-event consumer: the bytes and rate of the
stream under way, from its source or target only."""

from __future__ import annotations

import time
from typing import Any

from headnode.services import migrations as svc
from tests.unit.workflows.conftest import RecordingTransport, make_server
from tests.unit.workflows.test_migration_workflows import (  # noqa: F401 - fixtures
    URL,
    _assert_back_on_source,
    answer,
    do_begin,
    start,
    sums,
    two,
)
from tests.unit.workflows.test_node_events import (  # noqa: F401 - fixtures
    as_headnode,
    client,
    consumer,
    signed,
)
from workflows.engine import Engine
from workflows.event_consumer import PROGRESS, Consumer


def progress(machine: dict[str, Any], migration_uuid: str, server: str, side: str, bytes_: int,
             at: float, snapshot: str = "migration-1", **more: Any) -> Any:
    return signed(PROGRESS, server, {
        "migration_uuid": migration_uuid, "server_uuid": server,
        "machine_uuid": machine["machine"], "side": side, "snapshot": snapshot,
        "bytes": bytes_, "total": 10_000, "at": at, **more})


def test_progress_of_the_stream_under_way(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any],  # noqa: F811 - the fixture imported above
        consumer: Consumer,  # noqa: F811 - the fixture imported above
) -> None:
    do_begin(ctx, engine, transport, two)
    m = svc.get_migration(ctx, two["machine"])
    # no stream under way yet: nothing to follow
    assert consumer.handle([progress(two, m.uuid, two["source"], "send", 10, 100.0)]) == 0

    start(ctx, engine, two, "sync")
    answer(engine, transport, two["target"], "migration_receive",
           {"receive": {"url": URL, "expires_at": 0}})
    stranger = make_server(ctx, hostname="cn3").uuid
    applied = consumer.handle([
        progress(two, m.uuid, two["source"], "send", 1000, 100.0),
        progress(two, m.uuid, two["target"], "receive", 800, 100.5),
        progress(two, m.uuid, two["source"], "send", 5000, 102.0),
        # neither end of this migration
        progress(two, m.uuid, stranger, "send", 9999, 103.0),
        # another stream's
        progress(two, m.uuid, two["source"], "send", 9000, 103.0, snapshot="migration-7"),
        # bytes never go back
        progress(two, m.uuid, two["target"], "receive", 4000, 102.5),
    ])
    assert applied == 4
    m = svc.get_migration(ctx, two["machine"])
    assert (m.sent_bytes, m.total_bytes, m.rate_bps) == (5000, 10_000, 2000)
    running = m.progress_history[-1]
    assert (running["state"], running["bytes"], running["transfer_bytes_second"]) == (
        "running", 5000, 2000)
    shaped = svc.migration_to_cloudapi(m)["progress_history"][-1]
    assert (shaped["current_progress"], shaped["total_progress"]) == (5000, 10_000)

    answer(engine, transport, two["source"], "migration_send",
           {"sync": {"snapshot": "migration-1", "bytes": 10_000, "seconds": 4.0}})
    m = svc.get_migration(ctx, two["machine"])
    # the stream's outcome replaces its running entry
    assert [e["state"] for e in m.progress_history if e.get("stream")] == []
    assert (m.sent_bytes, m.rate_bps, m.state) == (10_000, 2500, "paused")
    # a late word of that stream changes nothing
    assert consumer.handle([progress(two, m.uuid, two["source"], "send", 1, 104.0)]) == 0


def test_a_receive_that_broke_fails_the_sync_at_once(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any],  # noqa: F811 - the fixture imported above
        consumer: Consumer,  # noqa: F811 - the fixture imported above
) -> None:
    """A source agent killed mid-stream never replies; the target saw the stream cut and
    says so, and the sync fails without waiting out the stream's quiet time."""
    before = {"source": sums(ctx, two["source"]), "target": sums(ctx, two["target"])}
    do_begin(ctx, engine, transport, two)
    m = svc.get_migration(ctx, two["machine"])
    start(ctx, engine, two, "sync")
    answer(engine, transport, two["target"], "migration_receive",
           {"receive": {"url": URL, "expires_at": 0}})
    assert transport.agent  # the send went to the source, which never answers
    transport.agent.clear()
    now = time.time()
    assert engine.sweep(now) == 0  # nothing due: the stream has 300 s
    cut = progress(two, m.uuid, two["target"], "receive", 700, now, done=True,
                   error={"code": "MigrationStreamCut", "message": "the body ended early"})
    assert consumer.handle([cut]) == 1
    assert engine.sweep(time.time() + 0.01) == 1
    answer(engine, transport, two["target"], "machine_destroy",
           {"machine": {"uuid": two["machine"], "state": "destroyed"}})
    m = _assert_back_on_source(ctx, two, before, "MigrationStreamCut")
    assert "the receive end on server" in m.error["message"]
