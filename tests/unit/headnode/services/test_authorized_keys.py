"""The account's keys as its machines' root_authorized_keys: added at create (operators'
creates never refused), and pushed to every live machine whose image needs keys when a key
is added or deleted (the row, then a machine_update_metadata to its node)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from headnode.services import keys
from headnode.services import machines as machines_svc
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict
from headnode.store.models import Account, Machine
from schemas.agent import MachineMetadataUpdateSchema, agent_queue
from tests.support.httpsig_client import Signer
from tests.support.jobqueue import RecordingJobQueue
from tests.unit.headnode.services import test_create_sqlite as on_sqlite
from tests.unit.headnode.services.conftest import make_account, make_image, make_machine
from workflows.celery_app import make_app
from workflows.dispatch import CeleryJobQueue

CALLER = {"type": "operator"}
#: the SQLite cloud of `sdc up` (a fixture)
lite = on_sqlite.lite


def metadata_of(ctx: Any, machine_uuid: str) -> dict[str, Any]:
    with ctx.read() as session:
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        return dict(machine.customer_metadata)


def test_a_new_key_reaches_every_live_machine_whose_image_needs_keys(
        ctx: Any, fleet: dict[str, Any]) -> None:
    password = make_image(ctx, name="windows", requirements={"password": True})
    bob = make_account(ctx, login="bob", email="bob@example.com")
    live = {state: make_machine(ctx, fleet, alias=state, state=state,
                                customer_metadata={"motd": state})
            for state in ("provisioning", "running", "stopped", "unknown")}
    untouched = [
        make_machine(ctx, fleet, alias="gone", state="destroyed"),
        make_machine(ctx, fleet, alias="broken", state="failed"),
        make_machine(ctx, fleet, alias="nowhere", state="provisioning", server_uuid=None),
        make_machine(ctx, fleet, alias="win", image_uuid=password.uuid),
        make_machine(ctx, {**fleet, "owner": bob}, alias="bobs"),
    ]
    signer = Signer("alice")
    keys.create_key(ctx, fleet["owner"].uuid, "main", signer.public_line)

    value = f"{signer.public_line}\n"
    for state, machine in live.items():
        assert metadata_of(ctx, machine.uuid) == {"motd": state, "root_authorized_keys": value}
    for machine in untouched:
        assert "root_authorized_keys" not in metadata_of(ctx, machine.uuid)
    sent = sorted(ctx.jobs.sent, key=lambda m: m[2]["uuid"])
    assert sent == sorted(
        [(fleet["server"].uuid, "machine_update_metadata",
          {"uuid": m.uuid, "set_customer_metadata": {"root_authorized_keys": value}})
         for m in live.values()], key=lambda m: m[2]["uuid"])
    for _server, _op, params in sent:
        MachineMetadataUpdateSchema().load(params)  # what the agent takes

    # a second key: both lines; deleting both: the key is removed
    second = Signer("alice", kind="ed25519")
    keys.create_key(ctx, fleet["owner"].uuid, "laptop", second.public_line)
    running = live["running"].uuid
    assert metadata_of(ctx, running)["root_authorized_keys"] == (
        f"{signer.public_line}\n{second.public_line}\n")
    keys.delete_key(ctx, fleet["owner"].uuid, "main")
    assert metadata_of(ctx, running)["root_authorized_keys"] == f"{second.public_line}\n"
    ctx.jobs.sent.clear()
    keys.delete_key(ctx, fleet["owner"].uuid, "laptop")
    assert metadata_of(ctx, running) == {"motd": "running"}
    assert {m[2]["uuid"]: m[2] for m in ctx.jobs.sent}[running] == {
        "uuid": running, "remove_customer_metadata": ["root_authorized_keys"]}


def test_a_refused_key_changes_no_machine(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet)
    signer = Signer("alice")
    keys.create_key(ctx, fleet["owner"].uuid, "main", signer.public_line)
    ctx.jobs.sent.clear()
    with pytest.raises(Conflict):
        keys.create_key(ctx, fleet["owner"].uuid, "again", signer.public_line)
    assert ctx.jobs.sent == []
    assert metadata_of(ctx, machine.uuid) == {"root_authorized_keys": f"{signer.public_line}\n"}


def test_the_push_is_a_message_on_the_nodes_queue(settings: Any, ctx: Any,
                                                  fleet: dict[str, Any]) -> None:
    """Through the real Celery queue on Redis, as the API sends it after the commit."""
    app = make_app(settings)
    celery_ctx = ServiceContext(settings, jobs=CeleryJobQueue(app), _sessions=ctx.sessions)
    machine = make_machine(ctx, fleet)
    signer = Signer("alice")
    keys.create_key(celery_ctx, fleet["owner"].uuid, "main", signer.public_line)
    with app.connection_for_read() as conn:
        message = conn.default_channel.basic_get(agent_queue(fleet["server"].uuid),
                                                 no_ack=True)
    assert message is not None
    assert message.headers["task"] == "agent.machine_update_metadata"
    args = message.decode()[0]
    assert args == [fleet["server"].uuid, {
        "uuid": machine.uuid,
        "set_customer_metadata": {"root_authorized_keys": f"{signer.public_line}\n"}}, None]


def test_operator_creates_add_the_keys_the_owner_has_and_never_refuse(
        ctx: Any, fleet: dict[str, Any]) -> None:
    body = {"owner": "alice", "package": "small", "image": "base-64",
            "metadata": {"user-script": "true"}}
    without = machines_svc.create_machine(ctx, {**body, "alias": "a"}, CALLER)
    assert without["metadata"] == {"user-script": "true"}
    signer = Signer("alice")
    keys.create_key(ctx, fleet["owner"].uuid, "main", signer.public_line)
    keyed = machines_svc.create_machine(ctx, {**body, "alias": "b"}, CALLER)
    assert keyed["metadata"] == {"user-script": "true",
                                 "root_authorized_keys": f"{signer.public_line}\n"}
    # the machine made before the key got it too (it is provisioning, on its server)
    assert metadata_of(ctx, without["uuid"])["root_authorized_keys"] == f"{signer.public_line}\n"


def test_on_sqlite_too(lite: ServiceContext) -> None:
    """``sdc up``: the create's keys and a key change's push on the embedded database."""
    lite.jobs = RecordingJobQueue()
    with lite.read() as session:
        alice = session.scalars(select(Account.uuid).where(Account.login == "alice")).one()
    made = on_sqlite.create(lite, alias="a")
    signer = Signer("alice")
    keys.create_key(lite, alice, "main", signer.public_line)
    assert metadata_of(lite, made["uuid"]) == {"root_authorized_keys": f"{signer.public_line}\n"}
    assert [m[1] for m in lite.jobs.sent] == ["machine_update_metadata"]
    assert on_sqlite.create(lite, alias="b")["metadata"] == metadata_of(lite, made["uuid"])
