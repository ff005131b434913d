"""A server in maintenance (PUT /ops/servers/<uuid> {"maintenance": ...}) and a forgotten one
(DELETE /ops/servers/<uuid>), through the operator API down to the rows."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from headnode.placement.filters import MAINTENANCE, RESERVED
from headnode.store.models import Machine, Reservation, RevokedNode, Server, new_uuid
from schemas.agent import HEARTBEAT_KEY
from tests.unit.headnode.api.conftest import (
    count,
    make_machine,
    make_server,
)


def create(api: Any) -> Any:
    return api("post", "/ops/machines", json={"owner": "alice", "package": "small",
                                              "image": "base-64", "alias": "web"})


def maintenance(api: Any, uuid: str, on: Any) -> Any:
    return api("put", f"/ops/servers/{uuid}", json={"maintenance": on})


def test_a_server_in_maintenance_takes_no_new_machine_with_its_own_reason(
        api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    uuid = fleet["server"].uuid
    answer = maintenance(api, uuid, True)
    assert answer.status_code == 200 and answer.get_json()["maintenance"] is True
    assert api("get", f"/ops/servers/{uuid}").get_json()["maintenance"] is True
    assert [s["maintenance"] for s in api("get", "/ops/servers").get_json()] == [True]

    refused = create(api)
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["code"] == "InsufficientCapacity"
    assert refused.get_json()["reasons"] == {MAINTENANCE: 1}
    assert count(sdc, Machine) == 0 and count(sdc, Reservation) == 0

    assert maintenance(api, uuid, False).get_json()["maintenance"] is False
    assert create(api).status_code == 202


def test_maintenance_and_reserved_each_count_once(api: Any, sdc: Any,
                                                 fleet: dict[str, Any]) -> None:
    both = make_server(sdc, hostname="cn2", reserved=True)
    maintenance(api, both.uuid, True)
    maintenance(api, fleet["server"].uuid, True)
    refused = create(api)
    assert refused.get_json()["reasons"] == {RESERVED: 1, MAINTENANCE: 1}
    # the reservation flag and the maintenance flag are independent
    body = api("put", f"/ops/servers/{both.uuid}", json={"reserved": False}).get_json()
    assert (body["reserved"], body["maintenance"]) == (False, True)


def test_its_machines_can_still_be_stopped_started_and_destroyed(
        api: Any, sdc: Any, fleet: dict[str, Any], jobqueue: Any) -> None:
    running = make_machine(sdc, fleet, state="running", alias="a")
    stopped = make_machine(sdc, fleet, state="stopped", alias="b")
    doomed = make_machine(sdc, fleet, state="stopped", alias="c")
    maintenance(api, fleet["server"].uuid, True)
    assert api("post", f"/ops/machines/{running.uuid}?action=stop").status_code == 202
    assert api("post", f"/ops/machines/{stopped.uuid}?action=start").status_code == 202
    assert api("delete", f"/ops/machines/{doomed.uuid}").status_code == 202
    assert len(jobqueue.enqueued) == 3


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_maintenance_value_is_named_and_changes_nothing(
        api: Any, sdc: Any, fleet: dict[str, Any], value: Any) -> None:
    uuid = fleet["server"].uuid
    answer = maintenance(api, uuid, value)
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"maintenance"}
    assert api("get", f"/ops/servers/{uuid}").get_json()["maintenance"] is False


def test_unknown_server_is_404(api: Any) -> None:
    for call in (lambda u: maintenance(api, u, True),
                 lambda u: api("delete", f"/ops/servers/{u}")):
        answer = call(new_uuid())
        assert answer.status_code == 404
        assert answer.get_json()["code"] == "ResourceNotFound"


def revoked(sdc: Any) -> list[str]:
    with sdc.read() as session:
        return [r.uuid for r in session.query(RevokedNode)]


def test_forget_is_refused_while_machines_remain_naming_how_many(
        api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    for alias, state in (("a", "running"), ("b", "stopped"), ("c", "failed"),
                         ("d", "destroyed")):
        make_machine(sdc, fleet, alias=alias, state=state)
    uuid = fleet["server"].uuid
    answer = api("delete", f"/ops/servers/{uuid}")
    assert answer.status_code == 409
    body = answer.get_json()
    assert body["code"] == "ServerInUse"
    assert "3 machine(s)" in body["message"]
    assert api("get", f"/ops/servers/{uuid}").status_code == 200
    assert revoked(sdc) == []


def test_forget_with_only_destroyed_machines_removes_and_revokes(
        api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    gone = make_machine(sdc, fleet, state="destroyed")
    uuid = fleet["server"].uuid
    answer = api("delete", f"/ops/servers/{uuid}")
    assert answer.status_code == 204
    assert api("get", f"/ops/servers/{uuid}").status_code == 404
    assert revoked(sdc) == [uuid]
    with sdc.read() as session:
        machine = session.get(Machine, gone.uuid)
        assert machine is not None and machine.state == "destroyed"
        assert machine.server_uuid is None  # the record stays, without its server
    assert api("delete", f"/ops/servers/{uuid}").status_code == 404


def test_forget_an_empty_server_drops_its_heartbeat(api: Any, sdc: Any) -> None:
    server = make_server(sdc, hostname="empty")
    other = make_server(sdc, hostname="other")
    client = redis.Redis.from_url(sdc.settings.redis_url)
    client.hset(HEARTBEAT_KEY, mapping={server.uuid: "1 x", other.uuid: "1 y"})
    assert api("delete", f"/ops/servers/{server.uuid}").status_code == 204
    assert client.hkeys(HEARTBEAT_KEY) == [other.uuid.encode()]
    assert count(sdc, Server) == 1
    assert revoked(sdc) == [server.uuid]
