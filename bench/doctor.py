"""How long a status report and the doctor take on a large fleet (private PostgreSQL).

A fleet of SERVERS servers with MACHINES running machines each (committed reservations, one
address each) and as many destroyed ones; every server reports. Measured: applying one
report (p50, p99), the reconciler's look for suspected machines, and ``doctor`` (check only)
on the clean fleet and after faults (machines left out of reports, orphans, leaked
addresses); the findings are counted to show the checker sees exactly the faults made.

    .venv/bin/python bench/doctor.py [--servers 100] [--machines 100]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, populate, private_stack  # noqa: E402
from headnode.config import HeadnodeSettings  # noqa: E402
from headnode.services import doctor  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.models import (  # noqa: E402
    Account,
    Image,
    Machine,
    Network,
    Nic,
    Package,
    Reservation,
    Server,
    new_uuid,
    utcnow,
)
from workflows import nodes  # noqa: E402

FAULTS = 10  # of each kind


def build_fleet(ctx: ServiceContext, machines_per_server: int) -> dict[str, list[str]]:
    """Bulk rows, as years of provisions would leave them; server uuid -> its live machines."""
    with ctx.transaction() as session:
        owner = session.scalars(select(Account.uuid)).one()
        package = session.scalars(select(Package.uuid)).one()
        image = session.scalars(select(Image.uuid)).one()
        servers = list(session.scalars(select(Server.uuid).order_by(Server.uuid)))
        network = Network(name="external", subnet="10.0.0.0/8", provision_start_ip="10.0.0.10",
                          provision_end_ip="10.255.255.250", public=True)
        session.add(network)
        session.flush()
        fleet: dict[str, list[str]] = {}
        machine_rows: list[dict[str, Any]] = []
        reservations, nics = [], []
        ip = int(ipaddress.IPv4Address("10.0.0.10"))
        for server in servers:
            fleet[server] = []
            for i in range(2 * machines_per_server):
                uuid, live = new_uuid(), i % 2 == 0
                machine_rows.append({
                    "uuid": uuid, "alias": f"m-{uuid[:8]}", "owner_uuid": owner,
                    "package_uuid": package, "image_uuid": image, "server_uuid": server,
                    "state": "running" if live else "destroyed", "ram_mb": 512,
                    "disk_mb": 5120, "destroyed_at": None if live else utcnow()})
                reservations.append({"machine_uuid": uuid, "server_uuid": server,
                                     "job_uuid": new_uuid(), "ram_mb": 512, "disk_mb": 5120,
                                     "cpu": 0, "state": "committed" if live else "released"})
                if live:
                    fleet[server].append(uuid)
                    nics.append({"mac": f"90:b8:d0:{ip >> 16 & 255:02x}:{ip >> 8 & 255:02x}:"
                                        f"{ip & 255:02x}", "machine_uuid": uuid,
                                 "network_uuid": network.uuid,
                                 "ip": str(ipaddress.IPv4Address(ip)), "ip_num": ip,
                                 "primary": True})
                    ip += 1
        session.execute(insert(Machine), machine_rows)
        session.execute(insert(Reservation), reservations)
        session.execute(insert(Nic), nics)
    return fleet


def report(server_uuid: str, machines: list[str]) -> dict[str, Any]:
    return {"server_uuid": server_uuid, "pool_size_mb": 4_000_000, "pool_used_mb": 1,
            "ram_mb": 262144, "ram_free_mb": 1, "timestamp": time.time(),
            "machines": [{"uuid": u, "state": "running"} for u in machines]}


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - started) * 1000


def check_ms(ctx: ServiceContext) -> tuple[Counter[str], float]:
    best, counted = float("inf"), Counter[str]()
    for _ in range(3):
        result, ms = timed(lambda: doctor.doctor(ctx))
        best = min(best, ms)
        counted = Counter(f["kind"] for f in result["findings"])
    return counted, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--machines", type=int, default=100, help="live machines per server")
    args = parser.parse_args()
    with private_stack("doctor", redis=False) as stack:
        ctx = ServiceContext(HeadnodeSettings(database_url=stack.database_url))
        populate(ctx, args.servers)
        fleet = build_fleet(ctx, args.machines)
        applied = []
        for server_uuid, machines in fleet.items():
            with ctx.transaction() as session:
                _, ms = timed(lambda s=session, u=server_uuid, m=machines: nodes.apply_status(
                    s, report(u, m)))
            applied.append(ms)
        total = sum(len(m) for m in fleet.values())
        print(f"fleet: {args.servers} servers, {total} running machines (+{total} destroyed)")
        print(f"apply_status, {args.machines} machines per report: "
              f"p50 {percentile(applied, 0.5):.1f} ms, p99 {percentile(applied, 0.99):.1f} ms")
        counted, ms = check_ms(ctx)
        print(f"doctor check, clean fleet: {ms:.0f} ms, findings {dict(counted) or 'none'}")

        servers = list(fleet)
        with ctx.transaction() as session:  # orphans: destroyed in the records, still listed
            destroyed = list(session.scalars(select(Machine.uuid).where(
                Machine.state == "destroyed", Machine.server_uuid == servers[0]).limit(FAULTS)))
            session.execute(insert(Nic), [{  # leaked addresses of destroyed machines
                "mac": f"90:b8:d1:00:00:{i:02x}", "machine_uuid": u,
                "network_uuid": session.scalars(select(Network.uuid)).one(),
                "ip": f"11.0.0.{i + 1}", "ip_num": int(ipaddress.IPv4Address("11.0.0.1")) + i,
                "primary": True} for i, u in enumerate(destroyed)])
        with ctx.transaction() as session:
            nodes.apply_status(session, report(servers[0], fleet[servers[0]] + destroyed))
            # a report leaving out FAULTS machines of another server
            nodes.apply_status(session, report(servers[1], fleet[servers[1]][FAULTS:]))
        with ctx.transaction() as session:
            _, ask_ms = timed(lambda: nodes.due_questions(session, 30.0))
        counted, ms = check_ms(ctx)
        print(f"doctor check after faults: {ms:.0f} ms, findings {dict(counted)}")
        print(f"due_questions (the reconciler's look, {FAULTS} suspected): {ask_ms:.1f} ms")
        assert counted == {"orphan": FAULTS, "missing": FAULTS, "leaked_ip": FAULTS}, counted


if __name__ == "__main__":
    main()
