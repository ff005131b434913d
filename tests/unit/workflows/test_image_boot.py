"""What a provision tells the node about how its machine boots (the image's requirements,
tags and init; the machine's init and metadata), and the metadata serial: a node's map (its
reply to a change, or a guest's own change) is applied only if newer than the last one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from headnode.services import machine_meta as meta_svc
from headnode.services import machines as svc
from headnode.services import node_metadata
from headnode.store.models import Machine
from schemas.agent import EnsureImageSchema, MachineSpecSchema
from tests.unit.workflows.conftest import (
    RecordingTransport,
    get_job,
    get_machine,
    make_image,
    ok,
    pump,
)
from workflows.engine import Engine

CALLER = {"type": "operator"}
INIT = {"kind": "os", "args": ["/usr/sbin/sdc-init"], "env": [], "workdir": "/",
        "stop_signal": "SIGTERM", "stop_timeout": 30}


def provision_messages(ctx: Any, engine: Engine, transport: RecordingTransport,
                       image: str, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image_ensure_present and machine_create params a provision sends (one batch)."""
    machine = svc.create_machine(ctx, {"owner": "alice", "package": "small", "image": image,
                                       **body}, CALLER)
    engine.run_step(machine["job_uuid"], 1)
    pump(engine, transport)
    _, op, params, _ = transport.agent.popleft()
    assert op == "batch"
    (ensure_op, ensure), (create_op, spec) = ((o["op"], o["params"]) for o in params["ops"])
    assert (ensure_op, create_op) == ("image_ensure_present", "machine_create")
    return ensure, spec


def test_the_node_is_told_the_images_boot_and_the_machines_metadata(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    make_image(ctx, name="debian", os="linux", type="lx-dataset",
               requirements={"min_ram": 256}, tags={"default_user": "debian"}, init=INIT)
    ensure, spec = provision_messages(
        ctx, engine, transport, "debian",
        metadata={"user-script": "#!/bin/sh\ntrue\n", "user-data": "x"})
    image = EnsureImageSchema().load(ensure)["image"]  # as the agent takes it
    assert (image["requirements"], image["tags"], image["init"]) == (
        {"min_ram": 256}, {"default_user": "debian"}, INIT)
    machine = MachineSpecSchema().load(spec)
    assert machine["init"] == INIT
    assert machine["metadata"] == {"user-script": "#!/bin/sh\ntrue\n", "user-data": "x"}


def test_an_image_without_init_boots_the_nodes_default(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    ensure, spec = provision_messages(ctx, engine, transport, "base-64")
    assert EnsureImageSchema().load(ensure)["image"]["init"] is None
    assert MachineSpecSchema().load(spec)["init"] is None


# -- the serial rule ------------------------------------------------------------------------

@pytest.mark.parametrize(("serial", "applied", "newer"), [
    (5, None, True),    # nothing applied yet
    (None, 5, True),    # a node that keeps no serial: as before serials
    (6, 5, True),
    (5, 5, False),      # the same change again
    (4, 5, False),      # older than what was applied
])
def test_is_newer(serial: int | None, applied: int | None, newer: bool) -> None:
    assert node_metadata.is_newer(serial, applied) is newer


def running_machine(ctx: Any, fleet: dict[str, Any], serial: int | None = None,
                    **attrs: Any) -> Machine:
    from tests.unit.headnode.api.conftest import make_machine

    return make_machine(ctx, fleet, customer_metadata={"a": "old"}, metadata_serial=serial,
                        **attrs)


def guest_event(ctx: Any, raw: dict[str, Any]) -> bool:
    with ctx.transaction() as session:
        return node_metadata.apply_guest_change(session, raw)


def event(machine: Machine, serial: Any, server_uuid: str | None = None,
          **values: str) -> dict[str, Any]:
    return {"server_uuid": server_uuid or machine.server_uuid, "uuid": machine.uuid,
            "customer_metadata": values, "serial": serial}


def stored(ctx: Any, machine: Machine) -> tuple[dict[str, Any], int | None]:
    row = get_machine(ctx, machine.uuid)
    return row.customer_metadata, row.metadata_serial


@pytest.mark.parametrize(("before", "serial", "after"), [
    (None, 0, ({"a": "new"}, 0)),
    (3, 4, ({"a": "new"}, 4)),
    (3, 3, ({"a": "old"}, 3)),
    (3, 2, ({"a": "old"}, 3)),
])
def test_a_guests_change_applies_only_if_newer(ctx: Any, fleet: dict[str, Any],
                                               before: int | None, serial: int,
                                               after: tuple[dict[str, Any], int]) -> None:
    machine = running_machine(ctx, fleet, serial=before)
    applied = guest_event(ctx, event(machine, serial, a="new"))
    assert applied is (after == ({"a": "new"}, serial))
    assert stored(ctx, machine) == after


def test_stray_and_bad_events_are_dropped(ctx: Any, fleet: dict[str, Any],
                                          caplog: pytest.LogCaptureFixture) -> None:
    from tests.unit.headnode.api.conftest import make_server

    machine = running_machine(ctx, fleet)
    other = make_server(ctx, hostname="cn2")
    gone = running_machine(ctx, fleet, alias="gone", state="destroyed")
    with caplog.at_level(logging.INFO, logger="headnode.services.node_metadata"):
        assert not guest_event(ctx, event(machine, 1, server_uuid=other.uuid, a="x"))
        assert not guest_event(ctx, event(gone, 1, a="x"))
        assert not guest_event(ctx, {**event(machine, 1, a="x"),
                                     "uuid": "00000000-0000-0000-0000-000000000000"})
        for bad in ({**event(machine, -1, a="x")}, {**event(machine, "one", a="x")},
                    {"uuid": machine.uuid}):
            assert not guest_event(ctx, bad)
    assert "does not parse" in caplog.text
    assert stored(ctx, machine) == ({"a": "old"}, None)
    assert stored(ctx, gone) == ({"a": "old"}, None)


# -- a node's reply to a change -------------------------------------------------------------

def run_metadata_job(ctx: Any, engine: Engine, transport: RecordingTransport,
                     machine: Machine, node_result: dict[str, Any], kind: Any = "metadata",
                     change: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``kind`` change (metadata ``b=set`` unless told) through the job engine, the node
    answering ``node_result``; the job's last result."""
    meta_svc.add(ctx, machine.uuid, machine.owner_uuid, kind, change or {"b": "set"}, CALLER)
    job_uuid = get_machine(ctx, machine.uuid).job_uuid
    assert job_uuid is not None
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    _, op, params, reply = transport.agent.popleft()
    assert op == "machine_update_metadata"
    engine.on_agent_reply(reply, ok(node_result))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded", job.error
    return dict(job.chain_results[-1]["result"])


def test_a_reply_with_a_newer_serial_is_the_nodes_map(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    machine = running_machine(ctx, fleet, serial=2)
    # the node's map holds what its guest put as well (its event not here yet)
    node_map = {"a": "old", "b": "set", "guest": "put"}
    run_metadata_job(ctx, engine, transport, machine,
                     {"tags": {}, "customer_metadata": node_map, "serial": 4})
    assert stored(ctx, machine) == (node_map, 4)
    # the guest's event of serial 3 comes late: it is older than the map applied
    assert not guest_event(ctx, event(machine, 3, a="old", guest="put"))
    assert stored(ctx, machine) == (node_map, 4)


def test_a_reply_older_than_a_guests_change_leaves_the_newer_map(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    machine = running_machine(ctx, fleet, serial=2)
    # the guest's change after the head node's (serial 4) arrived before the reply (3)
    assert guest_event(ctx, event(machine, 4, a="old", b="set", guest="put"))
    run_metadata_job(ctx, engine, transport, machine,
                     {"tags": {}, "customer_metadata": {"a": "old", "b": "set"}, "serial": 3})
    assert stored(ctx, machine) == ({"a": "old", "b": "set", "guest": "put"}, 4)


def test_a_reply_without_serial_applies_the_change_as_before(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    machine = running_machine(ctx, fleet, serial=None)
    run_metadata_job(ctx, engine, transport, machine, {"tags": {}, "customer_metadata": {}})
    assert stored(ctx, machine) == ({"a": "old", "b": "set"}, None)


def test_a_tags_change_with_a_serial_keeps_the_tag_change(
        ctx: Any, engine: Engine, transport: RecordingTransport, fleet: dict[str, Any]) -> None:
    machine = running_machine(ctx, fleet, serial=1)
    run_metadata_job(ctx, engine, transport, machine,
                     {"tags": {"role": "web"}, "customer_metadata": {"a": "guest"},
                      "serial": 2}, kind="tags", change={"role": "web"})
    row = get_machine(ctx, machine.uuid)
    assert (row.tags, row.customer_metadata, row.metadata_serial) == (
        {"role": "web"}, {"a": "guest"}, 2)
