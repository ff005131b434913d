"""Machines through the operator API, down to the rows the lead's machines service writes."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import machines  # noqa: F401 - the module under test: a broken one fails
from headnode.store.models import Job, Machine, Reservation, new_uuid
from tests.unit.headnode.api.conftest import (
    count,
    make_machine,
    make_package,
    make_server,
)

MACHINE_FIELDS = {
    "uuid", "alias", "owner_uuid", "package_uuid", "image_uuid", "server_uuid", "state",
    "ram_mb", "disk_mb", "cpu_cap", "vcpus", "brand", "tags", "metadata", "job_uuid",
    "created_at", "updated_at", "ips", "primary_ip", "networks", "nics",
}


def written(sdc: Any) -> tuple[int, int, int]:
    return count(sdc, Machine), count(sdc, Job), count(sdc, Reservation)


def test_create_by_names(api: Any, sdc: Any, fleet: dict[str, Any], jobqueue: Any) -> None:
    answer = api("post", "/ops/machines", json={
        "owner": "alice", "package": "small", "image": "base-64", "alias": "web-1",
        "tags": {"role": "web", "weight": 3, "canary": False}, "metadata": {"user-data": "x"}})
    assert answer.status_code == 202, answer.get_json()
    machine = answer.get_json()
    assert set(machine) == MACHINE_FIELDS
    assert machine["state"] == "provisioning"
    assert machine["server_uuid"] == fleet["server"].uuid
    assert (machine["alias"], machine["ram_mb"], machine["disk_mb"]) == ("web-1", 1024, 10240)
    assert machine["tags"] == {"role": "web", "weight": 3, "canary": False}
    assert machine["metadata"] == {"user-data": "x"}
    assert machine["job_uuid"]
    assert jobqueue.enqueued == [machine["job_uuid"]]
    assert written(sdc) == (1, 1, 1)

    job = api("get", f"/ops/jobs/{machine['job_uuid']}").get_json()
    assert (job["name"], job["machine_uuid"], job["execution"]) == (
        "provision", machine["uuid"], "queued")
    assert job["chain"] and isinstance(job["chain"][0], str)

    assert api("get", f"/ops/machines/{machine['uuid']}").get_json() == machine


def test_create_by_uuids_on_a_chosen_server(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    other = make_server(sdc, hostname="cn2")
    answer = api("post", "/ops/machines", json={
        "owner": fleet["owner"].uuid, "package": fleet["package"].uuid,
        "image": fleet["image"].uuid, "server_uuid": other.uuid})
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["server_uuid"] == other.uuid


@pytest.mark.parametrize("field,value", [
    ("owner", "nobody"),
    ("owner", "00000000-0000-0000-0000-000000000000"),
    ("package", "huge"),
    ("package", "00000000-0000-0000-0000-000000000000"),
    ("image", "no-such-image"),
    ("server_uuid", "00000000-0000-0000-0000-000000000000"),
])
def test_unknown_references_are_named_and_nothing_is_written(
    api: Any, sdc: Any, fleet: dict[str, Any], jobqueue: Any, field: str, value: str
) -> None:
    body = {"owner": "alice", "package": "small", "image": "base-64", field: value}
    answer = api("post", "/ops/machines", json=body)
    assert 400 <= answer.status_code < 500
    error = answer.get_json()
    assert error["code"] == "InvalidArgument"
    assert set(error["errors"]) == {field}
    assert field in error["message"]
    assert written(sdc) == (0, 0, 0)
    assert jobqueue.enqueued == []


def test_no_room_is_refused_with_reasons(api: Any, sdc: Any, fleet: dict[str, Any],
                                         jobqueue: Any) -> None:
    make_package(sdc, name="huge", memory=10_000_000, disk=1)
    answer = api("post", "/ops/machines", json={
        "owner": "alice", "package": "huge", "image": "base-64"})
    assert answer.status_code == 409
    error = answer.get_json()
    assert error["code"] == "InsufficientCapacity"
    assert error["reasons"] and all(isinstance(n, int) for n in error["reasons"].values())
    assert written(sdc) == (0, 0, 0)
    assert jobqueue.enqueued == []


@pytest.mark.parametrize("body,fields", [
    ({}, {"owner", "package", "image"}),
    ({"owner": "alice", "package": 7, "image": "base-64"}, {"package"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "alias": "-bad"}, {"alias"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "alias": "x" * 190},
     {"alias"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "tags": {"a": {"b": 1}}},
     {"tags.a.value"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "metadata": {"n": 1}},
     {"metadata.n.value"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "metadata": {"a,b": "x"}},
     {"metadata.a,b.key"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "tags": {"a,b": "x"}},
     {"tags.a,b.key"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "server_uuid": "cn1"},
     {"server_uuid"}),
    ({"owner": "alice", "package": "small", "image": "base-64", "pacakge": "big"},
     {"pacakge"}),
])
def test_bad_requests_name_their_fields(api: Any, sdc: Any, fleet: dict[str, Any],
                                        body: dict[str, Any], fields: set[str]) -> None:
    answer = api("post", "/ops/machines", json=body)
    assert answer.status_code == 422
    error = answer.get_json()
    assert error["code"] == "ValidationFailed"
    assert set(error["errors"]) == fields
    for field in fields:
        assert field in error["message"]
    assert written(sdc) == (0, 0, 0)


def test_list_filters_and_counts(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    web = make_machine(sdc, fleet, alias="web")
    db = make_machine(sdc, fleet, alias="db", state="stopped")
    make_machine(sdc, fleet, alias="gone", state="destroyed")

    answer = api("get", "/ops/machines")
    assert answer.status_code == 200
    assert {m["uuid"] for m in answer.get_json()} == {web.uuid, db.uuid}
    assert answer.headers["x-resource-count"] == "2"

    stopped = api("get", "/ops/machines?state=stopped")
    assert [m["uuid"] for m in stopped.get_json()] == [db.uuid]
    assert [m["uuid"] for m in api("get", "/ops/machines?alias=web").get_json()] == [web.uuid]
    page = api("get", "/ops/machines?limit=1&offset=1")
    assert len(page.get_json()) == 1
    assert page.headers["x-resource-count"] == "2"


def test_list_refuses_bad_paging(api: Any) -> None:
    answer = api("get", "/ops/machines?limit=5000&offset=-1&state=melted")
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"limit", "offset", "state"}


def test_unknown_machine_is_404(api: Any) -> None:
    for method in ("get", "delete"):
        answer = api(method, f"/ops/machines/{new_uuid()}")
        assert answer.status_code == 404
        assert answer.get_json()["code"] == "ResourceNotFound"
    assert api("post", f"/ops/machines/{new_uuid()}?action=start").status_code == 404


def test_action_starts_a_job_and_a_second_one_is_busy(
    api: Any, sdc: Any, fleet: dict[str, Any], jobqueue: Any
) -> None:
    machine = make_machine(sdc, fleet, state="running")
    answer = api("post", f"/ops/machines/{machine.uuid}?action=stop")
    assert answer.status_code == 202
    started = answer.get_json()
    assert started["machine_uuid"] == machine.uuid
    assert jobqueue.enqueued == [started["job_uuid"]]
    assert api("get", f"/ops/jobs/{started['job_uuid']}").get_json()["name"] == "stop"

    again = api("post", f"/ops/machines/{machine.uuid}?action=reboot")
    assert again.status_code == 409
    assert again.get_json()["code"] == "MachineBusy"
    assert jobqueue.enqueued == [started["job_uuid"]]


@pytest.mark.parametrize("query", ["", "?action=explode"])
def test_bad_or_missing_action_is_named(api: Any, sdc: Any, fleet: dict[str, Any],
                                        query: str) -> None:
    machine = make_machine(sdc, fleet)
    answer = api("post", f"/ops/machines/{machine.uuid}{query}")
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"action"}
    assert count(sdc, Job) == 0


def test_destroy_starts_a_job(api: Any, sdc: Any, fleet: dict[str, Any], jobqueue: Any) -> None:
    machine = make_machine(sdc, fleet, state="stopped")
    answer = api("delete", f"/ops/machines/{machine.uuid}")
    assert answer.status_code == 202
    assert answer.get_json()["machine_uuid"] == machine.uuid
    assert jobqueue.enqueued == [answer.get_json()["job_uuid"]]


def test_jobs_record_the_operator_as_caller(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(sdc, fleet)
    job_uuid = api("post", f"/ops/machines/{machine.uuid}?action=reboot").get_json()["job_uuid"]
    with sdc.read() as session:
        caller = session.get(Job, job_uuid).caller
    assert caller["type"] == "operator"
    assert caller["token_id"] and "test-token" not in str(caller)
