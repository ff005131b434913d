"""The agent's Celery app: one task per node operation, and the events it sends the head node.

Each task ``agent.<op>`` is called as ``(server_uuid, params, reply)`` (see schemas/agent.py).
It always produces an outcome (TaskOutcomeSchema) -- whatever went wrong becomes
``{code, message}`` -- returns it, and sends it to the head node when ``reply`` is given, so a
workflow waiting for the reply is never left hanging.

One process may host many nodes (the mock cloud), so the backend is looked up per task in
:data:`registry` by the task's ``server_uuid``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from celery import Celery
from marshmallow import EXCLUDE, ValidationError

from agents.backends.base import BackendError, NodeBackend
from schemas import migrations as schemas_migrations
from schemas.agent import (
    AGENT_TASKS,
    HEADNODE_QUEUE,
    NODES_QUEUE,
    MachineMetadataEventSchema,
    SysinfoSchema,
    agent_task,
)
from sdccommon import broker, signing

log = logging.getLogger(__name__)

EVENT_SYSINFO = "events.server_sysinfo"
EVENT_STATUS = "events.server_status"
EVENT_TASK_REPLY = "events.task_reply"
EVENT_MACHINE_METADATA = "events.machine_metadata"
EVENT_MIGRATION_PROGRESS = schemas_migrations.EVENT_MIGRATION_PROGRESS

#: A reply must survive a short broker hiccup: without it the workflow waits for its timeout.
REPLY_RETRY_POLICY = {"max_retries": 30, "interval_start": 0, "interval_step": 0.5,
                      "interval_max": 2}

app = Celery("agents", set_as_current=False, task_cls=signing.SignedTask)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # One list per queue, not kombu's four priority lists: the head node never sends an
    # agent a priority, and a mock cloud's every poll names each list of its hundreds of
    # queues (BRPOP over 4 x N keys).
    broker_transport_options=broker.transport_options(visibility_timeout=3600,
                                                      priority_steps=[0]),
    # through a Redis restart or failover, however long (sdccommon/broker.py)
    **broker.CONNECTION_SETTINGS,
    # Celery 6's default: an unacknowledged task in flight when the broker connection drops
    # is redelivered anyway, and our tasks are idempotent, so stop tracking the old run
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # replies travel as events.task_reply; stored results are only a convenience for callers
    result_expires=3600,
    # remote control (shutdown, revoke, ...) would take unsigned commands from Redis
    worker_enable_remote_control=False,
)

#: server_uuid -> backend of every node this process hosts
registry: dict[str, NodeBackend] = {}


def configure(redis_url: str) -> Celery:
    """Point the app at the cloud's Redis (broker and result backend)."""
    app.conf.update(broker_url=redis_url, result_backend=redis_url)
    return app


def host(backends: Iterable[NodeBackend]) -> None:
    """Make this process serve exactly ``backends``."""
    registry.clear()
    registry.update({backend.server_uuid: backend for backend in backends})


# -- events to the head node ------------------------------------------------------------------


#: node events travel apart from the jobs' messages; a task reply is a job's progress
EVENT_QUEUES = {EVENT_SYSINFO: NODES_QUEUE, EVENT_STATUS: NODES_QUEUE,
                EVENT_MACHINE_METADATA: NODES_QUEUE, EVENT_MIGRATION_PROGRESS: NODES_QUEUE,
                EVENT_TASK_REPLY: HEADNODE_QUEUE}


def send_event(name: str, server_uuid: str, *args: Any,
               retry_policy: Mapping[str, Any] | None = None) -> None:
    """Send an event as node ``server_uuid`` (signed with its key: sdccommon/signing.py)."""
    app.send_task(name, args=list(args), queue=EVENT_QUEUES[name], retry=True,
                  retry_policy=dict(retry_policy) if retry_policy else None,
                  headers={signing.SENDER: server_uuid})


def send_sysinfo(sysinfo: Mapping[str, Any]) -> None:
    """Register a node; ``sysinfo`` has the Python names, the wire has the SmartOS names."""
    send_event(EVENT_SYSINFO, sysinfo["uuid"], SysinfoSchema().dump(sysinfo))


def send_status(status: Mapping[str, Any]) -> None:
    send_event(EVENT_STATUS, status["server_uuid"], dict(status))


def send_machine_metadata(change: Mapping[str, Any]) -> None:
    """A guest changed its metadata (MachineMetadataEventSchema); raises when the broker
    cannot take it (the caller logs it: the event is not sent again)."""
    send_event(EVENT_MACHINE_METADATA, change["server_uuid"],
               MachineMetadataEventSchema().dump(change))


def send_migration_progress(progress: Mapping[str, Any]) -> None:
    """One end of a migration stream says how far it is (MigrationProgressSchema); raises
    when the broker cannot take it (progress is advisory: the caller logs and goes on)."""
    send_event(EVENT_MIGRATION_PROGRESS, progress["server_uuid"],
               schemas_migrations.MigrationProgressSchema().dump(progress))


def send_reply(reply: Mapping[str, Any], outcome: Mapping[str, Any]) -> None:
    send_event(EVENT_TASK_REPLY, outcome["server_uuid"], dict(reply), dict(outcome),
               retry_policy=REPLY_RETRY_POLICY)


# -- the operations -----------------------------------------------------------------------------


def _image_ensure_present(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"image": backend.image_ensure_present(params["image"])}


def _machine_create(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.machine_create(params)}


def _machine_action(action: str) -> Callable[[NodeBackend, dict[str, Any]], dict[str, Any]]:
    def run(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
        return {"machine": getattr(backend, action)(params["uuid"])}

    return run


def _report_status(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    # the head node asks when it may have lost track: every machine, not what changed
    status = {**backend.status(), "full": True}
    send_status(status)
    return {"status": status}


def _sim_faults(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    configure_faults = getattr(backend, "configure_faults", None)
    if configure_faults is None:
        raise BackendError("Unsupported", "fault injection exists only on sim nodes")
    return {"faults": configure_faults(params["fail"], params["latency_ms"])}


def _machine_update(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.machine_update(params)}


def _machine_update_metadata(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return backend.machine_update_metadata(params)


def _snapshot_create(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"snapshot": backend.snapshot_create(params["uuid"], params["name"])}


def _snapshot_list(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"snapshots": backend.snapshot_list(params["uuid"])}


def _snapshot_rollback(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.snapshot_rollback(params["uuid"], params["name"])}


def _snapshot_delete(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"deleted": backend.snapshot_delete(params["uuid"], params["name"])}


def _image_create_from_machine(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"image": backend.image_create_from_machine(params["uuid"], params["image"],
                                                       params["upload"])}


def _machine_add_nics(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.machine_add_nics(params["uuid"], params["nics"],
                                                params.get("routes"))}


def _machine_remove_nics(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.machine_remove_nics(params["uuid"], params["macs"])}


def _machine_update_nics(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.machine_update_nics(params["uuid"], params["nics"])}


def _node_set_overlay_peers(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"overlay": backend.set_overlay_peers(params["peers"], params["version"])}


def _migration_target_prepare(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.migration_target_prepare(params["migration_uuid"],
                                                        params["spec"])}


def _migration_receive(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"receive": backend.migration_receive(params)}


def _migration_send(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"sync": backend.migration_send(params)}


def _migration_activate(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.migration_activate(params["uuid"], params["migration_uuid"],
                                                  params["snapshot"])}


def _migration_hide(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"machine": backend.migration_hide(params["uuid"], params["hidden"])}


def _migration_cleanup(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    return {"cleaned": backend.migration_cleanup(params["uuid"], params["migration_uuid"],
                                                 params["keep"])}


def _batch(backend: NodeBackend, params: dict[str, Any]) -> dict[str, Any]:
    outcomes = []
    for item in params["ops"]:
        if item["op"] == "batch":
            raise BackendError("InvalidParams", "batch: a batch cannot hold another batch")
        outcome = run_op(item["op"], backend.server_uuid, item["params"])
        outcomes.append(outcome)
        if not outcome["ok"]:
            break  # the later operations depend on this one having worked
    return {"outcomes": outcomes}


OPERATIONS: dict[str, Callable[[NodeBackend, dict[str, Any]], dict[str, Any]]] = {
    "image_ensure_present": _image_ensure_present,
    "machine_create": _machine_create,
    "machine_start": _machine_action("machine_start"),
    "machine_stop": _machine_action("machine_stop"),
    "machine_reboot": _machine_action("machine_reboot"),
    "machine_destroy": _machine_action("machine_destroy"),
    "machine_load": _machine_action("machine_load"),
    "report_status": _report_status,
    "sim_faults": _sim_faults,
    "machine_update": _machine_update,
    "machine_update_metadata": _machine_update_metadata,
    "snapshot_create": _snapshot_create,
    "snapshot_list": _snapshot_list,
    "snapshot_rollback": _snapshot_rollback,
    "snapshot_delete": _snapshot_delete,
    "image_create_from_machine": _image_create_from_machine,
    "machine_add_nics": _machine_add_nics,
    "machine_remove_nics": _machine_remove_nics,
    "machine_update_nics": _machine_update_nics,
    "node_set_overlay_peers": _node_set_overlay_peers,
    "migration_target_prepare": _migration_target_prepare,
    "migration_receive": _migration_receive,
    "migration_send": _migration_send,
    "migration_activate": _migration_activate,
    "migration_hide": _migration_hide,
    "migration_cleanup": _migration_cleanup,
    "batch": _batch,
}
assert set(OPERATIONS) == set(AGENT_TASKS), "every op of the wire contract needs a handler"


def run_op(op: str, server_uuid: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run one operation and describe how it went; never raises."""
    started_at = time.time()
    try:
        backend = registry.get(server_uuid)
        if backend is None:
            raise BackendError("UnknownServer", f"server {server_uuid} is not hosted by this agent")
        if op not in AGENT_TASKS:
            raise BackendError("UnknownOperation", f"this agent has no operation {op!r}")
        # Unknown fields are dropped, not refused: a newer head node may send more than we know.
        loaded = AGENT_TASKS[op]().load(params or {}, unknown=EXCLUDE)
        result = OPERATIONS[op](backend, loaded)
        error = None
    except ValidationError as exc:
        result, error = None, {"code": "InvalidParams", "message": f"{op}: {exc.messages}"}
    except BackendError as exc:
        result, error = None, {"code": exc.code, "message": exc.message}
    except Exception as exc:  # the head node must hear about every failure, whatever it is
        log.exception("agent.%s on %s failed", op, server_uuid)
        result, error = None, {"code": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
    return {
        "server_uuid": server_uuid,
        "ok": error is None,
        "result": result,
        "error": error,
        "started_at": started_at,
        "finished_at": time.time(),
    }


#: called with a server's uuid after a reply told the head node that node's news; the status
#: reporter uses it so the same news is not sent again as a status report
REPLY_LISTENERS: list[Callable[[str], None]] = []


def handle(
    op: str, server_uuid: str, params: Mapping[str, Any] | None, reply: Mapping[str, Any] | None
) -> dict[str, Any]:
    outcome = run_op(op, server_uuid, params)
    if outcome["ok"]:
        log.info("agent.%s on %s: ok", op, server_uuid)
    else:
        log.warning("agent.%s on %s: %s", op, server_uuid, outcome["error"]["message"])
    if reply is not None:
        send_reply(reply, outcome)
        for listener in REPLY_LISTENERS:
            listener(server_uuid)
    return outcome


def _register(op: str) -> Any:
    def agent_op(
        server_uuid: str, params: Mapping[str, Any] | None, reply: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return handle(op, server_uuid, params, reply)

    agent_op.__name__ = agent_op.__qualname__ = op
    return app.task(name=agent_task(op))(agent_op)


#: op name -> its Celery task
TASKS: dict[str, Any] = {op: _register(op) for op in AGENT_TASKS}
