"""Placement under load through real processes: 200 concurrent provisions into a fleet with
room for exactly 150 machines of the package. 150 run, 50 are refused at once with
InsufficientCapacity, no server holds more than it has, and a refused request leaves no
machine, job or reservation behind."""

from __future__ import annotations

import concurrent.futures
import math
import threading
from typing import Any

from sqlalchemy import create_engine, text

from headnode.cli.client import ApiError, OpsClient
from tests.integration.conftest import AGENT_COUNT, SIM_RAM_MB
from tests.support.wait import wait_until

PROVISIONS = 200
PER_SERVER = 50
RESERVATION_RATIO = 0.15
#: the largest size of which exactly PER_SERVER fit in a sim node's placeable RAM
PACKAGE_RAM_MB = math.floor(SIM_RAM_MB * (1 - RESERVATION_RATIO) / PER_SERVER)
CLIENTS = 32


def test_concurrent_provisions_fill_the_fleet_exactly(cloud: Any) -> None:
    assert math.floor(SIM_RAM_MB * (1 - RESERVATION_RATIO) / PACKAGE_RAM_MB) == PER_SERVER
    cloud.seed()
    cloud.api.post("/ops/packages", {"name": "slice", "memory": PACKAGE_RAM_MB, "disk": 1024})
    fits = {p["name"]: p["fits"] for p in cloud.api.get("/ops/capacity")["packages"]}
    assert fits["slice"] == AGENT_COUNT * PER_SERVER

    local = threading.local()

    def provision(i: int) -> tuple[str, Any]:
        # a client (and a connection) per thread, as separate callers would have
        if not hasattr(local, "api"):
            local.api = OpsClient(cloud.api.base_url, cloud.api.token, timeout=60)
        try:
            return "created", local.api.post("/ops/machines", {
                "owner": "alice", "package": "slice", "image": "base-64", "alias": f"m{i}"})
        except ApiError as err:
            return "refused", err

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(provision, range(PROVISIONS)))
    created = [body for kind, body in outcomes if kind == "created"]
    refused = [err for kind, err in outcomes if kind == "refused"]
    assert len(created) == AGENT_COUNT * PER_SERVER
    assert len(refused) == PROVISIONS - AGENT_COUNT * PER_SERVER
    for err in refused:
        assert (err.status, err.code) == (409, "InsufficientCapacity"), err.body
        assert f"{AGENT_COUNT} lack RAM" in err.message and err.body["reasons"]

    for machine in created:
        job = cloud.wait_job(machine["job_uuid"], timeout=240)
        assert job["execution"] == "succeeded", job

    machines = cloud.api.get("/ops/machines")
    assert len(machines) == len(created) and {m["state"] for m in machines} == {"running"}
    assert {m["uuid"] for m in machines} == {m["uuid"] for m in created}
    for server_uuid in cloud.agents.values():
        server = cloud.server(server_uuid)
        on_it = [m for m in machines if m["server_uuid"] == server_uuid]
        assert len(on_it) == server["machine_count"] == PER_SERVER
        assert server["ram_inflight_mb"] == 0
        assert server["ram_committed_mb"] == PER_SERVER * PACKAGE_RAM_MB
        assert server["ram_committed_mb"] <= server["ram_mb"] * (1 - RESERVATION_RATIO)

    with create_engine(cloud.env["SDC_DATABASE_URL"]).connect() as conn:
        states = dict(conn.execute(text(
            "SELECT state, count(*) FROM reservations GROUP BY state")).all())
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    assert states == {"committed": len(created)}
    assert jobs == len(created)
    after = {p["name"]: p["fits"] for p in cloud.api.get("/ops/capacity")["packages"]}
    assert after["slice"] == 0
    wait_until(lambda: all(s["status"] == "running" for s in cloud.api.get("/ops/servers")),
               timeout=30, message="every node to stay up")
