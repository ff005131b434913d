"""Workflows that change one machine: provision, start, stop, reboot, destroy.

Each follows DESIGN's shape: the request took the machine's lock (``machines.job_uuid``) and,
for a provision, its capacity reservation; the chain calls the agent and records the result;
the engine releases the lock when the job ends, whichever way.
"""

from __future__ import annotations

from typing import Any

from headnode.services import capacity
from headnode.services.networks import release_nics as free_nics
from headnode.store.models import Image, Machine, utcnow
from schemas.agent import MachineStatusSchema
from workflows.engine import Step, StepContext, StepFailed, Workflow, register

# Per-step timeouts (seconds) after VMAPI's provision workflow, shortened where our steps do
# less (no NAPI or FWAPI calls).
VALIDATE_TIMEOUT = 10
ENSURE_IMAGE_TIMEOUT = 300
CREATE_TIMEOUT = 300
ACTION_TIMEOUT = 120
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
    image = ctx.session.get(Image, machine.image_uuid)
    if image is None:
        raise StepFailed("ImageNotFound", f"image {machine.image_uuid} not found")
    return {"image": {"uuid": image.uuid, "name": image.name, "version": image.version,
                      "os": image.os, "type": image.type, "size_mb": image.size_mb,
                      "files": image.files}}


def create_params(ctx: StepContext) -> dict[str, Any]:
    m = ctx.machine()
    return {"uuid": m.uuid, "alias": m.alias, "owner_uuid": m.owner_uuid,
            "image_uuid": m.image_uuid, "ram_mb": m.ram_mb, "disk_mb": m.disk_mb,
            "cpu_cap": m.cpu_cap, "vcpus": m.vcpus, "max_lwps": m.max_lwps,
            "tags": m.tags, "metadata": m.customer_metadata}


def record_created(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    node = _node_machine(result)
    if node["state"] not in ("running", "stopped"):
        raise StepFailed("ProvisionFailed", f"the node reports the machine {node['state']}")
    _set_state(ctx, node["state"])
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
        Step("validate", VALIDATE_TIMEOUT, run=validate_provision),
        Step("ensure_image", ENSURE_IMAGE_TIMEOUT, agent_op="image_ensure_present",
             params=ensure_image_params, retries=1),
        Step("create_machine", CREATE_TIMEOUT, agent_op="machine_create",
             params=create_params, on_result=record_created, retries=1),
        Step("commit_usage", RECORD_TIMEOUT, run=commit_usage, retries=2),
    ),
    onerror=(
        Step("remove_from_node", RECORD_TIMEOUT, run=remove_from_node),
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


def release_usage(ctx: StepContext) -> dict[str, Any]:
    return {"released": capacity.release(ctx.session, ctx.job.machine_uuid or "")}


def mark_destroyed(ctx: StepContext) -> dict[str, Any]:
    machine = _set_state(ctx, "destroyed")
    machine.destroyed_at = utcnow()
    return {"state": "destroyed"}


DESTROY = register(Workflow(
    name="destroy",
    chain=(
        Step("destroy_machine", ACTION_TIMEOUT, agent_op="machine_destroy",
             params=destroy_on_node, on_result=record_destroyed, retries=1),
        Step("release_usage", RECORD_TIMEOUT, run=release_usage, retries=2),
        Step("release_nics", RECORD_TIMEOUT, run=release_nics, retries=2),
        Step("mark_destroyed", RECORD_TIMEOUT, run=mark_destroyed, retries=2),
    ),
    timeout=600,
))
