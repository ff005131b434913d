"""Migrating a machine to another server, one workflow per action (RFD 34's phases; the
steps' functions are :mod:`workflows.migration_steps`).

- ``migrate_begin``: the request placed the target and held its room; the target makes a
  hidden copy of the machine (same uuid, NICs, MACs and IPs), not started.
- ``migrate_sync``: one new read-only snapshot streamed source -> target (the target offers
  a URL for a fresh one-time token, the source sends to it; an increment from the last
  snapshot after the first).
- ``migrate_switch``: stop the source (if it ran), a last sync, hide the source, move the
  machine's record and usage to the target, make the target's root and show it, start it
  (if the machine ran). The downtime is the head node's: stop sent -> target running.
- ``migrate_finalize``: destroy the hidden source copy, release its room.
- ``migrate_rollback``: after a switch, while the source copy exists: stop and hide the
  target, the record back, show and start the source, destroy the target copy.
- ``migrate_abort``: before a switch: destroy the target copy, the source's migration
  snapshots, release the target's room.
- ``migrate_automatic``: begin, two syncs and the switch in one job.

A failure in begin, sync, switch or abort runs :data:`CLEANUP`: the machine ends on its
source, shown and in its state before, the target copy destroyed, the target's room given
back and the migration ``failed`` with the reason.
"""

from __future__ import annotations

from workflows import migration_steps as s
from workflows.engine import Step, Workflow, register
from workflows.machines import ACTION_TIMEOUT, DESTROY_TIMEOUT, RECORD_TIMEOUT, record_state

#: a stream's step waits this long for its reply, and as long again each time its ends
#: were heard from meanwhile (progress events): a dead source is noticed in minutes, a long
#: stream that moves is never cut. Its step is not asked twice meanwhile.
SYNC_TIMEOUT = s.STREAM_QUIET
#: the most one stream may take, whatever its progress (the workflows' own timeouts)
MAX_STREAM = 6 * 3600
PHASE_TIMEOUT = 900
SYNC_JOB_TIMEOUT = MAX_STREAM + PHASE_TIMEOUT
SWITCH_JOB_TIMEOUT = MAX_STREAM + 2 * PHASE_TIMEOUT
AUTOMATIC_JOB_TIMEOUT = 3 * MAX_STREAM + 2 * PHASE_TIMEOUT


BEGIN = (
    Step("begin", RECORD_TIMEOUT, run=s.begin),
    Step("prepare_target", ACTION_TIMEOUT, agent_op="migration_target_prepare",
         server=s.target, params=s.prepare_params, on_result=s.record_prepared, retries=1),
)


def sync_steps(prefix: str = "") -> tuple[Step, ...]:
    """One sync; ``prefix`` names the steps of each sync of a job apart."""
    return (
        Step(f"{prefix}plan_sync", RECORD_TIMEOUT, run=s.plan_sync),
        Step(f"{prefix}receive", ACTION_TIMEOUT, agent_op="migration_receive",
             server=s.target, params=s.receive_params, on_result=s.record_receive),
        Step(f"{prefix}send", SYNC_TIMEOUT, agent_op="migration_send", server=s.source,
             params=s.send_params, on_result=s.record_sync, resend=False,
             alive=s.stream_alive),
    )


SWITCH = (
    Step("begin_switch", RECORD_TIMEOUT, run=s.begin_switch),
    Step("stop_source", ACTION_TIMEOUT, agent_op="machine_stop", server=s.source,
         params=s.machine_ref, on_result=s.record_stopped, when=s.was_running),
    *sync_steps("final_"),
    Step("hide_source", ACTION_TIMEOUT, agent_op="migration_hide", server=s.source,
         params=s.hide_ref(True), on_result=s.record_hidden),
    Step("move_record", RECORD_TIMEOUT, run=s.move_record),
    Step("activate_target", ACTION_TIMEOUT, agent_op="migration_activate", server=s.target,
         params=s.activate_params, on_result=s.record_activated),
    Step("start_target", ACTION_TIMEOUT, agent_op="machine_start", server=s.target,
         params=s.machine_ref, on_result=s.record_started, when=s.was_running),
    Step("end_switch", RECORD_TIMEOUT, run=s.end_switch),
)

#: the clean-up of a failed begin, sync, switch or abort (its steps look at how far the
#: migration got): the machine on its source only, the target copy and room gone
CLEANUP = (
    # waited for: the migration is failed once the target has no copy left (a target
    # agent restarted meanwhile gets it from its queue), and a copy that may run (the
    # record had moved) is gone before the source starts
    Step("destroy_target_now", ACTION_TIMEOUT, agent_op="machine_destroy", server=s.target,
         params=s.machine_ref, when=s.has_target),
    # again if a late reply comes: the target may make its copy after this ran
    Step("destroy_target", RECORD_TIMEOUT, run=s.destroy_target_later,
         repeat_on_late_reply=True),
    Step("cleanup_source", RECORD_TIMEOUT, run=s.cleanup_source_later),
    Step("restore_record", RECORD_TIMEOUT, run=s.restore_record, retries=2),
    # a hidden source would never be reported again: tried harder (an agent restarting
    # meanwhile takes the call from its queue)
    Step("show_source", ACTION_TIMEOUT, agent_op="migration_hide", server=s.source,
         params=s.hide_ref(False), when=s.switching, retries=2),
    Step("start_source", ACTION_TIMEOUT, agent_op="machine_start", server=s.source,
         params=s.machine_ref, on_result=record_state, when=s.switching_running, retries=1),
    Step("mark_failed", RECORD_TIMEOUT, run=s.mark_failed, retries=2),
)

PAUSE = Step("pause", RECORD_TIMEOUT, run=s.pause)

MIGRATE_BEGIN = register(Workflow("migrate_begin", chain=(*BEGIN, PAUSE), onerror=CLEANUP,
                                  timeout=PHASE_TIMEOUT))
MIGRATE_SYNC = register(Workflow("migrate_sync", chain=(*sync_steps(), PAUSE),
                                 onerror=CLEANUP, timeout=SYNC_JOB_TIMEOUT))
MIGRATE_SWITCH = register(Workflow("migrate_switch", chain=SWITCH, onerror=CLEANUP,
                                   timeout=SWITCH_JOB_TIMEOUT))
MIGRATE_AUTOMATIC = register(Workflow(
    "migrate_automatic",
    chain=(*BEGIN, *sync_steps("first_"), *sync_steps("second_"), *SWITCH),
    onerror=CLEANUP, timeout=AUTOMATIC_JOB_TIMEOUT))

MIGRATE_ABORT = register(Workflow(
    "migrate_abort",
    chain=(
        # no retry, not the wait a destroy of a machine being created needs: the copy was
        # made long ago, and if its node is away the clean-up sends the destroy anyway
        Step("destroy_target", ACTION_TIMEOUT, agent_op="machine_destroy", server=s.target,
             params=s.machine_ref),
        Step("cleanup_source", ACTION_TIMEOUT, agent_op="migration_cleanup",
             server=s.source, params=s.cleanup_ref, retries=1),
        Step("release_target", RECORD_TIMEOUT, run=s.restore_record, retries=2),
        Step("mark_aborted", RECORD_TIMEOUT, run=s.mark_aborted, retries=2),
    ),
    onerror=CLEANUP, timeout=PHASE_TIMEOUT))

MIGRATE_FINALIZE = register(Workflow(
    "migrate_finalize",
    chain=(
        Step("destroy_source", DESTROY_TIMEOUT, agent_op="machine_destroy", server=s.source,
             params=s.machine_ref, on_result=s.record_source_destroyed, retries=1),
        Step("release_source", RECORD_TIMEOUT, run=s.release_source, retries=2),
        Step("mark_finalized", RECORD_TIMEOUT, run=s.mark_finalized, retries=2),
    ),
    onerror=(Step("finalize_failed", RECORD_TIMEOUT, run=s.finalize_failed, retries=2),),
    timeout=PHASE_TIMEOUT))

MIGRATE_ROLLBACK = register(Workflow(
    "migrate_rollback",
    chain=(
        # the source starts if the machine runs now (a switched machine may be stopped and
        # started on its target before the rollback)
        Step("note_state", RECORD_TIMEOUT, run=s.note_running),
        Step("stop_target", ACTION_TIMEOUT, agent_op="machine_stop", server=s.target,
             params=s.machine_ref, on_result=s.record_stopped),
        Step("hide_target", ACTION_TIMEOUT, agent_op="migration_hide", server=s.target,
             params=s.hide_ref(True)),
        Step("record_back", RECORD_TIMEOUT, run=s.record_back, retries=2),
        Step("show_source", ACTION_TIMEOUT, agent_op="migration_hide", server=s.source,
             params=s.hide_ref(False)),
        Step("start_source", ACTION_TIMEOUT, agent_op="machine_start", server=s.source,
             params=s.machine_ref, on_result=record_state, when=s.was_running),
        Step("destroy_target", ACTION_TIMEOUT, agent_op="machine_destroy", server=s.target,
             params=s.machine_ref),
        Step("cleanup_source", ACTION_TIMEOUT, agent_op="migration_cleanup",
             server=s.source, params=s.cleanup_ref),
        Step("mark_rolled_back", RECORD_TIMEOUT, run=s.mark_rolled_back, retries=2),
    ),
    onerror=(
        # the machine is shown (and started, if it ran) wherever its record is
        Step("show_machine", ACTION_TIMEOUT, agent_op="migration_hide",
             server=s.recover_server, params=s.hide_ref(False)),
        Step("start_machine", ACTION_TIMEOUT, agent_op="machine_start",
             server=s.recover_server, params=s.machine_ref, on_result=record_state,
             when=s.was_running),
        Step("rollback_failed", RECORD_TIMEOUT, run=s.rollback_failed, retries=2),
    ),
    timeout=PHASE_TIMEOUT))

#: every migration workflow, by the action that starts it
WORKFLOWS = {"begin": MIGRATE_BEGIN, "sync": MIGRATE_SYNC, "switch": MIGRATE_SWITCH,
             "automatic": MIGRATE_AUTOMATIC, "abort": MIGRATE_ABORT,
             "finalize": MIGRATE_FINALIZE, "rollback": MIGRATE_ROLLBACK}
