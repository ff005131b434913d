"""Workflows that change one NIC of a machine: add, remove, update (its anti-spoofing flags).

The request (headnode.services.nics) took the machine's lock and wrote what it could: an
added NIC's row (its address and MAC held, state ``provisioning``), a removed one's state
``removing``. The chain has the node do it, then the row follows; the onerror chain undoes
what the request wrote, so a failed add leaves no address, MAC or interface on either side.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from headnode.services.nics import machine_network_spec, nic_spec
from headnode.store.models import Network, Nic
from schemas.agent import MachineStatusSchema, agent_queue, agent_task
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.params import NicParams

ACTION_TIMEOUT = 120
RECORD_TIMEOUT = 10
#: VMAPI's add-nics, remove-nics and update workflows' whole-job timeout
NIC_JOB_TIMEOUT = 600


def _mac(ctx: StepContext) -> str:
    return NicParams.of(ctx.job).mac


def _nic(ctx: StepContext) -> Nic:
    nic = ctx.session.get(Nic, _mac(ctx))
    if nic is None or nic.machine_uuid != ctx.job.machine_uuid:
        raise StepFailed("NicNotFound", f"nic {_mac(ctx)} not found")
    return nic


def _plugged_state(ctx: StepContext, result: dict[str, Any] | None = None) -> str:
    """A plugged NIC's state: its machine's, as the node reports it if it did."""
    reported = (result or {}).get("machine")
    state = (MachineStatusSchema().load(reported, unknown="exclude")["state"] if reported
             else ctx.machine().state)
    return "stopped" if state == "stopped" else "running"


def _delete_nic(ctx: StepContext) -> int:
    result = ctx.session.execute(delete(Nic).where(Nic.mac == _mac(ctx),
                                                   Nic.machine_uuid == ctx.job.machine_uuid)
                                 .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- add ------------------------------------------------------------------------------------

def add_nic_params(ctx: StepContext) -> dict[str, Any]:
    nic = _nic(ctx)
    network = ctx.session.get(Network, nic.network_uuid)
    if network is None:
        raise StepFailed("NetworkNotFound", f"network {nic.network_uuid} not found")
    # the machine's routes as they are with this NIC (vmadm's routes are VM-level)
    routes = machine_network_spec(ctx.session, ctx.machine())["routes"]
    return {"uuid": ctx.job.machine_uuid, "nics": [nic_spec(nic, network)], "routes": routes}


def record_nic_added(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    state = _plugged_state(ctx, result)
    nic = _nic(ctx)
    nic.state = state
    return {"mac": nic.mac, "interface": nic.interface, "state": state}


def unplug_from_node(ctx: StepContext) -> dict[str, Any]:
    # Best effort, and without waiting (as a failed provision's remove_from_node): if the
    # node plugged the NIC after we gave up on it, this takes it out again.
    if ctx.job.server_uuid and ctx.job.machine_uuid:
        ctx.outbox.append((agent_queue(ctx.job.server_uuid), agent_task("machine_remove_nics"),
                           [ctx.job.server_uuid,
                            {"uuid": ctx.job.machine_uuid, "macs": [_mac(ctx)]}, None]))
    return {"sent": "machine_remove_nics"}


def release_nic(ctx: StepContext) -> dict[str, Any]:
    # the address and the MAC go back (idempotent)
    return {"released": _delete_nic(ctx)}


ADD_NIC = register(Workflow(
    name="add_nic",
    chain=(Step("add_nic", ACTION_TIMEOUT, agent_op="machine_add_nics", params=add_nic_params,
                on_result=record_nic_added, retries=1),),
    onerror=(
        Step("unplug_from_node", RECORD_TIMEOUT, run=unplug_from_node,
             repeat_on_late_reply=True),
        Step("release_nic", RECORD_TIMEOUT, run=release_nic, retries=2),
    ),
    timeout=NIC_JOB_TIMEOUT,
))


# -- remove ---------------------------------------------------------------------------------

def remove_nic_params(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid, "macs": [_mac(ctx)]}


def record_nic_removed(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    return {"mac": _mac(ctx), "deleted": _delete_nic(ctx)}


def restore_nic_state(ctx: StepContext) -> dict[str, Any]:
    # the node kept the NIC: it is plugged as before
    nic = ctx.session.get(Nic, _mac(ctx))
    if nic is None:
        return {"mac": _mac(ctx), "state": None}
    nic.state = _plugged_state(ctx)
    return {"mac": nic.mac, "state": nic.state}


REMOVE_NIC = register(Workflow(
    name="remove_nic",
    chain=(Step("remove_nic", ACTION_TIMEOUT, agent_op="machine_remove_nics",
                params=remove_nic_params, on_result=record_nic_removed, retries=1),),
    onerror=(Step("restore_nic_state", RECORD_TIMEOUT, run=restore_nic_state, retries=2),),
    timeout=NIC_JOB_TIMEOUT,
))


# -- update ---------------------------------------------------------------------------------

def update_nic_params(ctx: StepContext) -> dict[str, Any]:
    params = NicParams.of(ctx.job)
    return {"uuid": ctx.job.machine_uuid, "nics": [{"mac": params.mac, **params.changes}]}


def record_nic_updated(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    changes = NicParams.of(ctx.job).changes
    nic = _nic(ctx)
    for name, value in changes.items():
        setattr(nic, name, list(value) if name == "allowed_ips" else value)
    return {"mac": nic.mac, **changes}


UPDATE_NIC = register(Workflow(
    name="update_nic",
    chain=(Step("update_nic", ACTION_TIMEOUT, agent_op="machine_update_nics",
                params=update_nic_params, on_result=record_nic_updated, retries=1),),
    timeout=NIC_JOB_TIMEOUT,
))
