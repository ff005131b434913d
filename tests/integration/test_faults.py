"""Faults lose no request and leak nothing: a killed workflow worker, a Redis restart."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.support.wait import wait_until

# Short recovery times so the test does not wait out production-sized timeouts: a message
# held by a dead worker comes back after 5 s, a lost job or agent message is re-sent after 3 s.
CLOUD_ENV = {"SDC_BROKER_VISIBILITY_TIMEOUT": "5", "SDC_RESEND_INTERVAL": "3"}


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    return cloud.seed()


def provision_burst(cloud: Any, prefix: str, count: int = 10) -> list[dict[str, Any]]:
    return [cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                             "image": "base-64", "alias": f"{prefix}-{i}"})
            for i in range(count)]


def assert_nothing_leaked(cloud: Any) -> None:
    machines = cloud.api.get("/ops/machines")
    for server_uuid in cloud.agents.values():
        server = cloud.server(server_uuid)
        assert server["ram_inflight_mb"] == 0, server
        on_it = [m for m in machines if m["server_uuid"] == server_uuid
                 and m["state"] in ("running", "stopped")]
        assert server["ram_committed_mb"] == sum(m["ram_mb"] for m in on_it), server
        assert server["machine_count"] == len(on_it), server
    # and the doctor's checker agrees: no orphan, missing record, drift, leak or stuck job
    wait_until(lambda: cloud.api.get("/ops/doctor")["findings"] == [], timeout=30,
               message=lambda: f"sdc doctor to find nothing: {cloud.api.get('/ops/doctor')}")


def test_killed_worker_loses_no_job(cloud: Any, seeded: dict[str, Any]) -> None:
    machines = provision_burst(cloud, "w")
    cloud.procs.kill("worker", signal.SIGKILL)  # with whatever it had taken from the queue
    time.sleep(1)
    cloud.restart("worker")
    jobs = [cloud.wait_job(m["job_uuid"], timeout=120) for m in machines]
    assert [j["execution"] for j in jobs] == ["succeeded"] * len(jobs), jobs
    assert_nothing_leaked(cloud)


def test_redis_restart_loses_no_job(cloud: Any, seeded: dict[str, Any],
                                    redis_server: Any) -> None:
    machines = provision_burst(cloud, "r")
    redis_server.restart()  # every queued message and the heartbeat table are gone
    jobs = [cloud.wait_job(m["job_uuid"], timeout=120) for m in machines]
    assert [j["execution"] for j in jobs] == ["succeeded"] * len(jobs), jobs
    assert_nothing_leaked(cloud)
    # the fleet came through it: heartbeats resumed, nobody is unknown
    wait_until(lambda: all(cloud.server(u)["status"] == "running"
                           for u in cloud.agents.values()),
               timeout=30, message="every server running after the restart")
    after = provision_burst(cloud, "after", 3)
    assert all(cloud.wait_job(m["job_uuid"])["execution"] == "succeeded" for m in after)
