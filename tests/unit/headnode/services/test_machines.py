"""The machines service on the real PostgreSQL: what create and actions write and enqueue."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from headnode.services import machines as svc
from headnode.services.errors import Conflict, InsufficientCapacity, InvalidArgument, NotFound
from headnode.store.models import Job, Machine, Reservation, new_uuid
from tests.unit.headnode.services.conftest import (
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
    server_row,
    written,
)

CALLER = {"type": "operator"}


def create(ctx: Any, **body: Any) -> dict[str, Any]:
    full = {"owner": "alice", "package": "small", "image": "base-64", **body}
    return svc.create_machine(ctx, full, CALLER)


def load(ctx: Any, model: Any, key: str) -> Any:
    with ctx.read() as session:
        return session.get(model, key)


# -- create -----------------------------------------------------------------------------------


def test_create_writes_machine_reservation_and_job(ctx: Any, fleet: dict[str, Any]) -> None:
    answer = create(ctx, alias="web-1", tags={"role": "web"}, metadata={"k": "v"})
    assert answer["state"] == "provisioning"
    assert answer["server_uuid"] == fleet["server"].uuid
    assert answer["alias"] == "web-1" and answer["tags"] == {"role": "web"}
    assert answer["metadata"] == {"k": "v"}
    assert (answer["ram_mb"], answer["disk_mb"], answer["cpu_cap"]) == (1024, 10240, 100)
    job_uuid = answer["job_uuid"]
    assert ctx.jobs.enqueued == [job_uuid]

    machine = load(ctx, Machine, answer["uuid"])
    assert machine.state == "provisioning" and machine.job_uuid == job_uuid
    assert machine.package_uuid == fleet["package"].uuid
    assert machine.image_uuid == fleet["image"].uuid
    assert machine.owner_uuid == fleet["owner"].uuid

    res = load(ctx, Reservation, answer["uuid"])
    assert res.state == "held" and res.job_uuid == job_uuid
    assert (res.server_uuid, res.ram_mb, res.disk_mb, res.cpu) == (
        fleet["server"].uuid, 1024, 10240, 100)
    server = server_row(ctx, fleet["server"].uuid)
    assert (server.ram_inflight_mb, server.disk_inflight_mb, server.machine_count) == (
        1024, 10240, 1)

    job = load(ctx, Job, job_uuid)
    assert job.name == "provision" and job.execution == "queued"
    assert job.machine_uuid == answer["uuid"] and job.server_uuid == fleet["server"].uuid
    assert job.params["chain"] == ["validate", "ensure_image", "create_machine", "commit_usage"]
    assert job.params["onerror"] == ["remove_from_node", "release_reservation", "release_nics",
                                     "mark_failed"]
    assert job.caller == CALLER
    assert written(ctx) == (1, 1, 1)


def test_create_enqueues_only_after_commit(ctx: Any, fleet: dict[str, Any]) -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    class CheckingQueue:
        def backlog(self) -> int:
            return 0

        def enqueue(self, job_uuid: str) -> None:
            # a new session sees the job and its machine: they were committed before this
            with ctx.sessions() as session:
                job = session.get(Job, job_uuid)
                machine = session.scalars(
                    select(Machine).where(Machine.job_uuid == job_uuid)).one_or_none()
                seen.append((job_uuid, job and job.execution, machine and machine.state))

    ctx.jobs = CheckingQueue()
    answer = create(ctx)
    assert seen == [(answer["job_uuid"], "queued", "provisioning")]


def test_default_alias(ctx: Any, fleet: dict[str, Any]) -> None:
    answer = create(ctx)
    assert answer["alias"] == f"small-{answer['uuid'][:8]}"


def test_resolution_by_uuid(ctx: Any, fleet: dict[str, Any]) -> None:
    answer = create(ctx, owner=fleet["owner"].uuid, package=fleet["package"].uuid,
                    image=fleet["image"].uuid)
    assert answer["owner_uuid"] == fleet["owner"].uuid
    assert answer["package_uuid"] == fleet["package"].uuid
    assert answer["image_uuid"] == fleet["image"].uuid


def test_image_by_name_is_the_newest_active(ctx: Any, fleet: dict[str, Any]) -> None:
    newer = make_image(ctx, name="base-64", version="25.1.0")
    make_image(ctx, name="base-64", version="26.0.0", state="disabled")
    assert create(ctx, image="base-64")["image_uuid"] == newer.uuid


def test_inactive_package(ctx: Any, fleet: dict[str, Any]) -> None:
    make_package(ctx, name="retired", memory=512, disk=1024, active=False)
    with pytest.raises(InvalidArgument) as err:
        create(ctx, package="retired")
    assert err.value.field == "package"
    assert written(ctx) == (0, 0, 0) and ctx.jobs.enqueued == []


def test_inactive_image_by_uuid(ctx: Any, fleet: dict[str, Any]) -> None:
    disabled = make_image(ctx, name="old", state="disabled")
    with pytest.raises(InvalidArgument) as err:
        create(ctx, image=disabled.uuid)
    assert err.value.field == "image"
    assert written(ctx) == (0, 0, 0)


@pytest.mark.parametrize(("field", "value"), [
    ("owner", "nobody"), ("owner", "00000000-0000-4000-8000-000000000000"),
    ("package", "huge"), ("package", "00000000-0000-4000-8000-000000000001"),
    ("image", "nothing"), ("image", "00000000-0000-4000-8000-000000000002"),
    ("server_uuid", "00000000-0000-4000-8000-000000000003"),
])
def test_unknown_things_write_nothing(ctx: Any, fleet: dict[str, Any], field: str,
                                      value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        create(ctx, **{field: value})
    assert err.value.field == field
    assert err.value.details["errors"].keys() == {field}
    assert written(ctx) == (0, 0, 0) and ctx.jobs.enqueued == []
    assert server_row(ctx, fleet["server"].uuid).machine_count == 0


def test_no_room_refuses_with_reasons(ctx: Any, fleet: dict[str, Any]) -> None:
    make_server(ctx, hostname="tiny", ram_mb=1024)  # 870 usable: too small
    make_server(ctx, hostname="new", setup=False)
    make_package(ctx, name="huge", memory=60000, disk=10240)  # cn1 has 55705 usable
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, package="huge")
    assert err.value.reasons == {"lack RAM": 2, "are not set up": 1}
    assert err.value.message == ("no server can fit 58.6 GiB of RAM and 10 GiB of disk: "
                                 "2 lack RAM, 1 are not set up")
    assert err.value.code == "InsufficientCapacity"
    assert written(ctx) == (0, 0, 0) and ctx.jobs.enqueued == []
    assert server_row(ctx, fleet["server"].uuid).ram_inflight_mb == 0


def test_fills_the_server_then_refuses(ctx: Any, fleet: dict[str, Any]) -> None:
    make_package(ctx, name="half", memory=25000, disk=1024)  # 55705 usable: two fit
    create(ctx, package="half")
    create(ctx, package="half")
    with pytest.raises(InsufficientCapacity):
        create(ctx, package="half")
    assert written(ctx) == (2, 2, 2) and len(ctx.jobs.enqueued) == 2


def test_duplicate_alias(ctx: Any, fleet: dict[str, Any]) -> None:
    first = create(ctx, alias="web")
    with pytest.raises(Conflict) as err:
        create(ctx, alias="web")
    assert err.value.code == "DuplicateName"
    assert written(ctx) == (1, 1, 1) and ctx.jobs.enqueued == [first["job_uuid"]]
    # another owner may use the same name
    make_account(ctx, login="bob", email="bob@example.com")
    assert create(ctx, owner="bob", alias="web")["alias"] == "web"


def test_duplicate_alias_is_named_before_capacity(ctx: Any, fleet: dict[str, Any]) -> None:
    make_machine(ctx, fleet, alias="web")
    make_package(ctx, name="huge", memory=600000, disk=10240)  # fits nowhere
    with pytest.raises(Conflict) as err:
        create(ctx, package="huge", alias="web")
    assert err.value.code == "DuplicateName"


def test_a_made_up_alias_that_is_taken_is_refused(ctx: Any, fleet: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_machine(ctx, fleet, alias="small-aaaaaaaa")
    uuids = iter(["aaaaaaaa-0000-4000-8000-000000000000", new_uuid()])
    monkeypatch.setattr(svc, "new_uuid", lambda: next(uuids))
    with pytest.raises(Conflict) as err:
        create(ctx)
    assert err.value.code == "DuplicateName"
    assert "small-aaaaaaaa" in err.value.message


@pytest.mark.parametrize("ended", ["destroyed", "failed"])
def test_alias_free_again_once_the_machine_ended(ctx: Any, fleet: dict[str, Any],
                                                 ended: str) -> None:
    make_machine(ctx, fleet, alias="web", state=ended)
    assert create(ctx, alias="web")["alias"] == "web"


def test_server_uuid_pins_placement(ctx: Any, fleet: dict[str, Any]) -> None:
    roomy = make_server(ctx, hostname="roomy", ram_mb=262144)
    assert create(ctx)["server_uuid"] == roomy.uuid  # the emptiest wins unpinned
    pinned = create(ctx, server_uuid=fleet["server"].uuid)
    assert pinned["server_uuid"] == fleet["server"].uuid
    assert load(ctx, Reservation, pinned["uuid"]).server_uuid == fleet["server"].uuid


def test_pinned_to_a_server_that_cannot_take_it(ctx: Any, fleet: dict[str, Any]) -> None:
    unset = make_server(ctx, hostname="new", setup=False)
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, server_uuid=unset.uuid)
    assert err.value.reasons == {"are not set up": 1}
    assert written(ctx) == (0, 0, 0)


# -- actions and destroy ----------------------------------------------------------------------


@pytest.mark.parametrize(("action", "state"), [
    ("start", "stopped"), ("stop", "running"), ("reboot", "running"), ("start", "running"),
])
def test_action_takes_the_lock_and_enqueues(ctx: Any, fleet: dict[str, Any], action: str,
                                            state: str) -> None:
    machine = make_machine(ctx, fleet, state=state)
    answer = svc.machine_action(ctx, machine.uuid, action, CALLER)
    assert answer["machine_uuid"] == machine.uuid
    assert ctx.jobs.enqueued == [answer["job_uuid"]]
    assert load(ctx, Machine, machine.uuid).job_uuid == answer["job_uuid"]
    job = load(ctx, Job, answer["job_uuid"])
    assert (job.name, job.execution, job.machine_uuid, job.server_uuid) == (
        action, "queued", machine.uuid, fleet["server"].uuid)


@pytest.mark.parametrize(("action", "state"), [
    ("stop", "provisioning"), ("reboot", "stopped"), ("start", "failed"), ("start", "unknown"),
])
def test_action_in_wrong_state(ctx: Any, fleet: dict[str, Any], action: str,
                               state: str) -> None:
    machine = make_machine(ctx, fleet, state=state)
    with pytest.raises(Conflict) as err:
        svc.machine_action(ctx, machine.uuid, action, CALLER)
    assert err.value.code == "InvalidState"
    assert load(ctx, Machine, machine.uuid).job_uuid is None
    assert written(ctx)[1] == 0 and ctx.jobs.enqueued == []


def test_busy_machine(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet, state="running")
    first = svc.machine_action(ctx, machine.uuid, "stop", CALLER)
    for call in (lambda: svc.machine_action(ctx, machine.uuid, "reboot", CALLER),
                 lambda: svc.destroy_machine(ctx, machine.uuid, CALLER)):
        with pytest.raises(Conflict) as err:
            call()
        assert err.value.code == "MachineBusy"
    assert load(ctx, Machine, machine.uuid).job_uuid == first["job_uuid"]
    assert written(ctx)[1] == 1 and ctx.jobs.enqueued == [first["job_uuid"]]


def test_unknown_action(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet)
    with pytest.raises(InvalidArgument) as err:
        svc.machine_action(ctx, machine.uuid, "explode", CALLER)
    assert err.value.field == "action"


@pytest.mark.parametrize("ident", ["not-a-uuid", "00000000-0000-4000-8000-000000000009"])
def test_unknown_machine_is_not_found(ctx: Any, fleet: dict[str, Any], ident: str) -> None:
    with pytest.raises(NotFound):
        svc.machine_action(ctx, ident, "start", CALLER)
    with pytest.raises(NotFound):
        svc.destroy_machine(ctx, ident, CALLER)
    with pytest.raises(NotFound):
        svc.get_machine(ctx, ident)


def test_destroyed_machine_is_not_found(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet, state="destroyed")
    with pytest.raises(NotFound):
        svc.machine_action(ctx, machine.uuid, "start", CALLER)
    with pytest.raises(NotFound):
        svc.destroy_machine(ctx, machine.uuid, CALLER)
    with pytest.raises(NotFound):
        svc.get_machine(ctx, machine.uuid)
    assert written(ctx)[1] == 0


@pytest.mark.parametrize("state", ["running", "stopped", "failed", "unknown"])
def test_destroy_allowed(ctx: Any, fleet: dict[str, Any], state: str) -> None:
    machine = make_machine(ctx, fleet, state=state)
    answer = svc.destroy_machine(ctx, machine.uuid, CALLER)
    job = load(ctx, Job, answer["job_uuid"])
    assert job.name == "destroy" and job.machine_uuid == machine.uuid
    assert ctx.jobs.enqueued == [answer["job_uuid"]]


def test_destroy_while_provisioning_is_refused(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet, state="provisioning")
    with pytest.raises(Conflict) as err:
        svc.destroy_machine(ctx, machine.uuid, CALLER)
    assert err.value.code == "InvalidState"


# -- list and get -----------------------------------------------------------------------------


def test_list_filters_pagination_and_total(ctx: Any, fleet: dict[str, Any]) -> None:
    bob = make_account(ctx, login="bob", email="bob@example.com")
    other = make_server(ctx, hostname="cn2")
    made = [make_machine(ctx, fleet, alias=f"m{i}", state=("running", "stopped")[i % 2])
            for i in range(6)]
    bobs = make_machine(ctx, fleet, alias="b", owner_uuid=bob.uuid, server_uuid=other.uuid)
    gone = make_machine(ctx, fleet, alias="gone", state="destroyed")

    rows, total = svc.list_machines(ctx)
    assert total == 7 and {r["uuid"] for r in rows} == {m.uuid for m in [*made, bobs]}

    rows, total = svc.list_machines(ctx, owner_uuid=fleet["owner"].uuid, state="stopped")
    assert total == 3 and {r["alias"] for r in rows} == {"m1", "m3", "m5"}
    assert svc.list_machines(ctx, server_uuid=other.uuid)[0][0]["uuid"] == bobs.uuid
    assert svc.list_machines(ctx, alias="m2")[1] == 1
    assert svc.list_machines(ctx, package_uuid=fleet["package"].uuid)[1] == 7
    assert svc.list_machines(ctx, image_uuid=new_uuid())[1] == 0
    assert svc.list_machines(ctx, owner_uuid=None)[1] == 7  # None means no filter

    destroyed, total = svc.list_machines(ctx, state="destroyed")
    assert total == 1 and destroyed[0]["uuid"] == gone.uuid

    everything, _ = svc.list_machines(ctx)
    pages = []
    for offset in range(0, 7, 3):
        page, total = svc.list_machines(ctx, limit=3, offset=offset)
        assert total == 7 and len(page) <= 3
        pages.extend(page)
    assert [r["uuid"] for r in pages] == [r["uuid"] for r in everything]
    assert len({r["uuid"] for r in pages}) == 7


def test_get_machine(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet, alias="db", tags={"a": 1})
    answer = svc.get_machine(ctx, machine.uuid)
    assert answer["uuid"] == machine.uuid and answer["alias"] == "db"
    assert answer["tags"] == {"a": 1} and answer["state"] == "running"


def test_concurrent_duplicate_alias_is_refused(ctx: Any, fleet: dict[str, Any]) -> None:
    import threading

    outcome: list[Any] = []

    def second_create() -> None:
        try:
            outcome.append(create(ctx, alias="web"))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    # The first create has written its machine but not committed yet ...
    with ctx.transaction() as first:
        first.add(Machine(alias="web", owner_uuid=fleet["owner"].uuid,
                          package_uuid=fleet["package"].uuid, image_uuid=fleet["image"].uuid,
                          server_uuid=fleet["server"].uuid, state="provisioning",
                          ram_mb=1024, disk_mb=10240))
        first.flush()
        # ... when the second one runs (in its own thread: it may have to wait for it).
        thread = threading.Thread(target=second_create)
        thread.start()
        thread.join(timeout=2)
    thread.join(timeout=30)
    assert not thread.is_alive()
    with ctx.read() as session:
        holding = session.scalars(select(Machine).where(
            Machine.owner_uuid == fleet["owner"].uuid, Machine.alias == "web")).all()
    assert len(holding) == 1
    assert isinstance(outcome[0], Conflict) and outcome[0].code == "DuplicateName"
