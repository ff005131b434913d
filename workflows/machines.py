"""Workflows that change one machine: provision, start, stop, reboot, destroy, resize,
rename, snapshots (create, roll back, delete), tags and metadata, and making an image from it.

Each has one shape (docs/architecture.md, "The job model"): the request took the machine's
lock (``machines.job_uuid``) and, for a provision, its capacity reservation; the chain calls
the agent and records the result; the engine releases the lock when the job ends, whichever
way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from headnode.imagestore import ImageStore
from headnode.services import capacity, node_metadata
from headnode.services.machine_meta import METADATA_WORKFLOWS
from headnode.services.networks import release_machine_holdings
from headnode.services.networks import release_nics as free_nics
from headnode.services.nics import machine_network_spec, set_plugged
from headnode.store.models import Image, Machine, MachineSnapshot, utcnow
from schemas.agent import MachineStatusSchema, apply_metadata_change
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.params import (
    CreateImageParams,
    MetadataParams,
    RenameParams,
    ResizeParams,
    SnapshotParams,
)

# Per-step timeouts (seconds) after VMAPI's provision workflow, shortened where our steps do
# less (no NAPI or FWAPI calls).
VALIDATE_TIMEOUT = 10
ENSURE_IMAGE_TIMEOUT = 300
#: longer than a node's own wait for a create (a SmartOS agent's 420 s, itself past VM.js's
#: 300 s provision timeout), so the step never gives up (and its clean-up never deletes the
#: machine) while the node may still be creating it
CREATE_TIMEOUT = 480
ACTION_TIMEOUT = 120
#: a destroy first waits for a provision in progress on the node to end (up to the node's
#: create wait), then deletes
DESTROY_TIMEOUT = CREATE_TIMEOUT
RECORD_TIMEOUT = 10


def _node_machine(result: dict[str, Any]) -> dict[str, Any]:
    """The machine as the node reported it, checked against the wire schema."""
    return MachineStatusSchema().load(result.get("machine") or {}, unknown="exclude")


def _set_state(ctx: StepContext, state: str) -> Machine:
    machine = ctx.machine()
    machine.state = state
    machine.last_known_state = None
    return machine


# -- provision ------------------------------------------------------------------------------

def validate_provision(ctx: StepContext) -> dict[str, Any]:
    machine = ctx.machine()
    if machine.state != "provisioning":
        raise StepFailed("InvalidState", f"machine is {machine.state}, not provisioning")
    return {"server_uuid": machine.server_uuid}


def ensure_image_params(ctx: StepContext) -> dict[str, Any]:
    machine = ctx.machine()
    with ctx.session.no_autoflush:  # a read by primary key: no need to flush the job first
        image = ctx.session.get(Image, machine.image_uuid)
    if image is None:
        raise StepFailed("ImageNotFound", f"image {machine.image_uuid} not found")
    # An image with a file is fetched from the image store, over a URL signed for this node.
    source = (ImageStore(ctx.settings).source_for(ctx.job.server_uuid or "", image)
              if image.files else None)
    return {"image": {"uuid": image.uuid, "name": image.name, "version": image.version,
                      "os": image.os, "type": image.type, "size_mb": image.size_mb,
                      "files": image.files, "requirements": image.requirements or {},
                      "tags": image.tags or {}, "init": image.init, "source": source}}


def create_params(ctx: StepContext) -> dict[str, Any]:
    m = ctx.machine()
    with ctx.session.no_autoflush:  # as ensure_image_params: a read by primary key
        image = ctx.session.get(Image, m.image_uuid)
    return {"uuid": m.uuid, "alias": m.alias, "owner_uuid": m.owner_uuid,
            "image_uuid": m.image_uuid, "ram_mb": m.ram_mb, "disk_mb": m.disk_mb,
            "cpu_cap": m.cpu_cap, "vcpus": m.vcpus, "max_lwps": m.max_lwps,
            "tags": m.tags, "metadata": m.customer_metadata,
            # the machine boots its image's init (None: the node's default)
            "init": image.init if image is not None else None,
            **machine_network_spec(ctx.session, m)}


def record_created(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    # Checks everything before it writes: its step needs no savepoint.
    node = _node_machine(result)
    if node["state"] not in ("running", "stopped"):
        raise StepFailed("ProvisionFailed", f"the node reports the machine {node['state']}")
    _set_state(ctx, node["state"])
    set_plugged(ctx.session, ctx.job.machine_uuid or "", node["state"])
    return {"state": node["state"]}


def commit_usage(ctx: StepContext) -> dict[str, Any]:
    capacity.commit(ctx.session, ctx.job.machine_uuid or "")
    return {"reservation": "committed"}


def remove_from_node(ctx: StepContext) -> dict[str, Any]:
    # Best effort, and without waiting: if the node did create the machine after we gave up
    # on it, this removes it so the node's capacity matches ours.
    if ctx.job.server_uuid and ctx.job.machine_uuid:
        from schemas.agent import agent_queue, agent_task

        ctx.outbox.append((agent_queue(ctx.job.server_uuid), agent_task("machine_destroy"),
                           [ctx.job.server_uuid, {"uuid": ctx.job.machine_uuid}, None]))
    return {"sent": "machine_destroy"}


def release_reservation(ctx: StepContext) -> dict[str, Any]:
    released = capacity.release(ctx.session, ctx.job.machine_uuid or "")
    return {"released": released}


def release_nics(ctx: StepContext) -> dict[str, Any]:
    # the machine's addresses go back to their networks' pools (idempotent)
    return {"released": free_nics(ctx.session, ctx.job.machine_uuid or "")}


def mark_failed(ctx: StepContext) -> dict[str, Any]:
    _set_state(ctx, "failed")
    return {"state": "failed"}


PROVISION = register(Workflow(
    name="provision",
    chain=(
        Step("validate", VALIDATE_TIMEOUT, run=validate_provision, savepoint=False),
        Step("ensure_image", ENSURE_IMAGE_TIMEOUT, agent_op="image_ensure_present",
             params=ensure_image_params, retries=1),
        # Sent with ensure_image in one message: the node imports the image, then creates.
        Step("create_machine", CREATE_TIMEOUT, agent_op="machine_create",
             params=create_params, on_result=record_created, retries=1, joins_previous=True,
             savepoint=False),
        # Its two statements cannot be half-done: a database error aborts the whole turn,
        # which rolls back and is asked again by the sweep.
        Step("commit_usage", RECORD_TIMEOUT, run=commit_usage, retries=2, savepoint=False),
    ),
    onerror=(
        # Again if a canceled create's late reply comes: the node may create after this.
        Step("remove_from_node", RECORD_TIMEOUT, run=remove_from_node,
             repeat_on_late_reply=True),
        Step("release_reservation", RECORD_TIMEOUT, run=release_reservation, retries=2),
        Step("release_nics", RECORD_TIMEOUT, run=release_nics, retries=2),
        Step("mark_failed", RECORD_TIMEOUT, run=mark_failed, retries=2),
    ),
    timeout=3810,
))


# -- start, stop, reboot --------------------------------------------------------------------

def machine_ref(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid}


def record_state(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    node = _node_machine(result)
    _set_state(ctx, node["state"])
    return {"state": node["state"]}


def _action_workflow(action: str, timeout: float) -> Workflow:
    return register(Workflow(
        name=action,
        chain=(Step(action, ACTION_TIMEOUT, agent_op=f"machine_{action}", params=machine_ref,
                    on_result=record_state),),
        timeout=timeout,
    ))


# whole-job timeouts as VMAPI's start, stop and reboot workflows
START = _action_workflow("start", 410)
STOP = _action_workflow("stop", 530)
REBOOT = _action_workflow("reboot", 590)


# -- destroy --------------------------------------------------------------------------------

def destroy_on_node(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid}


def record_destroyed(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    node = _node_machine(result)
    if node["state"] != "destroyed":
        raise StepFailed("DestroyFailed", f"the node reports the machine {node['state']}")
    return {"state": "destroyed"}


def release_holdings(ctx: StepContext) -> dict[str, Any]:
    # the same release as a node's confirmation that the machine is gone (workflows.nodes)
    return release_machine_holdings(ctx.session, ctx.job.machine_uuid or "")


def mark_destroyed(ctx: StepContext) -> dict[str, Any]:
    machine = _set_state(ctx, "destroyed")
    machine.destroyed_at = utcnow()
    return {"state": "destroyed"}


DESTROY = register(Workflow(
    name="destroy",
    chain=(
        Step("destroy_machine", DESTROY_TIMEOUT, agent_op="machine_destroy",
             params=destroy_on_node, on_result=record_destroyed, retries=1),
        Step("release_holdings", RECORD_TIMEOUT, run=release_holdings, retries=2),
        Step("mark_destroyed", RECORD_TIMEOUT, run=mark_destroyed, retries=2),
    ),
    timeout=600,
))


# -- resize ---------------------------------------------------------------------------------
# The request held any growth on the machine's server; the job gives it back on failure.

RESIZED_FIELDS = ("ram_mb", "disk_mb", "cpu_cap", "vcpus", "max_lwps")


def resize_params(ctx: StepContext) -> dict[str, Any]:
    params = ResizeParams.of(ctx.job)
    return {"uuid": ctx.job.machine_uuid, **{k: getattr(params, k) for k in RESIZED_FIELDS}}


def record_resize(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    node = _node_machine(result)
    params = ResizeParams.of(ctx.job)
    machine = _set_state(ctx, node["state"])
    for name in RESIZED_FIELDS:
        setattr(machine, name, getattr(params, name))
    machine.package_uuid = params.package
    committed = capacity.commit_resize(ctx.session, machine.uuid, machine.server_uuid or "",
                                       params.held, params.delta)
    return {"package": params.package_name, "ram_mb": params.ram_mb,
            "disk_mb": params.disk_mb, "usage": "committed" if committed else "unchanged"}


def release_growth(ctx: StepContext) -> dict[str, Any]:
    held = ResizeParams.of(ctx.job).held
    capacity.release_growth(ctx.session, ctx.job.server_uuid or "", held.get("ram_mb", 0),
                            held.get("disk_mb", 0), held.get("cpu", 0))
    return {"released": held}


RESIZE = register(Workflow(
    name="resize",
    chain=(Step("update_machine", ACTION_TIMEOUT, agent_op="machine_update",
                params=resize_params, on_result=record_resize),),
    onerror=(Step("release_growth", RECORD_TIMEOUT, run=release_growth, retries=2),),
    timeout=600,
))


# -- rename ---------------------------------------------------------------------------------
# The request already wrote the new alias (so the name is held); a failure gives it back.

def rename_params(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid, "alias": RenameParams.of(ctx.job).alias}


def restore_alias(ctx: StepContext) -> dict[str, Any]:
    machine = ctx.machine()
    params = RenameParams.of(ctx.job)
    if machine.alias == params.alias:
        machine.alias = params.old_alias
    return {"alias": machine.alias}


RENAME = register(Workflow(
    name="rename",
    chain=(Step("rename_machine", ACTION_TIMEOUT, agent_op="machine_update",
                params=rename_params, on_result=record_state),),
    onerror=(Step("restore_alias", RECORD_TIMEOUT, run=restore_alias, retries=2),),
    timeout=600,
))


# -- snapshots ------------------------------------------------------------------------------

def _snapshot_name(ctx: StepContext) -> str:
    return SnapshotParams.of(ctx.job).snapshot


def snapshot_ref(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid, "name": _snapshot_name(ctx)}


def _snapshot(ctx: StepContext) -> MachineSnapshot:
    name = _snapshot_name(ctx)
    row = ctx.session.get(MachineSnapshot, (ctx.job.machine_uuid, name))
    if row is None:
        raise StepFailed("SnapshotNotFound", f"snapshot {name} not found")
    return row


def _set_snapshot_state(ctx: StepContext, state: str) -> dict[str, Any]:
    _snapshot(ctx).state = state
    return {"snapshot": _snapshot_name(ctx), "state": state}


def record_snapshot_created(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    reported = (result.get("snapshot") or {}).get("name")
    if reported != _snapshot_name(ctx):
        raise StepFailed("SnapshotFailed", f"the node reports snapshot {reported!r}")
    return _set_snapshot_state(ctx, "created")


def mark_snapshot_failed(ctx: StepContext) -> dict[str, Any]:
    return _set_snapshot_state(ctx, "failed")


def record_snapshot_deleted(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    return _set_snapshot_state(ctx, "deleted")


def record_rollback(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """Rolling back destroys every newer snapshot on the node (as vmadm rollback-snapshot
    does), so they are gone here too."""
    target = _snapshot(ctx)
    newer = ctx.session.scalars(
        select(MachineSnapshot).where(MachineSnapshot.machine_uuid == target.machine_uuid,
                                      MachineSnapshot.state == "created",
                                      MachineSnapshot.created_at > target.created_at)
    ).all()
    for snapshot in newer:
        snapshot.state = "deleted"
    return {**record_state(ctx, result), "deleted_snapshots": [s.name for s in newer]}


SNAPSHOT_CREATE = register(Workflow(
    name="snapshot_create",
    chain=(Step("create_snapshot", ACTION_TIMEOUT, agent_op="snapshot_create",
                params=snapshot_ref, on_result=record_snapshot_created),),
    onerror=(Step("mark_snapshot_failed", RECORD_TIMEOUT, run=mark_snapshot_failed,
                  retries=2),),
    timeout=600,
))
ROLLBACK_STEP = Step("rollback_snapshot", ACTION_TIMEOUT, agent_op="snapshot_rollback",
                     params=snapshot_ref, on_result=record_rollback)
#: an operator's rollback: the machine keeps its state, running or stopped, on every backend
#: (vmadm rollback-snapshot would boot a stopped zone; the SmartOS backend rolls a stopped
#: zone's dataset back itself instead)
SNAPSHOT_ROLLBACK = register(Workflow(
    name="snapshot_rollback",
    chain=(ROLLBACK_STEP,),
    timeout=600,
))
#: CloudAPI's StartMachineFromSnapshot: the machine ends running, also when it was stopped
#: (one message: the node starts it right after the rollback)
SNAPSHOT_START = register(Workflow(
    name="snapshot_start",
    chain=(ROLLBACK_STEP,
           Step("start_machine", ACTION_TIMEOUT, agent_op="machine_start", params=machine_ref,
                on_result=record_state, joins_previous=True)),
    timeout=600,
))
SNAPSHOT_DELETE = register(Workflow(
    name="snapshot_delete",
    chain=(Step("delete_snapshot", ACTION_TIMEOUT, agent_op="snapshot_delete",
                params=snapshot_ref, on_result=record_snapshot_deleted),),
    timeout=600,
))


# -- tags and customer metadata ---------------------------------------------------------------
# The request took the machine's lock and named the change (keys to set, keys to remove); the
# node applies it, and only then the row takes it and the job ends, so the audit entry (the
# job) is newer than the request's answer, as CloudAPI's is (``triton ... -w`` waits for it).

#: VMAPI's update workflow's whole-job timeout
METADATA_TIMEOUT = 300


def _metadata_change(ctx: StepContext) -> MetadataParams:
    return MetadataParams.of(ctx.job, METADATA_WORKFLOWS[ctx.job.name])


def metadata_change_params(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid, **_metadata_change(ctx).to_json()}


def record_metadata_change(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """The row takes the change. From a node that counts its changes, its customer
    metadata is the node's map instead, if newer than the one applied last (a guest's own
    change may have come first, or may come later: node_metadata)."""
    change = _metadata_change(ctx)
    column = change.column
    machine = ctx.machine()
    counted = node_metadata.reply_serial(result)
    if counted is not None:
        values, serial = counted
        applied = node_metadata.apply_map(ctx.session, machine.uuid, values, serial)
        if column == "customer_metadata":
            return {column: sorted(values), "serial": serial, "applied": applied}
    changed = apply_metadata_change(getattr(machine, column) or {}, change.remove, change.set_)
    setattr(machine, column, changed)  # a new dict: the JSON column sees the change
    return {column: sorted(changed)}


def _metadata_workflow(name: str) -> Workflow:
    return register(Workflow(
        name=name,
        chain=(Step("update_metadata", ACTION_TIMEOUT, agent_op="machine_update_metadata",
                    params=metadata_change_params, on_result=record_metadata_change,
                    retries=1),),
        timeout=METADATA_TIMEOUT,
    ))


for _name in METADATA_WORKFLOWS:
    _metadata_workflow(_name)


# -- an image from a machine ----------------------------------------------------------------
# The node snapshots the machine, archives it and PUTs the file to a URL signed for it; the
# upload records what arrived, and this job activates the image only if the node's own
# measure of the file agrees.

CREATE_IMAGE_TIMEOUT = 1800


def _new_image(ctx: StepContext) -> Image:
    image_uuid = CreateImageParams.of(ctx.job).image_uuid
    image = ctx.session.get(Image, image_uuid)
    if image is None:
        raise StepFailed("ImageNotFound", f"image {image_uuid} not found")
    return image


def create_image_params(ctx: StepContext) -> dict[str, Any]:
    image = _new_image(ctx)
    spec = {"uuid": image.uuid, "name": image.name, "version": image.version,
            "os": image.os, "type": image.type, "size_mb": image.size_mb, "files": []}
    return {"uuid": ctx.job.machine_uuid, "image": spec,
            "upload": ImageStore(ctx.settings).upload_for(ctx.job.server_uuid or "", image)}


def activate_image(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    image = _new_image(ctx)
    made = result.get("image") or {}
    received = list(image.files or [])
    if not received or not ImageStore(ctx.settings).has_file(image.uuid):
        raise StepFailed("ImageNotUploaded", "the node reported an image but no file arrived")
    arrived = received[0]
    if (made.get("sha256"), made.get("size")) != (arrived["sha256"], arrived["size"]):
        raise StepFailed("ImageMismatch",
                         f"the node made sha256 {made.get('sha256')} ({made.get('size')} bytes), "
                         f"the store received {arrived['sha256']} ({arrived['size']} bytes)")
    # the node says what it made (tar on Linux, a ZFS send stream on SmartOS); an agent
    # from before formats made a tarball, the format a file entry without one has
    image.files = [{**arrived, "compression": made.get("compression") or "gzip",
                    **({"format": made["format"]} if made.get("format") else {})}]
    image.size_mb = max(image.size_mb, -(-int(arrived["size"]) // (1 << 20)))
    image.state = "active"
    return {"image": image.uuid, "sha256": arrived["sha256"], "size": arrived["size"]}


def fail_image(ctx: StepContext) -> dict[str, Any]:
    image = _new_image(ctx)
    image.state = "failed"
    removed = ImageStore(ctx.settings).remove(image.uuid)
    return {"image": image.uuid, "state": "failed", "file_removed": removed}


CREATE_IMAGE = register(Workflow(
    name="create_image",
    chain=(Step("create_image", CREATE_IMAGE_TIMEOUT, agent_op="image_create_from_machine",
                params=create_image_params, on_result=activate_image),),
    onerror=(Step("fail_image", RECORD_TIMEOUT, run=fail_image, retries=2),),
    timeout=CREATE_IMAGE_TIMEOUT + 60,
))
