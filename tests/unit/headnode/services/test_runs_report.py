"""What a node says it runs reaches placement: an agent's sysinfo, registered, read back by
the fleet snapshot (PostgreSQL and SQLite), decides where an image can go; a server whose
agent does not say places as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headnode.config import get_settings
from headnode.placement.runs import Runs
from headnode.services import fleet
from headnode.services import machines as svc
from headnode.services.context import ServiceContext
from headnode.services.errors import InsufficientCapacity
from headnode.store.migrate import upgrade
from headnode.store.models import Account, Image, Package, Server, new_uuid
from schemas.agent import SYSINFO_RUNS, SysinfoSchema
from workflows.nodes import register_server

CALLER = {"type": "operator"}
WINDOWS_VM = {"name": "win", "os": "windows", "type": "zvol", "size_mb": 300}


def wire_sysinfo(backend: str, runs: dict[str, list[str]] | None) -> dict[str, Any]:
    info: dict[str, Any] = {"uuid": new_uuid(), "hostname": f"cn-{backend}",
                            "backend": backend, "cpus": 16, "ram_mb": 65536,
                            "pool_size_mb": 1_000_000}
    if runs is not None:
        info["runs"] = runs
    return SysinfoSchema().dump(info)


def register(ctx: ServiceContext, wire: dict[str, Any]) -> str:
    with ctx.transaction() as session:
        server = register_server(session, wire)
        server.setup = True  # what an operator's `sdc server setup` does
        return server.uuid


def seed(ctx: ServiceContext) -> None:
    with ctx.transaction() as session:
        session.add_all([Account(login="alice", email="alice@example.com"),
                         Package(name="small", memory=1024, disk=10240),
                         Image(**WINDOWS_VM)])


def create_windows_vm(ctx: ServiceContext) -> dict[str, Any]:
    return svc.create_machine(ctx, {"owner": "alice", "package": "small", "image": "win"},
                              CALLER)


def check_reports_decide(ctx: ServiceContext) -> None:
    seed(ctx)
    older = register(ctx, wire_sysinfo("linux", None))
    hvm = register(ctx, wire_sysinfo("linux", {"os": ["linux", "windows"],
                                               "type": ["lx-dataset", "zvol"]}))
    with ctx.read() as session:
        states = {s.uuid: s for s in fleet.load_snapshot(session, image_uuid="x").servers}
        rows = {u: fleet.state_of(session.get(Server, u)) for u in (older, hvm)}
    assert states[older].runs is None and rows[older].runs is None
    expected = Runs(frozenset({"linux", "windows"}), frozenset({"lx-dataset", "zvol"}))
    assert states[hvm].runs == expected and rows[hvm].runs == expected
    # the Linux backend's table would refuse a hardware VM; this node says it runs one
    assert create_windows_vm(ctx)["server_uuid"] == hvm


def test_a_nodes_report_decides_on_postgresql(ctx: Any) -> None:
    check_reports_decide(ctx)


def test_a_nodes_report_decides_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sdc.db"
    upgrade(url)
    check_reports_decide(ServiceContext(get_settings(database_url=url, data_dir=tmp_path)))


def test_a_fleet_of_older_agents_places_as_before(ctx: Any) -> None:
    seed(ctx)
    register(ctx, wire_sysinfo("linux", None))
    with pytest.raises(InsufficientCapacity) as refused:
        create_windows_vm(ctx)
    assert refused.value.reasons == {"cannot run the image's OS": 1}
    smartos = register(ctx, wire_sysinfo("smartos", None))
    assert create_windows_vm(ctx)["server_uuid"] == smartos


def test_the_report_is_kept_as_the_node_sent_it(ctx: Any) -> None:
    wire = wire_sysinfo("smartos", {"os": ["smartos"], "type": ["zone-dataset"]})
    uuid = register(ctx, wire)
    with ctx.read() as session:
        server = session.get(Server, uuid)
        assert server is not None
        assert server.sysinfo[SYSINFO_RUNS] == {"os": ["smartos"], "type": ["zone-dataset"]}
