"""Resize, rename, snapshots and image-from-machine through the operator API."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from headnode.store.models import Image, Job, Machine, MachineSnapshot
from tests.support.jobqueue import RecordingJobQueue
from tests.unit.headnode.api.conftest import (
    add,
    count,
    make_account,
    make_image,
    make_package,
    make_server,
)


@pytest.fixture
def machine(sdc: Any) -> Machine:
    server = make_server(sdc)
    package = make_package(sdc, name="small", memory=1024, disk=10240)
    make_package(sdc, name="large", memory=4096, disk=40960)
    make_package(sdc, name="enormous", memory=1_000_000, disk=10240)
    image = make_image(sdc)
    owner = make_account(sdc)
    return add(sdc, Machine(alias="web", owner_uuid=owner.uuid, package_uuid=package.uuid,
                            image_uuid=image.uuid, server_uuid=server.uuid, state="running",
                            ram_mb=1024, disk_mb=10240))


def job(sdc: Any, job_uuid: str) -> Job:
    with sdc.read() as session:
        row = session.get(Job, job_uuid)
        assert row is not None
        return row


def test_resize_and_rename_start_jobs(api: Any, sdc: Any, machine: Machine,
                                      jobqueue: RecordingJobQueue) -> None:
    resized = api("post", f"/ops/machines/{machine.uuid}?action=resize&package=large")
    assert resized.status_code == 202, resized.get_json()
    body = resized.get_json()
    assert body["machine_uuid"] == machine.uuid and jobqueue.enqueued == [body["job_uuid"]]
    row = job(sdc, body["job_uuid"])
    assert row.name == "resize" and row.params["ram_mb"] == 4096
    busy = api("post", f"/ops/machines/{machine.uuid}?action=rename&alias=db")
    assert busy.status_code == 409 and busy.get_json()["code"] == "MachineBusy"


def test_rename_starts_a_job(api: Any, sdc: Any, machine: Machine) -> None:
    renamed = api("post", f"/ops/machines/{machine.uuid}?action=rename&alias=db-1")
    assert renamed.status_code == 202
    assert job(sdc, renamed.get_json()["job_uuid"]).params == {
        "alias": "db-1", "old_alias": "web", "chain": ["rename_machine"],
        "onerror": ["restore_alias"]}


@pytest.mark.parametrize(("query", "field"), [
    ("action=resize", "package"),
    ("action=rename", "alias"),
    ("action=rename&alias=-no", "alias"),
    ("action=explode", "action"),
])
def test_bad_action_parameters_are_named(api: Any, sdc: Any, machine: Machine, query: str,
                                         field: str) -> None:
    answer = api("post", f"/ops/machines/{machine.uuid}?{query}")
    assert answer.status_code == 422
    assert field in answer.get_json()["errors"]
    assert count(sdc, Job) == 0


def test_resize_refusals(api: Any, sdc: Any, machine: Machine) -> None:
    unknown = api("post", f"/ops/machines/{machine.uuid}?action=resize&package=nope")
    assert unknown.status_code == 422 and unknown.get_json()["errors"] == {
        "package": ["no package 'nope'"]}
    full = api("post", f"/ops/machines/{machine.uuid}?action=resize&package=enormous")
    assert full.status_code == 409
    assert full.get_json()["code"] == "InsufficientCapacity" and full.get_json()["reasons"]
    gone = api("post", "/ops/machines/00000000-0000-4000-8000-000000000000"
                       "?action=resize&package=large")
    assert gone.status_code == 404
    assert count(sdc, Job) == 0


def test_snapshot_endpoints(api: Any, sdc: Any, machine: Machine) -> None:
    base = f"/ops/machines/{machine.uuid}/snapshots"
    made = api("post", base, json={"name": "s1"})
    assert made.status_code == 202, made.get_json()
    body = made.get_json()
    assert body["snapshot"]["name"] == "s1" and body["snapshot"]["state"] == "queued"
    assert job(sdc, body["job_uuid"]).name == "snapshot_create"
    listed = api("get", base).get_json()
    assert [(s["name"], s["state"]) for s in listed] == [("s1", "queued")]
    assert api("get", f"{base}/s1").get_json()["state"] == "queued"
    assert api("get", f"{base}/nope").status_code == 404
    # the snapshot is not made yet, and the machine is busy
    assert api("post", f"{base}/s1").status_code == 409
    assert api("delete", f"{base}/s1").status_code == 409

    with sdc.transaction() as session:
        session.get(Machine, machine.uuid).job_uuid = None
        session.get(MachineSnapshot, (machine.uuid, "s1")).state = "created"
    rolled = api("post", f"{base}/s1")
    assert rolled.status_code == 202
    assert job(sdc, rolled.get_json()["job_uuid"]).name == "snapshot_rollback"


def test_bad_snapshot_bodies(api: Any, sdc: Any, machine: Machine) -> None:
    base = f"/ops/machines/{machine.uuid}/snapshots"
    assert set(api("post", base, json={}).get_json()["errors"]) == {"name"}
    bad = api("post", base, json={"name": "a b"})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"name"}
    assert set(api("post", base, json={"name": "x", "extra": 1}).get_json()["errors"]) == {
        "extra"}
    assert count(sdc, MachineSnapshot) == 0 and count(sdc, Job) == 0


def test_image_from_machine(api: Any, sdc: Any, machine: Machine) -> None:
    answer = api("post", "/ops/images/from-machine",
                 json={"machine": machine.uuid, "name": "golden", "version": "1"})
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert body["image"]["state"] == "creating" and body["image"]["name"] == "golden"
    assert job(sdc, body["job_uuid"]).params["image_uuid"] == body["image"]["uuid"]
    with sdc.read() as session:
        states = set(session.scalars(select(Image.state)))
    assert states == {"active", "creating"}
    missing = api("post", "/ops/images/from-machine", json={"machine": machine.uuid})
    assert missing.status_code == 422
    assert set(missing.get_json()["errors"]) == {"name", "version"}
