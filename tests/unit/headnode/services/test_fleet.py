"""The fleet snapshot placement decides on, read from the real PostgreSQL."""

from __future__ import annotations

from typing import Any

from headnode.services import fleet
from tests.unit.headnode.services.conftest import make_account, make_machine, make_server


def snapshot(ctx: Any, owner_uuid: str | None, only: str | None = None,
             with_machines: bool = False) -> Any:
    with ctx.read() as session:
        return fleet.load_snapshot(session, owner_uuid, only, with_machines=with_machines)


def test_owner_counts_come_with_the_servers(ctx: Any, fleet: dict[str, Any]) -> None:
    cn1, cn2 = fleet["server"], make_server(ctx, hostname="cn2")
    empty = make_server(ctx, hostname="cn3")
    for alias, server, state in [("a", cn1, "running"), ("b", cn1, "provisioning"),
                                 ("c", cn2, "stopped"), ("gone", cn2, "destroyed"),
                                 ("lost", cn2, "failed")]:
        make_machine(ctx, fleet, alias=alias, server_uuid=server.uuid, state=state)
    bob = make_account(ctx, login="bob", email="bob@example.com")
    make_machine(ctx, fleet, alias="x", owner_uuid=bob.uuid, server_uuid=empty.uuid)

    owner = fleet["owner"].uuid
    got = snapshot(ctx, owner)
    assert {s.uuid for s in got.servers} == {cn1.uuid, cn2.uuid, empty.uuid}
    assert got.owner_counts == {cn1.uuid: 2, cn2.uuid: 1}
    # the same counts as walking the owner's machines
    walked = snapshot(ctx, owner, with_machines=True)
    assert sorted(m.server_uuid for m in walked.owner_machines) == sorted(
        [cn1.uuid, cn1.uuid, cn2.uuid])
    assert [s.uuid for s in snapshot(ctx, owner, only=cn2.uuid).servers] == [cn2.uuid]
    assert snapshot(ctx, owner, only=cn2.uuid).owner_counts == {cn2.uuid: 1}
    assert snapshot(ctx, None).owner_counts == {}
    assert len(snapshot(ctx, None).servers) == 3


def test_the_server_view_is_the_same_with_or_without_counts(ctx: Any,
                                                            fleet: dict[str, Any]) -> None:
    make_machine(ctx, fleet, alias="a")
    counted = snapshot(ctx, fleet["owner"].uuid).servers
    plain = snapshot(ctx, None).servers
    assert counted == plain
