"""A create on SQLite (``sdc up``): the lookups, the guarded reservation and the NIC insert
are written once for both databases, and SQLite is the stricter about correlation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headnode.config import get_settings
from headnode.services import machines, networks
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InsufficientCapacity
from headnode.store.migrate import upgrade
from headnode.store.models import Account, Image, Package, Server, new_uuid

CALLER = {"type": "operator"}


@pytest.fixture
def lite(tmp_path: Path) -> ServiceContext:
    url = f"sqlite:///{tmp_path}/sdc.db"
    upgrade(url)
    ctx = ServiceContext(get_settings(database_url=url, data_dir=tmp_path))
    with ctx.transaction() as session:
        session.add_all([Server(uuid=new_uuid(), hostname="cn1", backend="sim", setup=True,
                                ram_mb=65536, cpus=16, disk_mb=1_000_000, last_heartbeat=1e9),
                         Account(login="alice", email="alice@example.com"),
                         Package(name="small", memory=1024, disk=10240),
                         Package(name="huge", memory=600000, disk=10240),
                         Image(name="base-64", size_mb=300)])
    return ctx


def create(ctx: ServiceContext, **body: Any) -> dict[str, Any]:
    return machines.create_machine(
        ctx, {"owner": "alice", "package": "small", "image": "base-64", **body}, CALLER)


def test_create_on_sqlite(lite: ServiceContext) -> None:
    assert create(lite, alias="a")["ips"] == []
    public = networks.create_network(lite, {"name": "pub", "subnet": "10.0.0.0/29",
                                            "gateway": "10.0.0.1"})
    assert create(lite, alias="b")["ips"] == ["10.0.0.2"]
    own = networks.create_network(lite, {"name": "own", "subnet": "10.1.0.0/29",
                                         "owner": "alice"})
    alice = create(lite, alias="c")["owner_uuid"]
    networks.set_default_network(lite, alice, "own")
    assert create(lite, alias="d")["networks"] == [own.uuid]
    assert create(lite, alias="e", networks=["pub", "own"])["networks"] == [public.uuid,
                                                                            own.uuid]
    with pytest.raises(Conflict) as err:
        create(lite, alias="e")
    assert err.value.code == "DuplicateName"
    with pytest.raises(InsufficientCapacity):
        create(lite, alias="f", package="huge")
