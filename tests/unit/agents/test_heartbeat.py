"""Heartbeats, registration and status reports, against a real Redis."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.backends.sim import SimBackend
from agents.heartbeat import Heartbeater, StatusReporter, redis_client, status_fingerprint
from schemas.agent import HEARTBEAT_KEY
from tests.support.net import free_port


def nodes(count: int) -> list[SimBackend]:
    return [SimBackend(f"00000000-0000-4000-8000-{i:012d}", f"n{i}", pool_size_mb=10_000)
            for i in range(count)]


class Recorder:
    def __init__(self) -> None:
        self.sysinfo: list[Any] = []
        self.status: list[Any] = []

    def reporter(self, backends: list[SimBackend], **kw: Any) -> StatusReporter:
        return StatusReporter(backends, send_sysinfo=self.sysinfo.append,
                              send_status=self.status.append, **kw)


def test_one_write_beats_for_every_node(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis, decode_responses=True)
    backends = nodes(3)
    before = time.time()
    assert Heartbeater(client, [b.server_uuid for b in backends]).guarded_tick()
    beats = client.hgetall(HEARTBEAT_KEY)
    assert set(beats) == {b.server_uuid for b in backends}
    assert all(float(v) >= before for v in beats.values())


def test_heartbeat_thread_keeps_beating(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    heartbeater = Heartbeater(client, ["n1"], interval=0.05)
    heartbeater.start()
    try:
        first = float(wait_for(lambda: client.hget(HEARTBEAT_KEY, "n1")))
        wait_for(lambda: float(client.hget(HEARTBEAT_KEY, "n1") or 0) > first)
    finally:
        heartbeater.stop()


def test_outage_logs_once_and_reconnect_reregisters(
    clean_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    reconnected: list[bool] = []
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    heartbeater = Heartbeater(dead, ["n1"], on_reconnect=lambda: reconnected.append(True))
    with caplog.at_level(logging.WARNING, logger="agents.heartbeat"):
        assert not heartbeater.guarded_tick()
        assert not heartbeater.guarded_tick()
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    heartbeater.client = redis.Redis.from_url(clean_redis)
    assert heartbeater.guarded_tick()
    assert heartbeater.guarded_tick()
    assert reconnected == [True]


def test_registration_then_status_only_on_change(tmp_path: Path, image_spec: dict) -> None:
    backends = nodes(2)
    recorder = Recorder()
    reporter = recorder.reporter(backends, status_interval=3600)
    reporter.tick()
    reporter.tick()
    assert [s["uuid"] for s in recorder.sysinfo] == [b.server_uuid for b in backends]
    assert [s["server_uuid"] for s in recorder.status] == [b.server_uuid for b in backends]
    backends[1].image_ensure_present(image_spec)
    reporter.tick()
    assert len(recorder.sysinfo) == 2
    assert recorder.status[-1]["server_uuid"] == backends[1].server_uuid
    assert len(recorder.status) == 3


def test_status_is_repeated_after_status_interval() -> None:
    recorder = Recorder()
    reporter = recorder.reporter(nodes(1), status_interval=0.05, spread=0.0)
    reporter.tick()
    reporter.tick()
    assert len(recorder.status) == 1
    time.sleep(0.06)
    reporter.tick()
    assert len(recorder.status) == 2


def test_nodes_started_together_spread_their_periodic_reports() -> None:
    """The second reports of 50 nodes are due from 0.05 to 0.5 s after the first ones: at
    0.3 s some have gone and some have not."""
    recorder = Recorder()
    reporter = recorder.reporter(nodes(50), status_interval=0.5, spread=0.9)
    started = time.monotonic()
    reporter.tick()
    assert len(recorder.status) == 50
    time.sleep(max(0.0, started + 0.3 - time.monotonic()))
    reporter.tick()
    assert 0 < len(recorder.status) - 50 < 50, len(recorder.status)


def test_change_told_by_a_reply_is_not_reported_again() -> None:
    recorder = Recorder()
    (node,) = nodes(1)
    reporter = recorder.reporter([node])
    reporter.tick()
    node.image_ensure_present({"uuid": "11111111-1111-4111-8111-111111111111", "name": "i"})
    reporter.acknowledge(node.server_uuid)  # what agents.tasks does after sending a reply
    reporter.tick()
    assert len(recorder.status) == 1
    node.image_ensure_present({"uuid": "22222222-2222-4222-8222-222222222222", "name": "j"})
    reporter.tick()  # a change nobody was told about is reported
    assert len(recorder.status) == 2


def test_register_again_resends_everything() -> None:
    recorder = Recorder()
    reporter = recorder.reporter(nodes(2))
    reporter.tick()
    reporter.register_again()
    reporter.tick()
    assert len(recorder.sysinfo) == 4 and len(recorder.status) == 4


def test_failed_send_is_retried_next_tick() -> None:
    recorder = Recorder()
    failures = [redis.exceptions.ConnectionError("down")]

    def flaky(sysinfo: Any) -> None:
        if failures:
            raise failures.pop()
        recorder.sysinfo.append(sysinfo)

    reporter = StatusReporter(nodes(1), send_sysinfo=flaky, send_status=recorder.status.append)
    assert not reporter.guarded_tick()
    assert reporter.guarded_tick()
    assert len(recorder.sysinfo) == 1 and len(recorder.status) == 1


def test_fingerprint_ignores_the_timestamp() -> None:
    (node,) = nodes(1)
    first = node.status()
    time.sleep(0.01)
    assert status_fingerprint(node.status()) == status_fingerprint(first)


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_node_that_cannot_report_does_not_silence_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    quiet, talking = nodes(2)
    quiet.configure_faults({"status": "reports lost"})
    reporter = recorder.reporter([quiet, talking])
    with caplog.at_level(logging.WARNING, logger="agents.heartbeat"):
        assert reporter.guarded_tick()
    assert [s["server_uuid"] for s in recorder.status] == [talking.server_uuid]
    assert f"no report for server {quiet.server_uuid}" in caplog.text
    reporter.acknowledge(quiet.server_uuid)  # after a reply: must not raise into the task
    quiet.configure_faults({})
    reporter.tick()
    assert [s["server_uuid"] for s in recorder.status] == [talking.server_uuid,
                                                           quiet.server_uuid]


class FakeNode:
    """A node whose machines the test sets (only what the reporter reads of a backend)."""

    def __init__(self, uuid: str = "00000000-0000-4000-8000-00000000abcd") -> None:
        self.server_uuid = uuid
        self.machines: dict[str, str] = {}

    def sysinfo(self) -> dict[str, Any]:
        return {"uuid": self.server_uuid}

    def status(self) -> dict[str, Any]:
        return {"server_uuid": self.server_uuid, "pool_used_mb": 1, "timestamp": time.time(),
                "machines": [{"uuid": u, "state": s} for u, s in sorted(self.machines.items())]}


def listed(report: dict[str, Any]) -> dict[str, str]:
    return {m["uuid"]: m["state"] for m in report["machines"]}


def test_a_change_is_reported_as_a_delta_of_what_changed() -> None:
    recorder, node = Recorder(), FakeNode()
    node.machines = {"a": "running", "b": "running"}
    reporter = recorder.reporter([node], status_interval=3600)  # type: ignore[list-item]
    reporter.tick()
    assert recorder.status[-1]["full"] is True and listed(recorder.status[-1]) == node.machines
    node.machines["a"] = "stopped"
    node.machines["c"] = "running"
    reporter.tick()
    delta = recorder.status[-1]
    assert delta["full"] is False and listed(delta) == {"a": "stopped", "c": "running"}
    reporter.tick()
    assert len(recorder.status) == 2  # nothing changed: nothing sent


def test_reports_are_full_for_a_while_after_a_machine_went() -> None:
    recorder, node = Recorder(), FakeNode()
    node.machines = {"a": "running", "b": "running"}
    reporter = recorder.reporter([node], status_interval=0.01,  # type: ignore[list-item]
                                 full_report_interval=0.2)
    reporter.tick()
    del node.machines["b"]
    reporter.tick()
    assert recorder.status[-1]["full"] is True and listed(recorder.status[-1]) == {"a": "running"}
    time.sleep(0.02)
    reporter.tick()  # its silence must be heard again: the node is asked in between
    assert recorder.status[-1]["full"] is True
    time.sleep(0.2)
    reporter.tick()  # a full report is due anyway; "b" went long enough ago
    time.sleep(0.02)
    reporter.tick()
    assert recorder.status[-1]["full"] is False and recorder.status[-1]["machines"] == []


def test_a_full_report_every_full_report_interval_and_after_a_reconnect() -> None:
    recorder, node = Recorder(), FakeNode()
    node.machines = {"a": "running"}
    reporter = recorder.reporter([node], status_interval=0.01,  # type: ignore[list-item]
                                 full_report_interval=0.1)
    reporter.tick()
    time.sleep(0.02)
    reporter.tick()
    assert [r["full"] for r in recorder.status] == [True, False]
    time.sleep(0.1)
    reporter.tick()
    assert recorder.status[-1]["full"] is True and listed(recorder.status[-1]) == {"a": "running"}
    reporter.register_again()
    reporter.tick()
    assert recorder.status[-1]["full"] is True and len(recorder.sysinfo) == 2


def test_a_machine_told_only_by_a_reply_and_then_gone_makes_a_full_report() -> None:
    recorder, node = Recorder(), FakeNode()
    reporter = recorder.reporter([node], status_interval=3600)  # type: ignore[list-item]
    reporter.tick()
    node.machines = {"new": "running"}
    reporter.acknowledge(node.server_uuid)  # the provision's reply told the head node
    reporter.tick()
    assert len(recorder.status) == 1
    del node.machines["new"]
    reporter.tick()
    assert recorder.status[-1]["full"] is True and recorder.status[-1]["machines"] == []
