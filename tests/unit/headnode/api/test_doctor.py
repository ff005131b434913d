"""/ops/doctor on the real PostgreSQL: the report, repair, purge of an orphan, bad input."""

from __future__ import annotations

from typing import Any

from headnode.store.models import Job, Machine, Server, new_uuid
from tests.support.jobqueue import RecordingJobQueue
from tests.unit.headnode.api.conftest import make_account, make_image, make_package, make_server
from workflows import nodes

REPORT_TIME = 4_000_000_000.0


def reported(sdc: Any, server: Server, machines: dict[str, str]) -> None:
    with sdc.transaction() as session:
        nodes.apply_status(session, {
            "server_uuid": server.uuid, "pool_size_mb": 1, "pool_used_mb": 0, "ram_mb": 1,
            "ram_free_mb": 1, "timestamp": REPORT_TIME,
            "machines": [{"uuid": u, "state": s} for u, s in machines.items()]})


def test_report_and_repair(api: Any, sdc: Any) -> None:
    server = make_server(sdc)
    owner, package, image = make_account(sdc), make_package(sdc), make_image(sdc)
    with sdc.transaction() as session:
        machine = Machine(alias="drifted", owner_uuid=owner.uuid, package_uuid=package.uuid,
                          image_uuid=image.uuid, server_uuid=server.uuid, state="stopped",
                          ram_mb=1024, disk_mb=10240)
        session.add(machine)
    stray = new_uuid()
    reported(sdc, server, {machine.uuid: "running", stray: "running"})  # the node's state wins
    with sdc.transaction() as session:  # ... and our record drifts from it again
        session.execute(Machine.__table__.update().where(Machine.uuid == machine.uuid)
                        .values(state="stopped"))

    answer = api("get", "/ops/doctor")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["servers"] == 1 and body["skipped"] == []
    found = {(f["kind"], f["machine_uuid"]): f for f in body["findings"]}
    assert set(found) == {("orphan", stray), ("drift", machine.uuid),
                          ("leaked_reservation", machine.uuid)}
    assert found[("orphan", stray)]["operator"] == f"sdc doctor purge {server.uuid} {stray}"

    repaired = api("post", "/ops/doctor/repair").get_json()["findings"]
    assert {f["kind"] for f in repaired if f["repaired"]} == {"drift"}
    after = {f["kind"] for f in api("get", "/ops/doctor").get_json()["findings"]}
    assert after == {"orphan", "leaked_reservation"}


def test_purge(api: Any, sdc: Any, jobqueue: RecordingJobQueue) -> None:
    server = make_server(sdc)
    stray = new_uuid()
    reported(sdc, server, {stray: "running"})
    answer = api("post", "/ops/doctor/purge", json={"server_uuid": server.uuid,
                                                     "machine_uuid": stray})
    assert answer.status_code == 202, answer.get_json()
    job_uuid = answer.get_json()["job_uuid"]
    assert jobqueue.enqueued == [job_uuid]
    with sdc.read() as session:
        job = session.get(Job, job_uuid)
        assert job is not None and job.name == "purge_orphan" and job.machine_uuid == stray

    not_orphan = api("post", "/ops/doctor/purge", json={"server_uuid": server.uuid,
                                                         "machine_uuid": new_uuid()})
    assert not_orphan.status_code == 409 and not_orphan.get_json()["code"] == "NotAnOrphan"
    unknown = api("post", "/ops/doctor/purge", json={"server_uuid": new_uuid(),
                                                     "machine_uuid": stray})
    assert unknown.status_code == 404
    assert len(jobqueue.enqueued) == 1


def test_bad_input_names_the_field(api: Any, jobqueue: RecordingJobQueue) -> None:
    bad = api("post", "/ops/doctor/purge", json={"server_uuid": "nope"})
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]) == {"server_uuid", "machine_uuid"}
    extra = api("post", "/ops/doctor/purge", json={"server_uuid": new_uuid(),
                                                   "machine_uuid": new_uuid(), "force": True})
    assert extra.status_code == 422 and "force" in extra.get_json()["errors"]
    negative = api("get", "/ops/doctor", query_string={"stuck_after": "-1"})
    assert negative.status_code == 422 and "stuck_after" in negative.get_json()["errors"]
    assert jobqueue.enqueued == []
