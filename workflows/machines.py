"""Workflows that change one machine: provision, start, stop, reboot, destroy, resize,
rename, tags and metadata (its snapshots: :mod:`workflows.snapshots`; an image made from it:
:mod:`workflows.machine_images`).

Each has one shape (docs/architecture.md, "The job model"): the request took the machine's
lock (``machines.job_uuid``) and, for a provision, its capacity reservation; the chain calls
the agent and records the result; the engine releases the lock when the job ends, whichever
way.
"""

from __future__ import annotations

from typing import Any

from headnode.imagestore import ImageStore
from headnode.services import capacity, node_metadata
from headnode.services.machine_meta import METADATA_WORKFLOWS
from headnode.services.networks import release_machine_holdings
from headnode.services.networks import release_nics as free_nics
from headnode.services.nics import machine_network_spec, set_plugged
from headnode.store.models import Image, Machine, utcnow
from schemas.agent import MachineStatusSchema, apply_metadata_change
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.params import (
    MetadataParams,
    RenameParams,
    ResizeParams,
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
