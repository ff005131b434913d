"""Resize, rename, snapshots and create-image-from-machine, each started by its service and
driven through the real engine on PostgreSQL, with agent steps answered by hand."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from headnode.imagestore import ImageStore
from headnode.placement.allocator import NOT_ENOUGH_RAM
from headnode.services import images as image_svc
from headnode.services import machine_meta as meta_svc
from headnode.services import machines as svc
from headnode.services import snapshots as snap_svc
from headnode.services.errors import Conflict, InsufficientCapacity, InvalidArgument, NotFound
from headnode.store.models import Image, Job, MachineSnapshot, Reservation
from tests.unit.headnode.services.conftest import server_row
from tests.unit.workflows.conftest import (
    RecordingTransport,
    failed,
    get_job,
    get_machine,
    make_package,
    ok,
    pump,
)
from workflows.engine import Engine

CALLER = {"type": "operator"}


def next_agent_call(engine: Engine, transport: RecordingTransport) -> tuple[Any, ...]:
    pump(engine, transport)
    assert transport.agent, "the job is not waiting for an agent"
    return transport.agent.popleft()


def answer(engine: Engine, transport: RecordingTransport, outcome: dict[str, Any]) -> None:
    """Answer the agent call sent last (the one the job waits for)."""
    reply = [m for m in transport.sent if m[0] == "agent"][-1][4]
    engine.on_agent_reply(reply, outcome)
    pump(engine, transport)


def status(uuid: str, state: str = "running") -> dict[str, Any]:
    return {"machine": {"uuid": uuid, "state": state}}


def result_of(machine_uuid: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a node that does everything it is asked answers."""
    if op == "batch":
        return {"outcomes": [ok(result_of(machine_uuid, o["op"], o["params"]))
                             for o in params["ops"]]}
    return status(machine_uuid) if op == "machine_create" else {}


def provision(ctx: Any, engine: Engine, transport: RecordingTransport,
              alias: str = "web") -> dict[str, Any]:
    machine = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64", "alias": alias}, CALLER)
    engine.run_step(machine["job_uuid"], 1)
    while get_job(ctx, machine["job_uuid"]).execution not in ("succeeded", "failed"):
        _, op, params, reply = next_agent_call(engine, transport)
        engine.on_agent_reply(reply, ok(result_of(machine["uuid"], op, params)))
        pump(engine, transport)
    assert get_job(ctx, machine["job_uuid"]).execution == "succeeded"
    return machine


def start(engine: Engine, transport: RecordingTransport, job_uuid: str) -> tuple[Any, ...]:
    engine.run_step(job_uuid, 1)
    return next_agent_call(engine, transport)


def usage(ctx: Any, server_uuid: str) -> dict[str, int]:
    s = server_row(ctx, server_uuid)
    return {"ram_inflight": s.ram_inflight_mb, "disk_inflight": s.disk_inflight_mb,
            "cpu_inflight": s.cpu_inflight, "ram": s.ram_committed_mb,
            "disk": s.disk_committed_mb, "cpu": s.cpu_committed, "count": s.machine_count}


def jobs_of(ctx: Any, machine_uuid: str) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(Job.name).where(Job.machine_uuid == machine_uuid)
                                    .order_by(Job.created_at)))


@pytest.fixture
def sizes(ctx: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    return {"large": make_package(ctx, name="large", memory=4096, disk=40960, cpu_cap=200,
                                  vcpus=2),
            "tiny": make_package(ctx, name="tiny", memory=512, disk=5120, cpu_cap=50),
            "huge": make_package(ctx, name="huge", memory=60000, disk=20480, cpu_cap=100),
            "uncapped": make_package(ctx, name="uncapped", memory=1024, disk=10240)}


# -- resize ---------------------------------------------------------------------------------


def test_resize_up_holds_growth_then_commits_it(ctx: Any, engine: Engine,
                                                transport: RecordingTransport,
                                                fleet: dict[str, Any],
                                                sizes: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    server = fleet["server"].uuid
    started = svc.resize_machine(ctx, machine["uuid"], "large", CALLER)
    assert usage(ctx, server) == {"ram_inflight": 3072, "disk_inflight": 30720,
                                  "cpu_inflight": 100, "ram": 1024, "disk": 10240,
                                  "cpu": 100, "count": 1}
    target, op, params, _ = start(engine, transport, started["job_uuid"])
    assert (target, op) == (server, "machine_update")
    assert params == {"uuid": machine["uuid"], "ram_mb": 4096, "disk_mb": 40960,
                      "cpu_cap": 200, "vcpus": 2, "max_lwps": 4000}
    answer(engine, transport, ok(status(machine["uuid"])))

    job = get_job(ctx, started["job_uuid"])
    assert job.execution == "succeeded", job.chain_results
    assert job.chain_results[0]["result"]["package"] == "large"
    row = get_machine(ctx, machine["uuid"])
    assert (row.ram_mb, row.disk_mb, row.cpu_cap, row.vcpus) == (4096, 40960, 200, 2)
    assert row.package_uuid == sizes["large"].uuid and row.job_uuid is None
    assert usage(ctx, server) == {"ram_inflight": 0, "disk_inflight": 0, "cpu_inflight": 0,
                                  "ram": 4096, "disk": 40960, "cpu": 200, "count": 1}
    with ctx.read() as session:
        res = session.get(Reservation, machine["uuid"])
        assert (res.ram_mb, res.disk_mb, res.cpu) == (4096, 40960, 200)

    # the reservation follows the size: destroying gives back all of it
    destroy = svc.destroy_machine(ctx, machine["uuid"], CALLER)
    start(engine, transport, destroy["job_uuid"])
    answer(engine, transport, ok(status(machine["uuid"], "destroyed")))
    assert usage(ctx, server) == {"ram_inflight": 0, "disk_inflight": 0, "cpu_inflight": 0,
                                  "ram": 0, "disk": 0, "cpu": 0, "count": 0}


def test_resize_down_frees_room(ctx: Any, engine: Engine, transport: RecordingTransport,
                                fleet: dict[str, Any], sizes: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    started = svc.resize_machine(ctx, machine["uuid"], sizes["tiny"].uuid, CALLER)
    assert usage(ctx, fleet["server"].uuid)["ram_inflight"] == 0  # shrinking holds nothing
    start(engine, transport, started["job_uuid"])
    answer(engine, transport, ok(status(machine["uuid"], "stopped")))
    assert get_job(ctx, started["job_uuid"]).execution == "succeeded"
    assert usage(ctx, fleet["server"].uuid) == {
        "ram_inflight": 0, "disk_inflight": 0, "cpu_inflight": 0, "ram": 512, "disk": 5120,
        "cpu": 50, "count": 1}
    row = get_machine(ctx, machine["uuid"])
    assert (row.ram_mb, row.state) == (512, "stopped")


def test_failed_resize_gives_the_growth_back(ctx: Any, engine: Engine,
                                             transport: RecordingTransport,
                                             fleet: dict[str, Any],
                                             sizes: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    started = svc.resize_machine(ctx, machine["uuid"], "large", CALLER)
    start(engine, transport, started["job_uuid"])
    answer(engine, transport, failed("QuotaBelowUsage", "the pool refused"))
    job = get_job(ctx, started["job_uuid"])
    assert job.execution == "failed"
    assert job.error == {"step": "update_machine", "code": "QuotaBelowUsage",
                         "message": "the pool refused"}
    assert [e["name"] for e in job.onerror_results] == ["release_growth"]
    assert usage(ctx, fleet["server"].uuid) == {
        "ram_inflight": 0, "disk_inflight": 0, "cpu_inflight": 0, "ram": 1024,
        "disk": 10240, "cpu": 100, "count": 1}
    row = get_machine(ctx, machine["uuid"])
    assert (row.ram_mb, row.package_uuid, row.job_uuid) == (1024, fleet["package"].uuid, None)


def test_resize_that_does_not_fit_is_refused_and_writes_nothing(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any],
        sizes: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    before = usage(ctx, fleet["server"].uuid)
    with pytest.raises(InsufficientCapacity) as err:
        svc.resize_machine(ctx, machine["uuid"], "huge", CALLER)
    assert err.value.reasons == {NOT_ENOUGH_RAM: 1}
    assert usage(ctx, fleet["server"].uuid) == before
    assert get_machine(ctx, machine["uuid"]).job_uuid is None
    assert jobs_of(ctx, machine["uuid"]) == ["provision"]
    for package in ("no-such-package", "uncapped"):  # unknown; capped -> uncapped
        with pytest.raises(InvalidArgument) as bad:
            svc.resize_machine(ctx, machine["uuid"], package, CALLER)
        assert bad.value.field == "package"
    assert usage(ctx, fleet["server"].uuid) == before
    assert jobs_of(ctx, machine["uuid"]) == ["provision"]


def test_one_job_per_machine(ctx: Any, engine: Engine, transport: RecordingTransport,
                             fleet: dict[str, Any], sizes: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    svc.resize_machine(ctx, machine["uuid"], "large", CALLER)
    for call in (lambda: svc.resize_machine(ctx, machine["uuid"], "tiny", CALLER),
                 lambda: svc.rename_machine(ctx, machine["uuid"], "db", CALLER),
                 lambda: snap_svc.create_snapshot(ctx, machine["uuid"], "s1", CALLER),
                 lambda: image_svc.create_image_from_machine(ctx, machine["uuid"], "img", "1",
                                                             CALLER)):
        with pytest.raises(Conflict) as err:
            call()
        assert err.value.code == "MachineBusy"
    # the refused resize did not hold anything on top of the running one
    assert usage(ctx, fleet["server"].uuid)["ram_inflight"] == 3072
    with ctx.read() as session:
        assert session.scalar(select(func.count()).select_from(MachineSnapshot)) == 0
        assert session.scalar(select(func.count()).select_from(Image)) == 1


# -- rename ---------------------------------------------------------------------------------


def test_rename(ctx: Any, engine: Engine, transport: RecordingTransport,
                fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    started = svc.rename_machine(ctx, machine["uuid"], "db-1", CALLER)
    assert get_machine(ctx, machine["uuid"]).alias == "db-1"  # held at once
    _, op, params, _ = start(engine, transport, started["job_uuid"])
    assert (op, params) == ("machine_update", {"uuid": machine["uuid"], "alias": "db-1"})
    answer(engine, transport, ok(status(machine["uuid"])))
    assert get_job(ctx, started["job_uuid"]).execution == "succeeded"
    assert get_machine(ctx, machine["uuid"]).alias == "db-1"
    # the old name is free again
    provision(ctx, engine, transport, alias="web")


def test_failed_rename_gives_the_old_name_back(ctx: Any, engine: Engine,
                                               transport: RecordingTransport,
                                               fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    started = svc.rename_machine(ctx, machine["uuid"], "db-1", CALLER)
    start(engine, transport, started["job_uuid"])
    answer(engine, transport, failed("UpdateFailed", "no"))
    job = get_job(ctx, started["job_uuid"])
    assert job.execution == "failed"
    assert job.onerror_results[0]["result"] == {"alias": "web"}
    assert get_machine(ctx, machine["uuid"]).alias == "web"


def test_rename_to_a_taken_or_bad_name_is_refused(ctx: Any, engine: Engine,
                                                  transport: RecordingTransport,
                                                  fleet: dict[str, Any]) -> None:
    first = provision(ctx, engine, transport, alias="web")
    provision(ctx, engine, transport, alias="db")
    with pytest.raises(Conflict) as err:
        svc.rename_machine(ctx, first["uuid"], "db", CALLER)
    assert err.value.code == "DuplicateName"
    with pytest.raises(InvalidArgument) as bad:
        svc.rename_machine(ctx, first["uuid"], "-bad name", CALLER)
    assert bad.value.field == "alias"
    row = get_machine(ctx, first["uuid"])
    assert (row.alias, row.job_uuid) == ("web", None)
    assert jobs_of(ctx, first["uuid"]) == ["provision"]


# -- snapshots ------------------------------------------------------------------------------


def snapshot_result(name: str) -> dict[str, Any]:
    return {"snapshot": {"name": name, "created_at": 1.7e9, "size_mb": 0}}


def test_snapshot_create_rollback_delete(ctx: Any, engine: Engine,
                                         transport: RecordingTransport,
                                         fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    made = snap_svc.create_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)
    assert made["snapshot"]["state"] == "queued" and made["snapshot"]["name"] == "before-upgrade"
    _, op, params, _ = start(engine, transport, made["job_uuid"])
    assert (op, params) == ("snapshot_create", {"uuid": machine["uuid"],
                                                "name": "before-upgrade"})
    answer(engine, transport, ok(snapshot_result("before-upgrade")))
    assert snap_svc.get_snapshot(ctx, machine["uuid"], "before-upgrade")["state"] == "created"
    assert [s["name"] for s in snap_svc.list_snapshots(ctx, machine["uuid"])] == [
        "before-upgrade"]
    with pytest.raises(Conflict):
        snap_svc.create_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)

    rolled = snap_svc.rollback_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)
    _, op, params, _ = start(engine, transport, rolled["job_uuid"])
    assert (op, params) == ("snapshot_rollback", {"uuid": machine["uuid"],
                                                  "name": "before-upgrade"})
    answer(engine, transport, ok(status(machine["uuid"], "stopped")))
    assert get_job(ctx, rolled["job_uuid"]).execution == "succeeded"
    assert get_machine(ctx, machine["uuid"]).state == "stopped"  # an operator's rollback

    # CloudAPI's start from a snapshot: then the machine starts, in the same message
    started = snap_svc.start_from_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)
    _, op, params, _ = start(engine, transport, started["job_uuid"])
    assert (op, params) == ("batch", {"ops": [
        {"op": "snapshot_rollback", "params": {"uuid": machine["uuid"],
                                               "name": "before-upgrade"}},
        {"op": "machine_start", "params": {"uuid": machine["uuid"]}}]})
    answer(engine, transport, ok({"outcomes": [ok(status(machine["uuid"], "stopped")),
                                               ok(status(machine["uuid"], "running"))]}))
    assert get_job(ctx, started["job_uuid"]).execution == "succeeded"
    assert get_machine(ctx, machine["uuid"]).state == "running"

    deleted = snap_svc.delete_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)
    _, op, _, _ = start(engine, transport, deleted["job_uuid"])
    assert op == "snapshot_delete"
    answer(engine, transport, ok({"deleted": "before-upgrade"}))
    assert snap_svc.list_snapshots(ctx, machine["uuid"]) == []
    with pytest.raises(NotFound):
        snap_svc.get_snapshot(ctx, machine["uuid"], "before-upgrade")
    with pytest.raises(NotFound):
        snap_svc.rollback_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)
    # a deleted name may be used again
    again = snap_svc.create_snapshot(ctx, machine["uuid"], "before-upgrade", CALLER)
    assert again["snapshot"]["state"] == "queued"


def test_metadata_changes_are_jobs_that_the_node_applies_first(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    owner = fleet["owner"].uuid
    answer_now = meta_svc.add(ctx, machine["uuid"], owner, "metadata",
                              {"motd": "hi", "user-script": "true"}, CALLER)
    assert answer_now == {"motd": "hi", "user-script": "true"}
    job_uuid = get_machine(ctx, machine["uuid"]).job_uuid
    assert job_uuid is not None and get_job(ctx, job_uuid).name == "set_metadata"
    with pytest.raises(Conflict):  # one job per machine
        meta_svc.add(ctx, machine["uuid"], owner, "tags", {"a": "b"}, CALLER)
    _, op, params, _ = start(engine, transport, job_uuid)
    assert (op, params) == ("machine_update_metadata", {
        "uuid": machine["uuid"], "set_customer_metadata": {"motd": "hi", "user-script": "true"},
        "remove_customer_metadata": []})
    assert get_machine(ctx, machine["uuid"]).customer_metadata == {}  # not before the node
    answer(engine, transport, ok({"tags": {}, "customer_metadata": params[
        "set_customer_metadata"]}))
    done = get_job(ctx, job_uuid)
    assert done.execution == "succeeded" and done.finished_at is not None
    assert get_machine(ctx, machine["uuid"]).customer_metadata == answer_now
    assert get_machine(ctx, machine["uuid"]).job_uuid is None

    meta_svc.replace(ctx, machine["uuid"], owner, "metadata", {"motd": "bye"}, CALLER)
    job_uuid = get_machine(ctx, machine["uuid"]).job_uuid
    _, op, params, _ = start(engine, transport, job_uuid)
    assert (params["set_customer_metadata"], params["remove_customer_metadata"]) == \
        ({"motd": "bye"}, ["user-script"])
    answer(engine, transport, ok({}))
    assert get_machine(ctx, machine["uuid"]).customer_metadata == {"motd": "bye"}
    with pytest.raises(NotFound):  # another account's machine
        meta_svc.delete_all(ctx, machine["uuid"], "00000000-0000-0000-0000-000000000000",
                            "tags", CALLER)


def test_rollback_forgets_the_newer_snapshots_the_node_destroyed(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    for name in ("old", "new"):
        made = snap_svc.create_snapshot(ctx, machine["uuid"], name, CALLER)
        start(engine, transport, made["job_uuid"])
        answer(engine, transport, ok(snapshot_result(name)))
    rolled = snap_svc.rollback_snapshot(ctx, machine["uuid"], "old", CALLER)
    start(engine, transport, rolled["job_uuid"])
    answer(engine, transport, ok(status(machine["uuid"], "running")))
    assert [s["name"] for s in snap_svc.list_snapshots(ctx, machine["uuid"])] == ["old"]


def test_failed_snapshot_is_marked_and_its_name_reusable(ctx: Any, engine: Engine,
                                                         transport: RecordingTransport,
                                                         fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    made = snap_svc.create_snapshot(ctx, machine["uuid"], "s1", CALLER)
    start(engine, transport, made["job_uuid"])
    answer(engine, transport, failed("SnapshotFailed", "pool full"))
    assert get_job(ctx, made["job_uuid"]).execution == "failed"
    assert snap_svc.get_snapshot(ctx, machine["uuid"], "s1")["state"] == "failed"
    with pytest.raises(Conflict) as err:
        snap_svc.rollback_snapshot(ctx, machine["uuid"], "s1", CALLER)
    assert err.value.code == "InvalidState"
    assert get_machine(ctx, machine["uuid"]).job_uuid is None
    again = snap_svc.create_snapshot(ctx, machine["uuid"], "s1", CALLER)
    start(engine, transport, again["job_uuid"])
    answer(engine, transport, ok(snapshot_result("s1")))
    assert snap_svc.get_snapshot(ctx, machine["uuid"], "s1")["state"] == "created"


def test_bad_snapshot_names_and_machines(ctx: Any, engine: Engine,
                                        transport: RecordingTransport,
                                        fleet: dict[str, Any]) -> None:
    machine = provision(ctx, engine, transport)
    for name in ("", "-x", "a b", "x" * 65, "a/b"):
        with pytest.raises(InvalidArgument) as err:
            snap_svc.create_snapshot(ctx, machine["uuid"], name, CALLER)
        assert err.value.field == "name"
    with pytest.raises(NotFound):
        snap_svc.list_snapshots(ctx, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound):
        snap_svc.create_snapshot(ctx, "nope", "s1", CALLER)
    assert jobs_of(ctx, machine["uuid"]) == ["provision"]


# -- images ---------------------------------------------------------------------------------


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_provision_of_an_image_with_a_file_sends_a_signed_source(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any]) -> None:
    data = b"rootfs"
    files = [{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
              "compression": "gzip"}]
    with ctx.transaction() as session:
        session.get(Image, fleet["image"].uuid).files = files
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64"}, CALLER)
    server, op, params, _ = start(engine, transport, created["job_uuid"])
    assert op == "batch" and params["ops"][0]["op"] == "image_ensure_present"
    spec = params["ops"][0]["params"]["image"]
    assert spec["files"] == files
    assert urlsplit(spec["source"]["url"]).path == f"/images/{fleet['image'].uuid}/file"
    store = ImageStore(ctx.settings)
    assert store.verify("GET", fleet["image"].uuid, query(spec["source"]["url"])) == server


def test_provision_of_an_image_without_a_file_sends_no_source(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any]) -> None:
    created = svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                       "image": "base-64"}, CALLER)
    _, _, params, _ = start(engine, transport, created["job_uuid"])
    assert params["ops"][0]["params"]["image"]["source"] is None


def begin_image(ctx: Any, engine: Engine, transport: RecordingTransport
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    machine = provision(ctx, engine, transport)
    made = image_svc.create_image_from_machine(ctx, machine["uuid"], "web-golden", "1.0",
                                               CALLER, description="from web")
    image = made["image"]
    assert image["state"] == "creating" and image["owner_uuid"] == machine["owner_uuid"]
    assert image["os"] == "smartos" and image["public"] is False
    server, op, params, _ = start(engine, transport, made["job_uuid"])
    assert (server, op) == (machine["server_uuid"], "image_create_from_machine")
    assert params["uuid"] == machine["uuid"] and params["image"]["uuid"] == image["uuid"]
    store = ImageStore(ctx.settings)
    assert store.verify("PUT", image["uuid"], query(params["upload"]["url"])) == server
    return machine, made, params


@pytest.mark.parametrize("made_format", [None, "zfs"])
def test_create_image_activates_it_when_the_upload_matches(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any], made_format: str | None) -> None:
    machine, made, _ = begin_image(ctx, engine, transport)
    image_uuid = made["image"]["uuid"]
    data = b"an archive of the machine" * 100
    image_svc.receive_node_upload(ctx, image_uuid, [data])
    sha = hashlib.sha256(data).hexdigest()
    # the file's format as its node reports it (a SmartOS node: a ZFS send stream); an older
    # agent reports none, and the entry has none (a tarball)
    said = {"format": made_format} if made_format else {}
    answer(engine, transport, ok({"image": {"uuid": image_uuid, "size": len(data),
                                            "sha256": sha, "compression": "gzip", **said}}))
    assert get_job(ctx, made["job_uuid"]).execution == "succeeded"
    image = image_svc.get_image(ctx, image_uuid)
    assert image.state == "active"
    assert image.files == [{"sha256": sha, "size": len(data), "compression": "gzip", **said}]
    assert get_machine(ctx, machine["uuid"]).job_uuid is None
    # and machines can be made of it
    svc.create_machine(ctx, {"owner": "alice", "package": "small", "image": image_uuid},
                       CALLER)


@pytest.mark.parametrize("upload", [True, False])
def test_create_image_fails_cleanly(ctx: Any, engine: Engine, transport: RecordingTransport,
                                    fleet: dict[str, Any], upload: bool) -> None:
    _, made, _ = begin_image(ctx, engine, transport)
    image_uuid = made["image"]["uuid"]
    if upload:
        image_svc.receive_node_upload(ctx, image_uuid, [b"truncated"])
    answer(engine, transport, ok({"image": {"uuid": image_uuid, "size": 999,
                                            "sha256": "0" * 64, "compression": "gzip"}}))
    job = get_job(ctx, made["job_uuid"])
    assert job.execution == "failed"
    assert (job.error or {}).get("code") == ("ImageMismatch" if upload else "ImageNotUploaded")
    assert image_svc.get_image(ctx, image_uuid).state == "failed"
    assert not ImageStore(ctx.settings).has_file(image_uuid)


def test_create_image_name_must_be_free(ctx: Any, engine: Engine,
                                        transport: RecordingTransport,
                                        fleet: dict[str, Any]) -> None:
    _, made, _ = begin_image(ctx, engine, transport)
    answer(engine, transport, failed())
    machine_uuid = str(get_job(ctx, made["job_uuid"]).machine_uuid)
    with pytest.raises(Conflict) as err:
        image_svc.create_image_from_machine(ctx, machine_uuid, "web-golden", "1.0", CALLER)
    assert err.value.code == "DuplicateName"
    with pytest.raises(InvalidArgument):
        image_svc.create_image_from_machine(ctx, machine_uuid, "", "1.0", CALLER)
