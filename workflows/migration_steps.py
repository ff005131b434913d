"""The step functions of the migration workflows (:mod:`workflows.migrations` puts them in
order): what each sends to the source or the target node, and what each writes on the
migration record, the machine and the servers' room.

Every step reads the migration its job drives (``MigrationParams``); the node a step goes
to is the migration's source or target (``Step.server``). A failure at any phase runs one
clean-up (:data:`workflows.migrations.CLEANUP`) whose steps look at the record to see how
far the migration got: the machine ends on its source, shown and in the state it had, the
target copy is destroyed, the target's room is given back and the migration is ``failed``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from headnode.services import migration_room as room
from headnode.store.models import Migration, utcnow
from schemas.agent import agent_queue, agent_task
from workflows.engine import StepContext, StepFailed
from workflows.machines import create_params, record_state
from workflows.params import MigrationParams

# -- the record -------------------------------------------------------------------------------

def migration(ctx: StepContext) -> Migration:
    uuid = MigrationParams.of(ctx.job).migration
    found = ctx.session.get(Migration, uuid)
    if found is None:
        raise StepFailed("MigrationNotFound", f"migration {uuid} not found")
    return found


def source(ctx: StepContext) -> str:
    return migration(ctx).source_server_uuid


def target(ctx: StepContext) -> str:
    uuid = migration(ctx).target_server_uuid
    if uuid is None:
        raise StepFailed("NoTarget", "the migration has no target server")
    return uuid


def event(m: Migration, message: str, *, state: str = "success", phase: str | None = None,
          bytes_: int | None = None, total: int | None = None,
          started_at: str | None = None) -> dict[str, Any]:
    """Add one progress event (what ``watch`` and GetMigration show) and return it."""
    now = utcnow().isoformat()
    entry = {"phase": phase or m.phase, "state": state, "message": message,
             "bytes": bytes_, "total_bytes": total, "started_at": started_at or now,
             "at": now}
    m.progress_history = [*(m.progress_history or []), entry]  # a new list: JSON sees it
    return entry


def _send_later(ctx: StepContext, server_uuid: str | None, op: str,
                params: dict[str, Any]) -> None:
    """A call to a node without waiting for its answer (sent after the commit)."""
    if server_uuid:
        ctx.outbox.append((agent_queue(server_uuid), agent_task(op),
                           [server_uuid, params, None]))


def switching(ctx: StepContext) -> bool:
    """The migration got to its switch: the source may be stopped or hidden."""
    return migration(ctx).phase == "switch"


def was_running(ctx: StepContext) -> bool:
    return bool(migration(ctx).was_running)


def switching_running(ctx: StepContext) -> bool:
    return switching(ctx) and was_running(ctx)


def on_target(ctx: StepContext) -> bool:
    """The machine's record has moved to the target (the target copy may run)."""
    m = migration(ctx)
    return m.target_server_uuid is not None and ctx.machine().server_uuid == \
        m.target_server_uuid


def has_target(ctx: StepContext) -> bool:
    return migration(ctx).target_server_uuid is not None


def on_source(ctx: StepContext) -> bool:
    return ctx.machine().server_uuid == migration(ctx).source_server_uuid


def machine_ref(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid}


def hide_ref(hidden: bool) -> Callable[[StepContext], dict[str, Any]]:
    def params(ctx: StepContext) -> dict[str, Any]:
        return {"uuid": ctx.job.machine_uuid, "hidden": hidden}
    return params


def cleanup_ref(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid, "migration_uuid": migration(ctx).uuid,
            "keep": None}


def pause(ctx: StepContext) -> dict[str, Any]:
    """The phase's job is done; the migration waits for the next action."""
    m = migration(ctx)
    m.state = "paused"
    return {"state": "paused", "phase": m.phase}


# -- begin ------------------------------------------------------------------------------------

def begin(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    m.phase = "begin"
    event(m, f"reserved room on server {m.target_server_uuid}")
    return {"target": m.target_server_uuid}


def prepare_params(ctx: StepContext) -> dict[str, Any]:
    return {"migration_uuid": migration(ctx).uuid, "spec": create_params(ctx)}


def record_prepared(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    event(migration(ctx), "created the hidden target instance")
    return {"target": target(ctx)}


# -- sync: one stream of one new snapshot ---------------------------------------------------

def _next_snapshot(m: Migration) -> str:
    return f"migration-{m.syncs + 1}"


def plan_sync(ctx: StepContext) -> dict[str, Any]:
    """A fresh one-time token for the next stream (kept on the record, never shown)."""
    m = migration(ctx)
    if m.phase != "switch":
        m.phase = "sync"
    m.stream_token = secrets.token_urlsafe(32)
    m.sent_bytes, m.total_bytes = 0, None  # the new stream's, as its ends report them
    return {"snapshot": _next_snapshot(m), "parent": m.last_snapshot}


#: seconds a stream may go without a word from its ends (progress events, at most one a
#: second while bytes flow) before its step gives up
STREAM_QUIET = 300


def stream_alive(ctx: StepContext) -> bool:
    """The stream's ends were heard from lately: the record changed (a progress event, or
    the stream's own start) within :data:`STREAM_QUIET` seconds."""
    m = migration(ctx)
    if broken_stream(m) is not None:
        return False  # an end said it broke (migration_progress): no use waiting
    quiet = (utcnow() - m.updated_at).total_seconds() if m.updated_at else STREAM_QUIET
    return m.stream_token is not None and quiet < STREAM_QUIET


def broken_stream(m: Migration) -> dict[str, Any] | None:
    """What an end said of the stream under way when it broke, if it did."""
    error = m.error or {}
    return error if error.get("stream") == f"migration-{m.syncs + 1}" else None


def _stream_params(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    if not m.stream_token:
        raise StepFailed("NoStream", "the stream's token is gone (its sync ended)")
    return {"uuid": ctx.job.machine_uuid, "migration_uuid": m.uuid, "token": m.stream_token,
            "snapshot": _next_snapshot(m), "parent": m.last_snapshot}


def receive_params(ctx: StepContext) -> dict[str, Any]:
    return _stream_params(ctx)


def record_receive(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    offer = result.get("receive") or {}
    if not isinstance(offer.get("url"), str):
        raise StepFailed("BadReply", "the target answered no receive URL")
    answer = {"url": offer["url"], "expires_at": offer.get("expires_at")}
    if offer.get("resume_token"):
        # a SmartOS target kept a cut receive: the source sends the rest of that stream
        answer["resume_token"] = offer["resume_token"]
    return answer


def send_params(ctx: StepContext) -> dict[str, Any]:
    # the URL the target answered to this sync's receive step (the newest one)
    receive = next((e for e in reversed(ctx.job.chain_results)
                    if e["name"].endswith("receive") and e.get("finished_at")
                    and isinstance(e.get("result"), dict)), None)
    if receive is None:
        raise StepFailed("NoStream", "no receive URL for this sync")
    offer = receive["result"]
    resume = {"resume_token": offer["resume_token"]} if offer.get("resume_token") else {}
    return {**_stream_params(ctx), "url": offer["url"], **resume}


def record_sync(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """One snapshot is on the target: it is the parent of the next increment; older
    migration snapshots go on both sides."""
    sync = result.get("sync") or {}
    m = migration(ctx)
    snapshot = _next_snapshot(m)
    if sync.get("snapshot") not in (None, snapshot):
        raise StepFailed("BadReply", f"the source sent {sync.get('snapshot')!r}, not "
                                     f"{snapshot}")
    sent = int(sync.get("bytes") or 0)
    seconds = float(sync.get("seconds") or 0)
    m.syncs += 1
    m.last_snapshot = snapshot
    m.stream_token = None
    m.sent_bytes = m.total_bytes = sent
    if seconds > 0:
        m.rate_bps = int(sent / seconds)
    # the stream's running entry (migration_progress) gives way to its outcome
    m.progress_history = [e for e in m.progress_history or []
                          if not (e.get("stream") == snapshot and e.get("state") == "running")]
    event(m, f"synced {snapshot} ({sent} bytes in {seconds:.1f} s)", bytes_=sent, total=sent)
    # Only the source's older snapshots go now. The target's wait for the switch's end
    # (keep None): freeing a received snapshot takes btrfs seconds per GiB under the
    # machine's lock there, which the next stream's receive would wait for, inside the
    # switch's downtime.
    keep = {"uuid": ctx.job.machine_uuid, "migration_uuid": m.uuid, "keep": snapshot}
    _send_later(ctx, m.source_server_uuid, "migration_cleanup", keep)
    return {"snapshot": snapshot, "parent": sync.get("parent"), "bytes": sent,
            "seconds": seconds}


# -- switch -----------------------------------------------------------------------------------

def note_running(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    m.was_running = ctx.machine().state == "running"
    return {"was_running": m.was_running}


def begin_switch(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    m.phase = "switch"
    m.was_running = ctx.machine().state == "running"
    # the downtime starts when the stop is sent (the next step sends it in this turn)
    m.stop_sent_at = time.time() if m.was_running else None
    event(m, "stopping the instance" if m.was_running else "switching a stopped instance")
    return {"was_running": m.was_running}


def record_stopped(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    answer = record_state(ctx, result)
    if answer["state"] != "stopped":
        raise StepFailed("StopFailed", f"the source reports the machine {answer['state']}")
    return answer


def record_hidden(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    event(migration(ctx), "hiding the original instance")
    return {"hidden": True}


def move_record(ctx: StepContext) -> dict[str, Any]:
    """The machine is the target's now: its record, its usage (the target's hold), its
    NICs (they belong to the machine: same MACs and IPs). The source keeps its usage for
    the hidden copy until finalize."""
    m = migration(ctx)
    machine = ctx.machine()
    destination = target(ctx)
    if machine.server_uuid != destination:
        held = room.as_held(m.target_held)
        room.switch_to_target(ctx.session, machine.uuid, destination, held)
        m.source_held = held
        machine.server_uuid = destination
    event(m, "switching instances")
    return {"server_uuid": destination}


def activate_params(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    if m.last_snapshot is None:
        raise StepFailed("NothingSynced", "no snapshot reached the target")
    return {"uuid": ctx.job.machine_uuid, "migration_uuid": m.uuid,
            "snapshot": m.last_snapshot}


def record_activated(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    answer = record_state(ctx, result)
    event(migration(ctx), "promoting the migrated instance")
    return answer


def record_started(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """The target runs: the downtime ends (the head node's clock, both ends)."""
    answer = record_state(ctx, result)
    if answer["state"] != "running":
        raise StepFailed("StartFailed", f"the target reports the machine {answer['state']}")
    m = migration(ctx)
    if m.stop_sent_at is not None:
        m.downtime_ms = int((time.time() - m.stop_sent_at) * 1000)
    event(m, "starting the migrated instance")
    return {**answer, "downtime_ms": m.downtime_ms}


def end_switch(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    m.state = "successful"
    if not m.was_running:
        m.downtime_ms = 0  # nothing ran: nothing was down
    # the target's received snapshots are not needed once its root is made from them
    _send_later(ctx, m.target_server_uuid, "migration_cleanup",
                {"uuid": ctx.job.machine_uuid, "migration_uuid": m.uuid, "keep": None})
    event(m, "removing sync snapshots")
    return {"state": "successful", "downtime_ms": m.downtime_ms}


# -- the clean-up of a failed begin, sync, switch or abort -----------------------------------

def destroy_target_later(ctx: StepContext) -> dict[str, Any]:
    """Best effort, without waiting: again if a late reply comes (the target may have made
    its copy after this ran). Never while the machine lives there."""
    m = migration(ctx)
    if m.target_server_uuid is None or on_target(ctx):
        return {"sent": None}
    _send_later(ctx, m.target_server_uuid, "machine_destroy", {"uuid": ctx.job.machine_uuid})
    return {"sent": "machine_destroy", "server": m.target_server_uuid}


def cleanup_source_later(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    _send_later(ctx, m.source_server_uuid, "migration_cleanup", cleanup_ref(ctx))
    return {"sent": "migration_cleanup"}


def restore_record(ctx: StepContext) -> dict[str, Any]:
    """The machine is the source's again (if its record had moved), and the target's room
    is given back, whichever form it had (in flight, or usage since the switch)."""
    m = migration(ctx)
    machine = ctx.machine()
    held = room.as_held(m.target_held)
    moved = on_target(ctx)
    if moved:
        room.back_to_source(ctx.session, machine.uuid, m.source_server_uuid,
                            m.target_server_uuid or "", held)
        machine.server_uuid = m.source_server_uuid
        m.source_held = None
    elif m.target_held is not None and m.target_server_uuid is not None:
        room.release_target_hold(ctx.session, m.target_server_uuid, held)
    m.target_held = None
    return {"server_uuid": machine.server_uuid, "released": held, "moved_back": moved}


def mark_failed(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    error = ctx.job.error or {}
    if error.get("code") == "StepTimeout" and broken_stream(m) is not None:
        error = broken_stream(m) or {}  # the end that saw it break says why
    m.state = "failed"
    m.error = {"code": error.get("code", "MigrationFailed"),
               "message": error.get("message", "")}
    m.stream_token = None
    m.finished_at = utcnow()
    event(m, f"{m.error['code']}: {m.error['message']}", state="failed")
    return {"state": "failed"}


# -- abort, finalize, rollback ----------------------------------------------------------------

def _finish(ctx: StepContext, state: str, message: str) -> dict[str, Any]:
    m = migration(ctx)
    m.state = state
    m.finished_at = utcnow()
    event(m, message)
    return {"state": state}


def mark_aborted(ctx: StepContext) -> dict[str, Any]:
    return _finish(ctx, "aborted", "removed the target instance")


def record_source_destroyed(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    state = ((result.get("machine") or {}).get("state"))
    if state != "destroyed":
        raise StepFailed("DestroyFailed", f"the source reports its copy {state}")
    return {"source": "destroyed"}


def release_source(ctx: StepContext) -> dict[str, Any]:
    m = migration(ctx)
    if m.source_held is not None:
        room.release_source(ctx.session, m.source_server_uuid, room.as_held(m.source_held))
        m.source_held = None
    return {"released": m.source_server_uuid}


def mark_finalized(ctx: StepContext) -> dict[str, Any]:
    return _finish(ctx, "successful", "removed the original instance")


def finalize_failed(ctx: StepContext) -> dict[str, Any]:
    """Finalize may be asked again: the migration stays switched, with the reason."""
    m = migration(ctx)
    error = ctx.job.error or {}
    m.phase, m.state = "switch", "successful"
    m.error = {"code": error.get("code", "FinalizeFailed"), "message": error.get("message", "")}
    event(m, f"finalize failed: {m.error['message']}", state="failed", phase="finalize")
    return {"state": m.state}


def record_back(ctx: StepContext) -> dict[str, Any]:
    """Rollback: the machine is the source's again; the target's usage is given back."""
    result = restore_record(ctx)
    event(migration(ctx), "the original instance is the instance again")
    return result


def mark_rolled_back(ctx: StepContext) -> dict[str, Any]:
    return _finish(ctx, "rolled_back", "rolled back to the original instance")


def rollback_failed(ctx: StepContext) -> dict[str, Any]:
    """A rollback that did not get the record back leaves the migration switched (the
    machine stays on the target and rollback may be asked again); one that did is rolled
    back, with the reason (the target copy goes best effort)."""
    m = migration(ctx)
    error = ctx.job.error or {}
    m.error = {"code": error.get("code", "RollbackFailed"), "message": error.get("message", "")}
    if on_source(ctx):
        m.target_held = None
        m.state, m.finished_at = "rolled_back", utcnow()
        _send_later(ctx, m.target_server_uuid, "machine_destroy",
                    {"uuid": ctx.job.machine_uuid})
    else:
        m.phase, m.state = "switch", "successful"
    event(m, f"rollback failed: {m.error['message']}", state="failed", phase="rollback")
    return {"state": m.state}


def recover_server(ctx: StepContext) -> str | None:
    """Where the machine's record is: a failed rollback shows and starts it there."""
    return ctx.machine().server_uuid
