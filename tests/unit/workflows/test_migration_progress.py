"""``events.migration_progress`` through the node-event consumer: the bytes and rate of the
stream under way, from its source or target only."""

from __future__ import annotations

from typing import Any

from headnode.services import migrations as svc
from tests.unit.workflows.conftest import RecordingTransport, make_server
from tests.unit.workflows.test_migration_workflows import (  # noqa: F401 - fixtures
    URL,
    answer,
    do_begin,
    start,
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
             at: float, snapshot: str = "migration-1") -> Any:
    return signed(PROGRESS, server, {
        "migration_uuid": migration_uuid, "server_uuid": server,
        "machine_uuid": machine["machine"], "side": side, "snapshot": snapshot,
        "bytes": bytes_, "total": 10_000, "at": at})


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
