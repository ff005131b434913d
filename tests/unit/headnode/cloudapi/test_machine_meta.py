"""Tags, metadata and snapshots of a machine through CloudAPI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from headnode.services import jobs
from headnode.store.models import Job, Machine
from tests.unit.headnode.cloudapi.conftest import World, finish
from tests.unit.workflows.conftest import RecordingTransport, failed, ok, pump
from workflows.engine import Engine


@pytest.fixture
def web(machine_of: Any, world: World) -> str:
    return str(machine_of(world.alice, "web", **{"tag.role": "web"})["id"])


def node_answer(op: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a node that does what it is asked answers (the head node records its own view)."""
    if op == "batch":
        return {"outcomes": [ok(node_answer(o["op"], o["params"])) for o in params["ops"]]}
    if op.startswith(("machine_start", "snapshot_rollback")):
        return {"machine": {"uuid": params["uuid"],
                            "state": "running" if op == "machine_start" else "stopped"}}
    if op == "snapshot_create":
        return {"snapshot": {"name": params["name"], "created_at": 1.7e9, "size_mb": 0}}
    return {}


def run_job(sdc: Any, job_uuid: str) -> str:
    """Play the worker and the node for real: the engine runs the job's steps and each agent
    step gets a node's answer. Returns how the job ended."""
    transport = RecordingTransport(sdc.sessions)
    engine = Engine(sdc.settings, sdc.sessions, transport)
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    while transport.agent:
        _, op, params, reply = transport.agent.popleft()
        engine.on_agent_reply(reply, ok(node_answer(op, params)))
        pump(engine, transport)
    return str(jobs.get_job(sdc, job_uuid)["execution"])


def last_job(sdc: Any, machine_uuid: str) -> dict[str, Any]:
    """The job that holds the machine (the one its last change started)."""
    with sdc.read() as session:
        job_uuid = session.get(Machine, machine_uuid).job_uuid
    assert job_uuid is not None, "no job holds the machine"
    return dict(jobs.get_job(sdc, job_uuid))


def test_tags_change_by_a_job(call: Any, sdc: Any, world: World, web: str,
                              jobqueue: Any) -> None:
    base = f"/my/machines/{web}/tags"
    assert call(world.alice, "get", base).get_json() == {"role": "web"}
    added = call(world.alice, "post", base, json={"env": "prod", "n": 3, "on": True})
    assert added.status_code == 200
    # CloudAPI answers the resultant set at once; the machine has it when the job has run
    assert added.get_json() == {"role": "web", "env": "prod", "n": 3, "on": True}
    job = last_job(sdc, web)
    assert job["name"] == "set_tags" and job["machine_uuid"] == web
    # the job is sent to the worker only once the answer has been written (and closed)
    assert job["uuid"] not in jobqueue.enqueued
    added.close()
    assert jobqueue.enqueued[-1] == job["uuid"]
    assert call(world.alice, "get", base).get_json() == {"role": "web"}
    assert run_job(sdc, job["uuid"]) == "succeeded"
    assert call(world.alice, "get", base).get_json() == added.get_json()
    one = call(world.alice, "get", f"{base}/env")
    assert (one.status_code, one.get_json()) == (200, "prod")
    text = call(world.alice, "get", f"{base}/env", headers={"Accept": "text/plain"})
    assert text.get_data(as_text=True) == "prod"

    assert call(world.alice, "delete", f"{base}/env").status_code == 204
    assert run_job(sdc, last_job(sdc, web)["uuid"]) == "succeeded"
    assert call(world.alice, "get", f"{base}/env").status_code == 404
    with sdc.read() as session:
        jobs_before = session.scalar(select(func.count()).select_from(Job))
    missing = call(world.alice, "delete", f"{base}/nope")
    missing.close()
    assert missing.status_code == 404
    with sdc.read() as session:  # nothing to do: no job, no lock taken
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
        assert session.get(Machine, web).job_uuid is None

    replaced = call(world.alice, "put", base, json={"only": "this"})
    assert replaced.get_json() == {"only": "this"}
    job = last_job(sdc, web)
    assert (job["name"], job["params"]["set_tags"], job["params"]["remove_tags"]) == \
        ("replace_tags", {"only": "this"}, ["n", "on", "role"])
    run_job(sdc, job["uuid"])
    assert call(world.alice, "get", f"/my/machines/{web}").get_json()["tags"] == \
        {"only": "this"}
    assert call(world.alice, "delete", base).status_code == 204
    run_job(sdc, last_job(sdc, web)["uuid"])
    assert call(world.alice, "get", base).get_json() == {}


def test_metadata_audit_entry_is_newer_than_the_answer(call: Any, sdc: Any, world: World,
                                                       web: str, jobqueue: Any) -> None:
    """``triton inst metadata set/delete -w`` waits for an audit entry of the action newer
    than the moment it got the answer: the entry is the job's end."""
    base = f"/my/machines/{web}/metadata"
    # the create gave it the account's key
    keys = {"root_authorized_keys": f"{world.alice.signer.public_line}\n"}
    assert call(world.alice, "get", base).get_json() == keys
    added = call(world.alice, "post", base, json={"motd": "hello", "user-script": "#!/bin/sh"})
    answered = datetime.now(UTC)
    assert added.get_json() == {**keys, "motd": "hello", "user-script": "#!/bin/sh"}
    run_job(sdc, last_job(sdc, web)["uuid"])
    assert call(world.alice, "get", f"{base}/motd").get_json() == "hello"
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert audit[0]["action"] == "set_metadata" and audit[0]["success"] == "yes"
    assert datetime.fromisoformat(audit[0]["time"].replace("Z", "+00:00")) > answered
    assert audit[0]["caller"]["keyId"] == f"/alice/keys/{world.alice.signer.fingerprint}"
    assert audit[0]["parameters"]["set_customer_metadata"] == {
        "motd": "hello", "user-script": "#!/bin/sh"}

    assert call(world.alice, "delete", f"{base}/motd").status_code == 204
    answered = datetime.now(UTC)
    run_job(sdc, last_job(sdc, web)["uuid"])
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert audit[0]["action"] == "remove_metadata"
    assert datetime.fromisoformat(audit[0]["time"].replace("Z", "+00:00")) > answered
    assert call(world.alice, "put", base, json={"a": "b"}).get_json() == {"a": "b"}
    run_job(sdc, last_job(sdc, web)["uuid"])
    assert call(world.alice, "get", f"/my/machines/{web}").get_json()["metadata"] == \
        {"a": "b"}
    assert call(world.alice, "delete", base).status_code == 204
    run_job(sdc, last_job(sdc, web)["uuid"])
    assert call(world.alice, "get", base).get_json() == {}
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert [e["action"] for e in audit][:4] == ["replace_metadata", "replace_metadata",
                                                "remove_metadata", "set_metadata"]


def test_a_change_holds_the_machine_until_its_job_ends(call: Any, sdc: Any, world: World,
                                                       web: str, jobqueue: Any) -> None:
    assert call(world.alice, "post", f"/my/machines/{web}/tags",
                json={"a": "b"}).status_code == 200
    job = last_job(sdc, web)
    for method, path, body in (("post", "metadata", {"x": "y"}), ("delete", "tags/role", None),
                               ("put", "tags", {"c": "d"})):
        busy = call(world.alice, method, f"/my/machines/{web}/{path}", json=body)
        assert (busy.status_code, busy.get_json()["code"]) == (409, "InvalidState")
    stop = call(world.alice, "post", f"/my/machines/{web}", json={"action": "stop"})
    assert stop.status_code == 409
    # another account's machine is not found, busy or not
    assert call(world.bob, "post", f"/my/machines/{web}/tags", json={"a": "c"}) \
        .status_code == 404
    assert last_job(sdc, web)["uuid"] == job["uuid"]
    run_job(sdc, job["uuid"])
    assert call(world.alice, "get", f"/my/machines/{web}/tags").get_json() == \
        {"role": "web", "a": "b"}
    assert call(world.alice, "post", f"/my/machines/{web}/metadata",
                json={"x": "z"}).status_code == 200


def test_a_change_the_node_refuses_changes_nothing(call: Any, sdc: Any, world: World,
                                                   web: str, jobqueue: Any) -> None:
    call(world.alice, "post", f"/my/machines/{web}/tags", json={"a": "b"})
    job_uuid = last_job(sdc, web)["uuid"]
    transport = RecordingTransport(sdc.sessions)
    engine = Engine(sdc.settings, sdc.sessions, transport)
    engine.run_step(job_uuid, 1)
    for _ in range(2):  # the step and its one retry
        pump(engine, transport)
        _, op, _, reply = transport.agent.popleft()
        assert op == "machine_update_metadata"
        engine.on_agent_reply(reply, failed("MachineNotFound", "no such machine"))
    assert jobs.get_job(sdc, job_uuid)["execution"] == "failed"
    assert call(world.alice, "get", f"/my/machines/{web}/tags").get_json() == {"role": "web"}
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert (audit[0]["action"], audit[0]["success"]) == ("set_tags", "no")
    assert call(world.alice, "post", f"/my/machines/{web}/tags",
                json={"a": "again"}).status_code == 200  # the lock was given back


@pytest.mark.parametrize(("kind", "body", "field"), [
    ("tags", {"x": {"nested": True}}, "x"),
    ("tags", {"": "empty"}, "key"),
    ("metadata", {"n": 3}, "n"),
    ("metadata", {"credentials": "mine"}, "credentials"),
    ("metadata", {"a,b": "x"}, "a,b"),  # vmadm could never remove it
    ("tags", {"a,b": "x"}, "a,b"),
    ("tags", ["not", "an", "object"], "body"),
])
def test_bad_tag_and_metadata_bodies(call: Any, world: World, web: str, kind: str,
                                     body: Any, field: str) -> None:
    base = f"/my/machines/{web}/{kind}"
    before = call(world.alice, "get", base).get_json()
    answer = call(world.alice, "post", base, json=body)
    assert answer.status_code in (400, 409), answer.get_json()
    assert answer.get_json()["code"] in ("InvalidArgument", "BadRequest")
    assert field in answer.get_json()["message"]
    assert call(world.alice, "get", base).get_json() == before


def test_tags_wait_for_a_busy_machine(call: Any, sdc: Any, world: World, web: str) -> None:
    assert call(world.alice, "post", f"/my/machines/{web}", json={"action": "stop"}) \
        .status_code == 202
    busy = call(world.alice, "post", f"/my/machines/{web}/tags", json={"a": "b"})
    assert busy.status_code == 409
    assert busy.get_json()["code"] == "InvalidState"
    finish(sdc, web, state="stopped")
    assert call(world.alice, "get", f"/my/machines/{web}/tags").get_json() == {"role": "web"}


def test_snapshots_create_list_get_start_delete(call: Any, sdc: Any, world: World, web: str,
                                                jobqueue: Any) -> None:
    base = f"/my/machines/{web}/snapshots"
    created = call(world.alice, "post", base, json={"name": "before-upgrade"})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["name"] == "before-upgrade"
    assert created.get_json()["state"] == "queued"
    assert created.headers["Location"].endswith("/snapshots/before-upgrade")
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "snapshot_create"
    finish(sdc, web)
    listed = call(world.alice, "get", base).get_json()
    assert [s["name"] for s in listed] == ["before-upgrade"]
    got = call(world.alice, "get", f"{base}/before-upgrade")
    assert got.status_code == 200
    assert call(world.alice, "get", f"{base}/nope").status_code == 404

    unnamed = call(world.alice, "post", base)
    assert unnamed.status_code == 201
    assert unnamed.get_json()["name"]
    finish(sdc, web)
    bad = call(world.alice, "post", base, json={"name": "no spaces"})
    assert bad.status_code == 409
    assert "name" in bad.get_json()["message"]


def test_start_from_snapshot_and_delete_start_jobs(call: Any, sdc: Any, world: World,
                                                   web: str, jobqueue: Any) -> None:
    from headnode.store.models import MachineSnapshot

    base = f"/my/machines/{web}/snapshots"
    call(world.alice, "post", base, json={"name": "s1"})
    finish(sdc, web)
    with sdc.transaction() as session:  # the node made it (the worker's part)
        session.get(MachineSnapshot, (web, "s1")).state = "created"
    assert call(world.alice, "post", f"{base}/s1").status_code == 202
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "snapshot_start"
    finish(sdc, web)
    assert call(world.alice, "delete", f"{base}/s1").status_code == 204
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "snapshot_delete"
    finish(sdc, web)
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert [e["action"] for e in audit][:3] == ["delete_snapshot", "rollback_snapshot",
                                                "create_snapshot"]


def test_start_from_snapshot_ends_with_a_stopped_machine_running(
        call: Any, sdc: Any, world: World, web: str, jobqueue: Any) -> None:
    """CloudAPI's StartMachineFromSnapshot (``triton inst start --snapshot=NAME -w`` waits
    for ``running``): the rollback and a start travel to the node in one message."""
    base = f"/my/machines/{web}/snapshots"
    call(world.alice, "post", base, json={"name": "s1"})
    run_job(sdc, last_job(sdc, web)["uuid"])
    assert call(world.alice, "get", f"{base}/s1").get_json()["state"] == "created"
    call(world.alice, "post", f"/my/machines/{web}", json={"action": "stop"})
    finish(sdc, web, state="stopped")
    assert call(world.alice, "post", f"{base}/s1").status_code == 202
    job = last_job(sdc, web)
    transport = RecordingTransport(sdc.sessions)
    engine = Engine(sdc.settings, sdc.sessions, transport)
    engine.run_step(job["uuid"], 1)
    pump(engine, transport)
    _, op, params, reply = transport.agent.popleft()
    assert (op, [o["op"] for o in params["ops"]]) == \
        ("batch", ["snapshot_rollback", "machine_start"])
    engine.on_agent_reply(reply, ok(node_answer(op, params)))
    pump(engine, transport)
    assert jobs.get_job(sdc, job["uuid"])["execution"] == "succeeded"
    assert call(world.alice, "get", f"/my/machines/{web}").get_json()["state"] == "running"
