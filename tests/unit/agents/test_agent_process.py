"""``agent run`` and ``mockcloud`` as real processes against a real Redis: they beat, register,
serve their queues and stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from agents.mockcloud import node_uuid
from schemas.agent import HEARTBEAT_KEY, NODES_QUEUE, agent_queue, agent_task
from tests.support import credentials
from tests.support.procs import ProcessGroup
from tests.support.wait import wait_until

FAST = {"SDC_HEARTBEAT_INTERVAL": "0.2", "SDC_STATUS_CHECK_INTERVAL": "0.1",
        "SDC_SIM_STATE": "false"}


def headnode_events(client: Any) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in the head node's queue of node events,
    oldest first (kombu pushes on the left and pops on the right)."""
    events = []
    for raw in reversed(client.lrange(NODES_QUEUE, 0, -1)):
        message = json.loads(raw)
        body = json.loads(_decode(message["body"], message["properties"]["body_encoding"]))
        events.append((message["headers"]["task"], body[0]))  # protocol 2: [args, kwargs, embed]
    return events


def _decode(body: str, encoding: str) -> str:
    import base64

    return base64.b64decode(body).decode() if encoding == "base64" else body


def call_agent(redis_url: str, server_uuid: str, op: str, params: dict[str, Any]) -> Any:
    client = Celery("test-client", broker=redis_url, backend=redis_url, set_as_current=False)
    try:
        result = client.send_task(agent_task(op), args=[server_uuid, params, None],
                                  queue=agent_queue(server_uuid))
        return result.get(timeout=30)
    finally:
        client.close()


def test_agent_run_beats_registers_serves_and_stops(
    procs: ProcessGroup, clean_redis: str, redis_server: Any, tmp_path: Path
) -> None:
    server_uuid = str(uuid.uuid4())
    client = redis_server.client()
    credentials.issue(tmp_path / "agent", [server_uuid])
    argv = [sys.executable, "-m", "agents.cli", "run", "--backend", "sim",
            "--server-uuid", server_uuid, "--redis-url", clean_redis,
            "--data-dir", str(tmp_path / "agent"), "--hostname", "cn-test",
            "--sim-ram-mb", "4096"]
    procs.spawn("agent", argv, env=FAST, timeout=60,
                ready=lambda: client.hget(HEARTBEAT_KEY, server_uuid))

    events = wait_until(lambda: headnode_events(client), timeout=30,
                        message="registration in the nodes queue")
    name, (sysinfo,) = events[0]
    assert name == "events.server_sysinfo"
    assert sysinfo["UUID"] == server_uuid and sysinfo["Hostname"] == "cn-test"
    assert sysinfo["MiB of Memory"] == 4096 and sysinfo["SDC Backend"] == "sim"
    wait_until(lambda: any(n == "events.server_status" for n, _ in headnode_events(client)),
               timeout=30, message="a status report")

    outcome = call_agent(clean_redis, server_uuid, "machine_load", {"uuid": str(uuid.uuid4())})
    assert outcome["error"]["code"] == "MachineNotFound"

    assert procs.stop("agent", grace=30) == 0
    assert "Traceback" not in procs.log("agent")


def test_mockcloud_serves_every_node(
    procs: ProcessGroup, clean_redis: str, redis_server: Any, tmp_path: Path
) -> None:
    client = redis_server.client()
    uuids = [node_uuid("t", i) for i in range(3)]
    credentials.issue(tmp_path / "mock", uuids)
    argv = [sys.executable, "-c", "from agents.cli import mockcloud; mockcloud()",
            "--servers", "3", "--prefix", "t", "--redis-url", clean_redis,
            "--data-dir", str(tmp_path / "mock")]
    procs.spawn("mockcloud", argv, env=FAST, timeout=60,
                ready=lambda: client.hlen(HEARTBEAT_KEY) == 3)
    assert {k.decode() for k in client.hkeys(HEARTBEAT_KEY)} == set(uuids)
    wait_until(lambda: len([n for n, _ in headnode_events(client)
                            if n == "events.server_sysinfo"]) == 3, timeout=30,
               message="three registrations")
    hostnames = {args[0]["Hostname"] for name, args in headnode_events(client)
                 if name == "events.server_sysinfo"}
    assert hostnames == {"t-000", "t-001", "t-002"}

    outcome = call_agent(clean_redis, uuids[2], "report_status", {})
    assert outcome["ok"] and outcome["result"]["status"]["server_uuid"] == uuids[2]

    assert procs.stop("mockcloud", grace=30) == 0
