"""Forged messages on Redis: whoever reaches Redis can push a message onto any queue, but
neither the head node's worker nor an agent runs one that does not prove who sent it
(sdccommon/signing.py). Each forgery is refused and logged, and nothing changes."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from schemas.agent import HEADNODE_QUEUE, agent_queue, agent_task
from sdccommon import signing
from tests.support.credentials import TEST_MESSAGE_KEY
from tests.support.net import free_port
from tests.support.wait import wait_until

REFUSED = "refused message"


@pytest.fixture(scope="module")
def machines(cloud: Any) -> list[dict[str, Any]]:
    cloud.seed()
    target = cloud.agents["agent0"]
    made = [cloud.api.post("/ops/machines", {
        "owner": "alice", "package": "small", "image": "base-64", "alias": f"held-{i}",
        "server_uuid": target}) for i in range(3)]
    for m in made:
        assert cloud.wait_job(m["job_uuid"])["execution"] == "succeeded"
    return made


@pytest.fixture
def forger(cloud: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """A Celery client that signs nothing on its own, as an intruder's would."""
    monkeypatch.setenv(signing.UNSIGNED_ENV, "1")
    client = Celery("forger", broker=cloud.env["SDC_REDIS_URL"], set_as_current=False)
    yield client
    client.close()


def node_key(server_uuid: str) -> bytes:
    return signing.derive(TEST_MESSAGE_KEY.encode(), server_uuid)


def signed(key: bytes, task: str, sender: str, audience: str, args: list[Any]) -> dict[str, Any]:
    """send_task options that sign ``args`` with ``key`` as ``sender`` for ``audience``."""
    task_id = str(uuid.uuid4())
    return {"task_id": task_id, "headers": {
        signing.SENDER: sender, signing.AUDIENCE: audience,
        signing.SIGNATURE: signing.digest(key, task, task_id, sender, audience, args, {})}}


def refusals(cloud: Any, process: str) -> int:
    return cloud.procs.log(process).count(REFUSED)


def send_all(cloud: Any, process: str, forgeries: list[tuple[str, str, dict[str, Any]]],
             forger: Celery, task: str, args: list[Any]) -> None:
    """Send each forgery; each must be refused in ``process``'s log, naming why."""
    for name, queue, options in forgeries:
        before = refusals(cloud, process)
        forger.send_task(task, args=args, queue=queue, **options)
        wait_until(lambda before=before: refusals(cloud, process) > before, timeout=20,
                   message=lambda name=name: f"the {name} forgery to be refused; log:\n"
                                             f"{cloud.procs.tail(process)}")


def test_forged_status_reports_are_refused_and_change_nothing(
        cloud: Any, machines: list[dict[str, Any]], forger: Celery) -> None:
    target, other = cloud.agents["agent0"], cloud.agents["agent1"]
    task = "events.server_status"
    # the report that set every machine of a node to destroyed when it was taken on its word
    args = [{"server_uuid": target, "machines": [], "images": [], "pool_size_mb": 1,
             "pool_used_mb": 0, "ram_mb": 1, "ram_free_mb": 1, "timestamp": time.time()}]
    send_all(cloud, "worker", [
        ("unsigned", HEADNODE_QUEUE, {}),
        ("another node's, about this one", HEADNODE_QUEUE,
         signed(node_key(other), task, other, signing.HEADNODE, args)),
        ("claiming the node with another's key", HEADNODE_QUEUE,
         signed(node_key(other), task, target, signing.HEADNODE, args)),
        ("claiming the head node with a node's key", HEADNODE_QUEUE,
         signed(node_key(target), task, signing.HEADNODE, signing.HEADNODE, args)),
    ], forger, task, args)
    log = cloud.procs.log("worker")
    assert f"node {other} may speak only for itself, not for {target}" in log
    assert "the signature does not hold for sender" in log
    time.sleep(1)  # what a taken report would have started (questions to the node) shows
    for m in machines:
        machine = cloud.api.get(f"/ops/machines/{m['uuid']}")
        assert machine["state"] == "running"
    findings = [f for f in cloud.api.get("/ops/doctor")["findings"]
                if f.get("machine_uuid") in {m["uuid"] for m in machines}]
    assert findings == []


class Recorder(http.server.BaseHTTPRequestHandler):
    """The intruder's upload target: records any request."""

    seen: list[str] = []

    def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
        self.seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def intruder() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stolen"
    server.shutdown()
    server.server_close()


def test_forged_agent_tasks_are_refused_and_touch_nothing(
        cloud: Any, machines: list[dict[str, Any]], forger: Celery, intruder: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    target, other = cloud.agents["agent0"], cloud.agents["agent1"]
    victim = machines[0]["uuid"]
    queue = agent_queue(target)
    image = {"uuid": str(uuid.uuid4()), "name": "stolen", "version": "1"}
    upload = {"url": intruder, "headers": {}}
    for op, params in (("machine_destroy", {"uuid": victim}),
                       ("image_create_from_machine",
                        {"uuid": victim, "image": image, "upload": upload})):
        task = agent_task(op)
        args = [target, params, None]
        for_other = [other, params, None]
        send_all(cloud, "agent0", [
            ("unsigned", queue, {}),
            ("sent by the node itself (it can sign only to the head node)", queue,
             signed(node_key(target), task, target, signing.HEADNODE, args)),
            ("the head node's, with another node's key", queue,
             signed(node_key(other), task, signing.HEADNODE, target, args)),
            ("the head node's, for another node", queue,
             signed(node_key(other), task, signing.HEADNODE, other, for_other)),
        ], forger, task, args)
    log = cloud.procs.log("agent0")
    assert "the message is for headnode, not served here" in log
    assert "the signature does not hold for sender headnode" in log
    assert f"the message is for {other}, not served here" in log
    assert Recorder.seen == []
    # the head node's own question, signed: the node still has the machine, running
    monkeypatch.delenv(signing.UNSIGNED_ENV)
    client = Celery("check", broker=cloud.env["SDC_REDIS_URL"],
                    backend=cloud.env["SDC_REDIS_URL"], set_as_current=False)
    try:
        outcome = client.send_task(agent_task("machine_load"), args=[target, {"uuid": victim},
                                                                     None],
                                   queue=queue).get(timeout=20)
    finally:
        client.close()
    assert outcome["ok"], outcome
    assert outcome["result"]["machine"]["state"] == "running"


def test_a_broadcast_shutdown_stops_no_worker(cloud: Any, machines: list[dict[str, Any]],
                                              forger: Celery) -> None:
    """Celery's remote control takes unsigned commands from Redis: it is turned off."""
    forger.control.broadcast("shutdown")
    forger.control.broadcast("pool_restart")
    time.sleep(2)
    for name in ("worker", "agent0"):
        assert cloud.procs.procs[name].alive(), cloud.procs.tail(name)
        assert "Got shutdown from remote" not in cloud.procs.log(name)
    # and both still work: a machine is made on agent0 by the worker
    made = cloud.api.post("/ops/machines", {
        "owner": "alice", "package": "small", "image": "base-64", "alias": "after-broadcast",
        "server_uuid": cloud.agents["agent0"]})
    assert cloud.wait_job(made["job_uuid"])["execution"] == "succeeded"
