"""What compute nodes tell the head node: registration, status reports, heartbeats.

Heartbeats live in Redis (one hash field per server) and reach the database only when a
server's status changes, as CNAPI's reconciler does; a status report makes the node's truth
about its machines win over ours, except for a machine that a job is changing right now.
Registrations and reports also say which overlay peers a node must be sent
(headnode/services/overlay.py); :func:`send_overlay` sends them after the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from headnode.services import overlay
from headnode.services.networks import release_machine_holdings
from headnode.services.suspicion import CLEARED, note, suspect, suspected_since, utc
from headnode.store.models import Machine, Server, utcnow
from schemas.agent import MachineStatusSchema, ServerStatusSchema, SysinfoSchema
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.params import PurgeParams

log = logging.getLogger(__name__)

def register_server(session: Session, raw_sysinfo: dict[str, Any],
                    overlay_out: list[overlay.Message] | None = None) -> Server:
    """Record a node's sysinfo. With ``overlay_out``, the overlay messages to send once
    this commits: the node's own peers (it may have restarted and lost nothing, or been
    rebuilt and lost everything), and, when a set-up node's underlays changed, the new
    peers of every node sharing a changed tag."""
    info = SysinfoSchema().load(raw_sysinfo, unknown="exclude")
    # FOR NO KEY UPDATE: no key changes, so a provision's foreign-key (key-share) lock on
    # this row does not hold a registration up, nor does the registration hold it up.
    server = session.get(Server, info["uuid"], with_for_update={"key_share": True})
    # only a set-up server is anyone's peer: a new one is not, until an operator sets it up
    was = overlay.underlays(server.sysinfo) if server is not None and server.setup else {}
    if server is None:
        # A new node waits for an operator to set it up (CNAPI: setup=false).
        server = Server(uuid=info["uuid"], setup=False, reserved=False, headnode=False,
                        status="running", last_heartbeat=time.time())
        session.add(server)
    server.hostname = info["hostname"]
    server.backend = info["backend"]
    server.cpus = info["cpus"]
    server.ram_mb = info["ram_mb"]
    server.disk_mb = info["pool_size_mb"]
    server.traits = server.traits or info.get("traits") or {}
    server.sysinfo = raw_sysinfo
    if overlay_out is not None:
        overlay_out.extend(overlay.after_registration(session, server, was))
    return server


def apply_status(session: Session, raw_status: dict[str, Any],
                 overlay_out: list[overlay.Message] | None = None) -> int:
    """Record a node's status report; returns how many machines changed state. With
    ``overlay_out``: when the overlay version the node reports is not the one it should
    have, its peers, to send again (lost message, agent restart, node reboot, a peer set up
    or gone; :func:`send_overlay` sends them at most once per resend interval).

    The report is kept on the server row (the doctor compares it with the records). A
    machine the report leaves out is not destroyed on its word: one report may come from a
    confused or second agent. It becomes suspected (``missing_since``) and the node is
    asked about it (:func:`due_questions`); once the node has answered that it does not
    have it (:func:`apply_answer`), the next report that still leaves it out makes it
    destroyed. A report that lists it again clears the suspicion, confirmed or not: so a
    second agent for the node, whose empty reports and answers alternate with the real
    one's, cannot destroy what the real one reports. A ``failed`` machine is never
    flipped to running by a report: it holds no reservation and no address (the doctor
    lists it as drift)."""
    status = ServerStatusSchema().load(raw_status, unknown="exclude")
    # Reports of one server apply one at a time, and lock the server before its machines
    # (as an answer does). FOR NO KEY UPDATE: a provision's foreign-key locks do not wait.
    server = session.get(Server, status["server_uuid"], with_for_update={"key_share": True})
    if server is None:
        return 0  # not registered yet; its registration message is on its way
    taken_at = datetime.fromtimestamp(status["timestamp"], UTC)
    if server.last_status_at is not None and taken_at < utc(server.last_status_at):
        return 0  # older than the report we already applied: it says nothing newer
    server.pool_used_mb = status["pool_used_mb"]
    server.last_status_at = taken_at
    reported = {m["uuid"]: m for m in status["machines"]}
    server.reported_machines = reported_states(server.reported_machines, status)
    if overlay_out is not None:
        due = overlay.message_for(session, server, repair=True)
        if due.version != status["overlay_version"]:
            overlay_out.append(due)
    ours = session.scalars(
        select(Machine).where(Machine.server_uuid == server.uuid, Machine.state.in_(WATCHED))
        .options(lazyload(Machine.nics))  # a report never needs them
    ).all()
    return follow_report(session, ours, reported, taken_at, full=status["full"])


def reported_states(kept: dict[str, str] | None, status: dict[str, Any]) -> dict[str, str]:
    """The machines a server row keeps as its node's last word: a full report replaces
    them, a delta report (only the machines that changed) is merged into them."""
    states = {m["uuid"]: m["state"] for m in status["machines"]}
    return states if status["full"] else {**(kept or {}), **states}


def follow_report(session: Session, ours: Iterable[Machine], reported: dict[str, Any],
                  taken_at: datetime, full: bool = True) -> int:
    """Make our machines of one server (``ours``, WATCHED states) follow its report
    (``reported``: machine uuid -> MachineStatusSchema dict); returns how many changed
    state. Only a full report speaks about a machine it leaves out: a delta report lists
    what changed, so its silence suspects nothing and destroys nothing."""
    changed = 0
    for machine in ours:
        node = reported.get(machine.uuid)
        if node is None and not full:
            continue
        if (node is not None and machine.missing_since is not None
                and taken_at >= utc(machine.missing_since)):
            # listed again by a report taken after the one that left it out
            note(session, machine, **CLEARED)
        if machine.job_uuid is not None:
            continue  # a job is changing it; the job records the result
        if machine.updated_at is not None and utc(machine.updated_at) > taken_at:
            # The report was taken before our last news of this machine (a job that has
            # just finished, a report delayed in the queue): it cannot contradict it.
            continue
        if node is None:
            if machine.state == "failed":
                continue  # never made it onto the node
            if machine.missing_confirmed_at is not None:
                mark_gone(session, machine)  # the node said so, and says so again
                changed += 1
            elif machine.missing_since is None:
                suspect(session, machine, taken_at)  # the node is asked before we believe it
        elif _follow_node(machine, node["state"]):
            changed += 1
    return changed


#: ``<prefix><server uuid>``: an overlay message went to the node within the resend interval
OVERLAY_SENT_KEY = "sdc:overlay:sent:"

Send = Callable[[str, str, list[Any]], None]


def send_overlay(messages: Iterable[overlay.Message], send: Send, client: redis.Redis,
                 interval: float) -> list[overlay.Message]:
    """Send overlay messages after their transaction committed; returns those sent.

    A change is always sent. A repair (the node reported another version) is sent only if
    nothing went to the node in the last ``interval`` seconds, so a slow node, whose
    reports keep the old version until it has applied the new one, is not sent the same
    peers with each report. The time of the last send is a Redis key with that expiry, not
    the worker's memory: every worker process and host sees it (a report may reach any of
    them), it survives a worker restart, and SET NX makes two reports at once send once."""
    sent = []
    expiry = max(1, int(interval * 1000))
    for message in messages:
        key = OVERLAY_SENT_KEY + message.server_uuid
        if not client.set(key, message.version, px=expiry, nx=message.repair):
            continue
        send(*message.task())
        sent.append(message)
    return sent


#: the overlay directory's digest as the reconciler last sent it
OVERLAY_DIRECTORY_KEY = "sdc:overlay:directory"


def overlay_directory_changes(session: Session, client: redis.Redis) -> list[overlay.Message]:
    """Every overlay node's peers when the directory changed since the reconciler last
    looked, else nothing. This is what brings a server's set-up (or its removal from
    service) to the other nodes within a reconcile interval: the operator's API cannot send
    agent tasks itself, and waiting for each node's next status report would take up to
    its report interval."""
    nodes = overlay.overlay_nodes(session)
    digest = overlay.directory_digest(nodes)
    if client.getset(OVERLAY_DIRECTORY_KEY, digest) in (digest, digest.encode()):
        return []
    return overlay.everyone(nodes)


#: machine states a status report speaks about
WATCHED = ("running", "stopped", "unknown", "failed")
#: states of a machine its node should have: a report without it raises a question
ON_NODE = ("running", "stopped", "unknown")
#: the reply address of a question (agent.machine_load) about a machine a report left out
MISSING_QUERY = "machine_missing"
#: the agent's error that settles a question: the node does not have the machine
NOT_ON_NODE = "MachineNotFound"


@dataclass(frozen=True)
class Question:
    """Ask ``server_uuid`` whether it has ``machine_uuid`` (sent after the commit).
    ``suspected_since`` names the suspicion asked about: an answer to a question about an
    earlier one (cleared since) settles nothing, whatever the node's and our clocks say."""

    server_uuid: str
    machine_uuid: str
    asked_at: float
    suspected_since: str

    def reply(self) -> dict[str, Any]:
        return {"query": MISSING_QUERY, "machine_uuid": self.machine_uuid,
                "asked_at": self.asked_at, "suspected_since": self.suspected_since}


def _follow_node(machine: Machine, node_state: str) -> bool:
    """The node's running/stopped wins over ours; never over ``failed``."""
    if node_state == machine.state or node_state not in ("running", "stopped"):
        return False
    if machine.state == "failed":
        return False  # no reservation, no NIC: drift for the doctor, not a running machine
    machine.state = node_state
    machine.last_known_state = None
    return True


def due_questions(session: Session, resend_after: float, server_uuid: str | None = None,
                  now: float | None = None,
                  server_uuids: Collection[str] | None = None) -> list[Question]:
    """Suspected machines of running servers not asked about in the last ``resend_after``
    seconds (never asked, or the question or its answer was lost, or the answer settled
    nothing) and not yet confirmed gone; marks them asked now. Only those of
    ``server_uuid`` or ``server_uuids`` when given."""
    now = time.time() if now is None else now
    query = (
        select(Machine).join(Server, Server.uuid == Machine.server_uuid)
        .where(Machine.missing_since.is_not(None), Machine.state.in_(ON_NODE),
               Machine.missing_confirmed_at.is_(None), Machine.job_uuid.is_(None),
               Server.status == "running",
               (Machine.missing_asked_at.is_(None))
               | (Machine.missing_asked_at < now - resend_after))
        .with_for_update(of=Machine, skip_locked=True)
    )
    if server_uuid is not None:
        query = query.where(Machine.server_uuid == server_uuid)
    if server_uuids is not None:
        query = query.where(Machine.server_uuid.in_(sorted(server_uuids)))
    questions = []
    for machine in session.scalars(query).all():
        note(session, machine, missing_asked_at=now)
        questions.append(Question(machine.server_uuid or "", machine.uuid, now,
                                  suspected_since(machine)))
    return questions


def apply_answer(session: Session, reply: dict[str, Any], outcome: dict[str, Any]) -> str:
    """A node's answer to a :class:`Question`: ``confirmed`` (it does not have the machine:
    the next report that leaves it out destroys it), ``present`` (suspicion cleared),
    ``unsettled`` (any other error: asked again later) or ``stale`` (nothing to settle)."""
    machine = session.get(Machine, reply.get("machine_uuid"))
    server = None
    if machine is not None and machine.server_uuid:
        # the server before the machine, as a status report locks them: no lock cycle
        server = session.get(Server, machine.server_uuid, with_for_update={"key_share": True})
        session.refresh(machine, with_for_update=True)
    if (machine is None or machine.missing_since is None or machine.job_uuid is not None
            or machine.state not in ON_NODE
            or machine.server_uuid != outcome.get("server_uuid")
            or reply.get("suspected_since") != suspected_since(machine)):
        return "stale"
    if outcome.get("ok"):
        note(session, machine, **CLEARED)
        node = (outcome.get("result") or {}).get("machine") or {}
        _follow_node(machine, str(node.get("state", "")))
        if server is not None and node.get("state"):
            # the node's word about it, as a report would have kept it: the node's delta
            # reports do not list a machine that did not change, so a stray report that left
            # it out would otherwise stand as the node's last word until its next full one
            server.reported_machines = {**(server.reported_machines or {}),
                                        machine.uuid: str(node["state"])}
        return "present"
    if (outcome.get("error") or {}).get("code") != NOT_ON_NODE:
        return "unsettled"
    if machine.missing_confirmed_at is None:
        note(session, machine, missing_confirmed_at=time.time())
        log.info("machine %s: server %s says it does not have it; destroyed if its next "
                 "report agrees", machine.uuid, machine.server_uuid)
    return "confirmed"


def mark_gone(session: Session, machine: Machine) -> None:
    """Record a machine its node no longer has: destroyed, with everything it held released
    (the same release as the destroy workflow's)."""
    machine.state = "destroyed"
    machine.last_known_state = None
    machine.destroyed_at = utcnow()
    note(session, machine, **CLEARED)
    release_machine_holdings(session, machine.uuid)
    log.info("machine %s: gone from server %s (it said so, and its report agrees); "
             "destroyed, reservation and addresses released", machine.uuid,
             machine.server_uuid)


# -- purge_orphan: an operator removes a machine the records do not have from its node ------

PURGE_TIMEOUT = 120


def orphan_ref(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": PurgeParams.of(ctx.job).machine}


def record_purged(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    node = MachineStatusSchema().load(result.get("machine") or {}, unknown="exclude")
    if node["state"] != "destroyed":
        raise StepFailed("PurgeFailed", f"the node reports the machine {node['state']}")
    uuid = PurgeParams.of(ctx.job).machine
    server = ctx.session.get(Server, ctx.job.server_uuid, with_for_update={"key_share": True})
    if server is not None and uuid in (server.reported_machines or {}):
        # The node's answer is newer than its last report, and the agent counts the answer
        # as that news: no report about this change may come for a while.
        server.reported_machines = {k: v for k, v in (server.reported_machines or {}).items()
                                    if k != uuid}
    return {"state": "destroyed", **release_machine_holdings(ctx.session, uuid)}


PURGE_ORPHAN = register(Workflow(
    name="purge_orphan",
    chain=(Step("destroy_on_node", PURGE_TIMEOUT, agent_op="machine_destroy",
                params=orphan_ref, on_result=record_purged, retries=1),),
    timeout=600,
))
