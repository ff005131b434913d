"""Database faults never reach a client as a 500, through real processes.

- Lock cycles: provisions race each other and a reconciler that runs every 0.05 s (the
  reconciler used to lock every server row, and a provision holding one server while
  waiting for another closed a cycle: PostgreSQL aborted it, the client got 500).
- A PostgreSQL restart (``pg_ctl restart -m fast``) in the middle of a burst of provisions:
  every answer is 202 or 503 with Retry-After, the ``sdc`` client gets each through, every
  job succeeds and nothing leaks.

Each test prints its figures (one line starting with ``FIGURES``; ``pytest -s`` shows it).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests

from headnode.cli.client import OpsClient
from tests.integration.conftest import AGENT_COUNT, SIM_RAM_MB
from tests.integration.test_faults import assert_nothing_leaked
from tests.support.wait import wait_until

CLOUD_ENV = {
    # the reconciler at its busiest: every 0.05 s, not every 5 s (before the fix, 3 rounds
    # of this test ended with a 500 from a deadlock)
    "SDC_RECONCILE_INTERVAL": "0.05",
    # every provision admitted, so each answer is about the database (not a 429)
    "SDC_PROVISION_BACKLOG_LIMIT": "0",
    # a message lost while the database was away is sent again after 3 s
    "SDC_RESEND_INTERVAL": "3",
    "SDC_BROKER_VISIBILITY_TIMEOUT": "5",
}
PER_SERVER = 20
#: of this size, exactly PER_SERVER fit in a sim node's placeable RAM (85 %)
PACKAGE_RAM_MB = int(SIM_RAM_MB * 0.85) // PER_SERVER
CLIENTS = 16


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    seed = cloud.seed()
    cloud.api.post("/ops/packages", {"name": "slice", "memory": PACKAGE_RAM_MB, "disk": 1024})
    return seed


def post_all(cloud: Any, bodies: list[dict[str, Any]], clients: int = CLIENTS,
             before_each: Any = None) -> list[tuple[int, dict[str, Any], str | None]]:
    """Send each body as ``POST /ops/machines`` from ``clients`` threads (a connection per
    thread; only a 429, which did nothing, is sent again after its Retry-After, as the
    ``sdc`` client does): (status, body, Retry-After) per request, in order."""
    local = threading.local()

    def post(body: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["Authorization"] = f"Bearer {cloud.api.token}"
        if before_each is not None:
            before_each()
        while True:
            resp = local.http.post(cloud.api.url("/ops/machines"), json=body, timeout=60)
            if resp.status_code != 429:
                return resp.status_code, resp.json(), resp.headers.get("Retry-After")
            time.sleep(float(resp.headers["Retry-After"]))

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, bodies))


def provision(prefix: str, i: int, package: str = "slice") -> dict[str, Any]:
    return {"owner": "alice", "package": package, "image": "base-64", "alias": f"{prefix}{i}"}


def destroy_all(cloud: Any) -> None:
    jobs = [cloud.api.delete(f"/ops/machines/{m['uuid']}")["job_uuid"]
            for m in cloud.api.get("/ops/machines") if m["state"] == "running"]
    assert all(cloud.wait_job(j, timeout=120)["execution"] == "succeeded" for j in jobs)


def test_provisions_racing_each_other_and_the_reconciler_never_fail(
        cloud: Any, seeded: dict[str, Any]) -> None:
    room = AGENT_COUNT * PER_SERVER
    rounds, statuses = 3, Counter[int]()
    started = time.monotonic()
    for r in range(rounds):
        answers = post_all(cloud, [provision(f"race{r}-", i) for i in range(room + 20)])
        statuses.update(status for status, _, _ in answers)
        created = [body for status, body, _ in answers if status == 202]
        refused = [body for status, body, _ in answers if status != 202]
        assert len(created) == room, Counter(status for status, _, _ in answers)
        assert {b["code"] for b in refused} == {"InsufficientCapacity"}, refused
        jobs = [cloud.wait_job(m["job_uuid"], timeout=180) for m in created]
        assert {j["execution"] for j in jobs} == {"succeeded"}
        assert_nothing_leaked(cloud)
        destroy_all(cloud)
    print(f"FIGURES lock cycles: {rounds} rounds of {room + 20} provisions into room for "
          f"{room}, reconciler every 0.05 s: answers {dict(statuses)}, "
          f"5xx={sum(n for s, n in statuses.items() if s >= 500)}, transactions retried "
          f"after a deadlock: {retried(cloud)}, {time.monotonic() - started:.1f} s")
    assert not [s for s in statuses if s >= 500]


def retried(cloud: Any) -> int:
    """How many times the API ran a transaction again (headnode.services.retry logs each)."""
    return sum(": retry " in line for line in cloud.procs.log("api").splitlines())


def restart_postgres(server: Any) -> float:
    """``pg_ctl restart -m fast`` of the test run's PostgreSQL; returns the seconds it took."""
    started = time.monotonic()
    result = server._run("pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_path),
                         "-m", "fast", "-w", "-t", "60", "restart")
    server._check(result, "pg_ctl restart")
    return time.monotonic() - started


def test_postgres_restart_answers_503_and_the_client_gets_through(
        cloud: Any, seeded: dict[str, Any], postgres_server: Any) -> None:
    count = 30
    sent = threading.Semaphore(0)
    restarted: dict[str, float] = {}

    def restart_after_a_few() -> None:
        for _ in range(5):
            sent.acquire()
        restarted["at"] = time.monotonic()
        restarted["took"] = restart_postgres(postgres_server)

    restarter = threading.Thread(target=restart_after_a_few)
    restarter.start()
    # 4 clients, each pausing 0.15 s before a request: requests before, during and after
    answers = post_all(cloud, [provision("pg", i, "small") for i in range(count)], clients=4,
                       before_each=lambda: (sent.release(), time.sleep(0.15)))
    restarter.join(120)
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {202, 503}, answers
    for status, body, retry_after in answers:
        if status == 503:
            assert body["code"] == "ServiceUnavailable" and retry_after, body

    # The operator's client sends each refused request again until it is taken.
    client = OpsClient(cloud.api.base_url, cloud.api.token, timeout=30, throttled_wait=120)
    created = [body for status, body, _ in answers if status == 202]
    created += [client.post("/ops/machines", provision("pg", i, "small"))
                for i, (status, _, _) in enumerate(answers) if status == 503]
    assert len(created) == count
    jobs = [cloud.wait_job(m["job_uuid"], timeout=180) for m in created]
    assert {j["execution"] for j in jobs} == {"succeeded"}, jobs
    wait_until(lambda: all(cloud.server(u)["status"] == "running"
                           for u in cloud.agents.values()),
               timeout=30, message="every server running after the restart")
    assert_nothing_leaked(cloud)
    converged = time.monotonic() - restarted["at"]
    print(f"FIGURES postgres restart: {count} provisions, restart took "
          f"{restarted['took']:.1f} s, answers {dict(statuses)}, all {count} jobs "
          f"succeeded and nothing leaked {converged:.1f} s after the restart began")
    destroy_all(cloud)


def pg_ctl(server: Any, action: str) -> None:
    """``pg_ctl stop`` or ``start`` of the test run's PostgreSQL, waiting for it."""
    result = server._run("pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_path),
                         "-m", "fast", "-w", "-t", "60", action)
    server._check(result, f"pg_ctl {action}")


def test_database_away_answers_503_naming_it_then_serves_again(
        cloud: Any, seeded: dict[str, Any], postgres_server: Any) -> None:
    # As while PostgreSQL fails over: nothing answers at its address for a while.
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {cloud.api.token}"
    pg_ctl(postgres_server, "stop")
    try:
        for method, path, body in (("get", "/ops/servers", None),
                                   ("post", "/ops/machines", provision("away", 0, "small"))):
            resp = getattr(http, method)(cloud.api.url(path), json=body, timeout=30)
            assert resp.status_code == 503, (path, resp.status_code, resp.text)
            assert resp.json()["code"] == "ServiceUnavailable", resp.text
            assert "database" in resp.json()["message"] and resp.headers["Retry-After"]
        assert "Traceback" not in cloud.procs.log("api")
    finally:
        pg_ctl(postgres_server, "start")
    # the pool's connections all died with the server: each is replaced, no request fails
    answers = [http.get(cloud.api.url("/ops/servers"), timeout=30).status_code
               for _ in range(12)]
    assert answers == [200] * 12, answers
    created = cloud.api.post("/ops/machines", provision("back", 0, "small"))
    assert cloud.wait_job(created["job_uuid"], timeout=120)["execution"] == "succeeded"
    destroy_all(cloud)
