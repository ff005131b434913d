"""The reservation's guarded UPDATE agrees with the maintenance filter on the real
PostgreSQL: no room is held on a server in maintenance, reserved or not, and room is held
again once it is out of maintenance (and not reserved)."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.placement.filters import not_in_maintenance, not_reserved
from headnode.placement.state import Context, PlacementRequest, Policy
from headnode.services import capacity, fleet, servers
from headnode.store.models import new_uuid
from tests.unit.headnode.services.conftest import make_server

REQUEST = PlacementRequest(ram_mb=1024, disk_mb=10240)
POLICY = Policy()


def outcome(ctx: Any, uuid: str) -> tuple[bool, bool]:
    """(the filters pass the server, the guard holds room on it); the hold is undone."""
    with ctx.read() as session, session.begin():
        state = fleet.load_servers(session, only=uuid)[0]
        context = Context.build(REQUEST, ())
        passes = (not_in_maintenance(state, REQUEST, POLICY, context)
                  and not_reserved(state, REQUEST, POLICY, context))
        held = capacity.reserve(session, uuid, new_uuid(), new_uuid(), REQUEST.ram_mb,
                                REQUEST.disk_mb, 0, POLICY)
        session.rollback()
    return passes, held


@pytest.mark.parametrize(("maintenance", "reserved", "takes"), [
    (False, False, True), (True, False, False), (True, True, False), (False, True, False),
])
def test_the_guard_agrees_with_the_filters(ctx: Any, maintenance: bool, reserved: bool,
                                           takes: bool) -> None:
    uuid = make_server(ctx, maintenance=maintenance, reserved=reserved).uuid
    assert outcome(ctx, uuid) == (takes, takes)


def test_out_of_maintenance_again_room_is_held(ctx: Any) -> None:
    uuid = make_server(ctx).uuid
    servers.update_server(ctx, uuid, {"maintenance": True})
    assert outcome(ctx, uuid) == (False, False)
    servers.update_server(ctx, uuid, {"maintenance": False})
    assert outcome(ctx, uuid) == (True, True)
