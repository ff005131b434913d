"""The web console on a large fleet: each page's server time, and the dashboard's first paint.

A private PostgreSQL and Redis hold 1,000 servers, 500 accounts, 20,000 machines (with their
reservations' sums on the server rows), 20,000 jobs and a week of capacity history (5-minute
snapshots). The head node's app is built in this process; each page is asked ``--runs``
times through Flask's test client as an operator (and the tenant's pages as a tenant), and
its p50 is printed beside the target (200 ms, paginated lists). In the same run, the
operator API's own list of 50 machines is the baseline each page is compared with (what
any request costs here: auth, a query, JSON).

Then the app is served on 127.0.0.1 and Debian's Chromium (Playwright, /usr/bin/chromium)
signs in and loads the dashboard ``--runs`` times: the first contentful paint's p50.

    .venv/bin/python bench/console.py [--servers 1000] [--machines 20000] [--runs 7]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask.testing import FlaskClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from bench.common import private_stack  # noqa: E402
from headnode.api.app import create_app  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.services import passwords  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.models import (  # noqa: E402
    Account,
    CapacitySnapshot,
    Image,
    Job,
    Machine,
    Package,
    Server,
    new_uuid,
    utcnow,
)
from tests.support.jobqueue import RecordingJobQueue  # noqa: E402
from tests.support.net import free_port  # noqa: E402

TARGET_MS = 200.0
TOKEN = "bench-operator-token"
TENANT_PASSWORD = "a bench password, long enough"
CHROMIUM = "/usr/bin/chromium"
SERVER_RAM_MB, SERVER_DISK_MB, SERVER_CPUS = 262_144, 3_336 * 1024, 48
MACHINE_RAM_MB, MACHINE_DISK_MB = 4096, 40_960


def fill(ctx: ServiceContext, n_servers: int, n_machines: int, n_accounts: int) -> dict[str, Any]:
    """The fleet, in a few bulk INSERTs; returns the names the pages are asked about."""
    rng = random.Random(7)
    servers: list[dict[str, Any]] = [{
                "uuid": new_uuid(), "hostname": f"cn{i:04d}", "backend": "sim",
                "setup": i % 50 != 0, "maintenance": i % 97 == 0, "status":
                "unknown" if i % 89 == 0 else "running", "ram_mb": SERVER_RAM_MB,
                "cpus": SERVER_CPUS, "disk_mb": SERVER_DISK_MB, "last_heartbeat": time.time(),
                "traits": {"ssd": True} if i % 7 == 0 else {}} for i in range(n_servers)]
    accounts = [{"uuid": new_uuid(), "login": f"user{i:03d}", "email": f"u{i}@example.com"}
                for i in range(n_accounts)]
    package = {"uuid": new_uuid(), "name": "medium", "memory": MACHINE_RAM_MB,
               "disk": MACHINE_DISK_MB}
    image = {"uuid": new_uuid(), "name": "base-64", "version": "24.4.0", "os": "smartos",
             "size_mb": 300, "state": "active", "public": True}
    machines, jobs = [], []
    per_server: dict[str, int] = {}
    placeable = [s["uuid"] for s in servers if s["setup"]]
    for i in range(n_machines):
        server = placeable[i % len(placeable)]
        per_server[server] = per_server.get(server, 0) + 1
        uuid = new_uuid()
        owner = accounts[rng.randrange(n_accounts)]["uuid"]
        machines.append({"uuid": uuid, "alias": f"m{i:05d}", "owner_uuid": owner,
                         "package_uuid": package["uuid"], "image_uuid": image["uuid"],
                         "server_uuid": server, "state": "running" if i % 10 else "stopped",
                         "ram_mb": MACHINE_RAM_MB, "disk_mb": MACHINE_DISK_MB})
        jobs.append({"uuid": new_uuid(), "name": "provision", "machine_uuid": uuid,
                     "server_uuid": server, "owner_uuid": owner, "execution": "succeeded",
                     "created_at": utcnow() - timedelta(minutes=n_machines - i)})
    for s in servers:
        count = per_server.get(s["uuid"], 0)
        s.update(machine_count=count, ram_committed_mb=count * MACHINE_RAM_MB,
                 disk_committed_mb=count * MACHINE_DISK_MB, uncapped_count=count)
    now = utcnow()
    history = [_snapshot(now - timedelta(minutes=5 * k), n_servers, k)
               for k in range(7 * 24 * 12)]
    with ctx.transaction() as session:
        for model, rows in ((Server, servers), (Account, accounts), (Package, [package]),
                            (Image, [image]), (Machine, machines), (Job, jobs),
                            (CapacitySnapshot, history)):
            for start in range(0, len(rows), 5000):
                session.execute(insert(model), rows[start:start + 5000])
    return {"server": servers[1]["uuid"], "machine": machines[7]["uuid"],
            "job": jobs[7]["uuid"], "tenant": accounts[3]["login"],
            "owner": accounts[3]["login"]}


def _snapshot(at: Any, n_servers: int, k: int) -> dict[str, Any]:
    used = 0.6 - k * 0.00002
    ram_total = n_servers * SERVER_RAM_MB
    return {"taken_at": at, "servers": n_servers, "placeable_servers": n_servers,
            "machines": int(20_000 * used / 0.6), "ram_total_mb": ram_total,
            "ram_provisioned_mb": int(ram_total * used), "ram_reserved_mb": 0,
            "ram_free_mb": int(ram_total * (1 - used)), "cpu_total": n_servers * 4800,
            "cpu_provisioned": 0, "cpu_reserved": 0, "cpu_free": n_servers * 4800,
            "disk_total_mb": n_servers * SERVER_DISK_MB, "disk_provisioned_mb": 0,
            "disk_reserved_mb": 0, "disk_free_mb": n_servers * SERVER_DISK_MB}


def p50_ms(call: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def page_timer(client: FlaskClient, runs: int) -> Callable[[str], float]:
    def timed(path: str) -> float:
        def get() -> None:
            answer = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            if answer.status_code != 200:
                raise SystemExit(f"{path}: {answer.status_code}")
        get()  # warm: the first request of a page compiles its templates
        return p50_ms(get, runs)
    return timed


def sign_in(client: FlaskClient, path: str, form: dict[str, str]) -> None:
    page = client.get("/console/signin").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = client.post(path, data={"csrf_token": token, **form})
    if answer.status_code != 302:
        raise SystemExit(f"sign-in at {path}: {answer.status_code}")


OPERATOR_PAGES = (
    "/console/", "/console/servers", "/console/servers?page=10", "/console/servers/{server}",
    "/console/machines", "/console/machines?page=300", "/console/machines?owner={owner}",
    "/console/machines/{machine}", "/console/machines/new", "/console/jobs",
    "/console/jobs?page=300", "/console/jobs/{job}", "/console/images", "/console/packages",
    "/console/networks", "/console/accounts", "/console/keys?account={owner}",
    "/console/capacity", "/console/capacity/whatif?add_servers.0.count=10"
    "&add_servers.0.ram_mb=262144&add_servers.0.cpus=48&add_servers.0.disk_mb=3000000"
    "&place.0.package=medium&place.0.count=100",
    "/console/capacity/explain?package=medium&image=base-64&owner={owner}",
)
TENANT_PAGES = ("/console/", "/console/machines", "/console/jobs", "/console/keys")


def server_times(app: Any, names: dict[str, Any], runs: int) -> list[tuple[str, str, float]]:
    rows = []
    operator = app.test_client()
    sign_in(operator, "/console/signin/operator", {"token": TOKEN})
    timed = page_timer(operator, runs)
    rows.append(("baseline", "/ops/machines?limit=50 (operator API)",
                 timed("/ops/machines?limit=50")))
    rows += [("operator", p.format(**names), timed(p.format(**names))) for p in OPERATOR_PAGES]
    tenant = app.test_client()
    sign_in(tenant, "/console/signin/tenant", {"login": names["tenant"],
                                                "password": TENANT_PASSWORD})
    timed = page_timer(tenant, runs)
    rows += [("tenant", p, timed(p)) for p in TENANT_PAGES]
    return rows


#: the page's first contentful paint (ms after navigation start), once Chromium has one
FIRST_PAINT = """new Promise(resolve => new PerformanceObserver(list => {
    const [entry] = list.getEntriesByName('first-contentful-paint');
    if (entry) resolve(entry.startTime);
}).observe({type: 'paint', buffered: true}))"""


def first_paint(app: Any, runs: int) -> float | None:
    """The dashboard's first contentful paint in Chromium, p50 of ``runs`` loads (None when
    Chromium is not installed: `make browser`)."""
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            base = f"http://127.0.0.1:{port}/console"
            page.goto(f"{base}/signin")
            page.fill("#token", TOKEN)
            page.click("text=Sign in as operator")
            page.wait_for_url(f"{base}/")
            paints = []
            for _ in range(runs):
                page.goto(f"{base}/")
                paints.append(page.evaluate(FIRST_PAINT))
            browser.close()
        return float(statistics.median(paints))
    finally:
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with private_stack("console") as stack:
        assert stack.redis is not None
        settings = get_settings(database_url=stack.database_url, redis_url=stack.redis.url,
                                data_dir=stack.workdir / "data", operator_token=TOKEN,
                                message_key="bench-message-key")
        app = create_app(settings, jobs=RecordingJobQueue())
        ctx: ServiceContext = app.extensions["sdc"]
        started = time.perf_counter()
        names = fill(ctx, args.servers, args.machines, args.accounts)
        passwords.set_password(ctx, names["tenant"], TENANT_PASSWORD)
        print(f"fleet: {args.servers} servers, {args.accounts} accounts, {args.machines} "
              f"machines and jobs, a week of history, loaded in "
              f"{time.perf_counter() - started:.1f} s")
        rows = server_times(app, names, args.runs)
        baseline = rows[0][2]
        print(f"\n| who | page | p50 server time | vs baseline | ≤ {TARGET_MS:.0f} ms |")
        print("|---|---|---|---|---|")
        for who, path, ms in rows:
            ok = "yes" if ms <= TARGET_MS else "**no**"
            print(f"| {who} | `{path[:70]}` | {ms:.0f} ms | {ms / baseline:.1f}× | {ok} |")
        paint = first_paint(app, args.runs)
        print("\ndashboard first contentful paint in Chromium: "
              + (f"p50 {paint:.0f} ms" if paint is not None else "skipped (no Chromium)"))


if __name__ == "__main__":
    main()
