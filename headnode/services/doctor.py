"""The doctor: every node's truth (its last status report, kept on the server row) against
the records, and the records against each other.

What it finds (``kind``):

- ``orphan``: a machine on a node that the records do not have there (no record, destroyed
  in the records, or recorded on another server);
- ``missing``: a live record (running, stopped, unknown) its node's last report left out;
- ``drift``: the node and the records disagree on a machine's state (a ``failed`` record the
  node runs; running against stopped);
- ``leaked_reservation``: room held for a machine that is destroyed, failed or gone, or a
  running machine holding none;
- ``leaked_ip``: an address held by a machine that is destroyed, failed or gone;
- ``stuck_job``: a job past its step deadline or its workflow's timeout that the reconciler
  has not moved on;
- ``node_leftover``: something a node made for a machine's network (a veth, an nft chain, a
  network namespace) that no machine of the node owns any more, as its last report said.

Machines a job is changing are left to the job, and a report older than the record's last
change says nothing about it. ``repair`` fixes records and releases leaks; it never
destroys a dataset or a container: for those a finding says what an operator would run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from headnode.services import capacity
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, NotFound
from headnode.services.networks import release_nics
from headnode.services.suspicion import suspect, utc
from headnode.store.models import Job, Machine, Nic, Reservation, Server
from workflows.engine import REGISTRY, new_job
from workflows.params import PurgeParams

#: states in which a machine is on its node
ON_NODE = ("running", "stopped", "unknown")
#: states in which a machine holds no room and no address
ENDED = ("destroyed", "failed")
#: a job is stuck this long after a deadline the reconciler should have acted on
STUCK_AFTER = 60.0
#: Redis hash: server uuid -> {"taken_at", "leftovers"} of its last report that had any
LEFTOVERS_KEY = "sdc:leftovers"
#: a report's time and the server row's copy of it agree to within this (seconds)
SAME_REPORT = 0.001

log = logging.getLogger(__name__)


@dataclass
class Finding:
    kind: str
    detail: str
    server_uuid: str | None = None
    machine_uuid: str | None = None
    job_uuid: str | None = None
    #: what ``repair`` does about it (None: nothing it may do on its own)
    repair: str | None = None
    #: what an operator would run (None: nothing needed beyond ``repair``)
    operator: str | None = None
    repaired: bool = False

    def key(self) -> tuple[str, str | None, str | None, str | None]:
        return (self.kind, self.server_uuid, self.machine_uuid, self.job_uuid)


#: what the comparison reads of a machine record
RECORD_COLUMNS = (Machine.uuid, Machine.server_uuid, Machine.state, Machine.job_uuid,
                  Machine.updated_at, Machine.destroyed_at, Machine.missing_since,
                  Machine.missing_asked_at, Machine.missing_confirmed_at)


@dataclass
class _Report:
    server: Server
    taken_at: datetime
    machines: dict[str, str]


def check(session: Session, now: float | None = None, stuck_after: float = STUCK_AFTER,
          leftovers: Mapping[str, Any] | None = None
          ) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Every finding, and the servers whose truth could not be compared (with why).
    ``leftovers``: what :func:`read_leftovers` found (None: not looked at)."""
    now = time.time() if now is None else now
    reports, skipped = _reports(session)
    findings = [*_node_findings(session, reports), *_leaks(session),
                *_stuck_jobs(session, now, stuck_after),
                *_leftover_findings(reports, leftovers or {})]
    return findings, skipped


# -- what nodes made and no machine owns -------------------------------------------------------
#
# A node's leftovers are its word of the moment, renewed with every report, as its heartbeat
# is: they are kept beside the heartbeats in Redis (not a record of ours, so not a column),
# and those of a report other than the server's last applied one are not believed.

def keep_leftovers(client: redis.Redis, raw_status: Mapping[str, Any]) -> None:
    """Keep what a node's status report lists as ``leftovers`` (after the report applied)."""
    server_uuid, found = raw_status.get("server_uuid"), raw_status.get("leftovers") or []
    if not isinstance(server_uuid, str):
        return
    if not found:
        client.hdel(LEFTOVERS_KEY, server_uuid)
        return
    client.hset(LEFTOVERS_KEY, server_uuid, json.dumps(
        {"taken_at": raw_status.get("timestamp"), "leftovers": [str(x) for x in found]}))


def read_leftovers(redis_url: str) -> dict[str, Any]:
    """Every node's kept leftovers ({server uuid: {"taken_at", "leftovers"}})."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return {_text(k): json.loads(v) for k, v in client.hgetall(LEFTOVERS_KEY).items()}
    finally:
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _leftover_findings(reports: Sequence[_Report],
                       leftovers: Mapping[str, Any]) -> Iterable[Finding]:
    for report in reports:
        kept = leftovers.get(report.server.uuid)
        if not kept or not isinstance(kept.get("taken_at"), (int, float)):
            continue
        if abs(kept["taken_at"] - report.taken_at.timestamp()) > SAME_REPORT:
            continue  # an older report's (or a newer one's not applied yet): not believed
        for leftover in kept.get("leftovers") or []:
            detail, command = removal(str(leftover))
            yield Finding("node_leftover", f"{detail} (on {report.server.hostname})",
                          report.server.uuid, operator=command)


#: the Linux backend's names (agents/backends/linux): a NIC's host veth end is ``v`` and
#: the MAC's 12 hex digits; its nft chain ``nic_`` and the same, in table ``bridge sdc``,
#: jumped to from map ``nics`` by the veth's name; a machine's namespace is a file named by
#: its uuid in the directory beside runc's state (``<SDC_RUNC_ROOT>-netns``)
NFT_TABLE = "bridge sdc"
NFT_MAP = "nics"
NETNS_DIR = "/run/sdc-runc-netns"


def removal(leftover: str) -> tuple[str, str]:
    """What a leftover (``kind:name``) is, and the command that removes it, run on its node
    (in the node's network namespace when the agent has SDC_NODE_NETNS)."""
    kind, _, name = leftover.partition(":")
    if kind == "veth":
        return (f"veth {name}: the host end of a NIC no machine has",
                f"ip link delete {name}")
    if kind == "nft":
        veth = "v" + name.removeprefix("nic_")
        return (f"nft chain {name}: the anti-spoofing rules of a NIC no machine has",
                f'nft delete element {NFT_TABLE} {NFT_MAP} {{ "{veth}" }}; '
                f"nft delete chain {NFT_TABLE} {name}")
    if kind == "netns":
        path = f"{NETNS_DIR}/{name}"
        return (f"network namespace of machine {name}, which the node does not have "
                f"({NETNS_DIR} with the default SDC_RUNC_ROOT)",
                f"umount {path}; rm {path}")
    return f"{leftover}: made by the node, owned by no machine", f"remove {leftover} by hand"


def _reports(session: Session) -> tuple[list[_Report], list[dict[str, Any]]]:
    reports, skipped = [], []
    for server in session.scalars(select(Server).order_by(Server.hostname, Server.uuid)):
        if server.status != "running":
            skipped.append({"server_uuid": server.uuid, "reason": f"server is {server.status}"})
        elif server.reported_machines is None or server.last_status_at is None:
            skipped.append({"server_uuid": server.uuid, "reason": "no status report yet"})
        else:
            reports.append(_Report(server, utc(server.last_status_at),
                                   dict(server.reported_machines)))
    return reports, skipped


def _node_findings(session: Session, reports: Sequence[_Report]) -> Iterable[Finding]:
    if not reports:
        return
    # the columns compared, not whole machines (with their NICs): a fleet is many rows
    live = session.execute(select(*RECORD_COLUMNS).where(
        Machine.server_uuid.in_([r.server.uuid for r in reports]),
        Machine.state.in_(ON_NODE))).all()
    records = {m.uuid: m for m in live}
    by_server: dict[str, list[Any]] = {}
    for m in live:
        by_server.setdefault(m.server_uuid, []).append(m)
    # listed by a node but not live there: few (orphans, failed), read by uuid
    others = sorted({uuid for r in reports for uuid in r.machines} - set(records))
    for chunk in range(0, len(others), 1000):
        records.update((m.uuid, m) for m in session.execute(
            select(*RECORD_COLUMNS).where(Machine.uuid.in_(others[chunk:chunk + 1000]))))
    for report in reports:
        yield from _compare(report, records, by_server.get(report.server.uuid, []))


def _compare(report: _Report, records: dict[str, Any],
             live_here: list[Any]) -> Iterable[Finding]:
    server_uuid = report.server.uuid
    for uuid, node_state in sorted(report.machines.items()):
        record = records.get(uuid)
        if record is not None and (record.job_uuid is not None
                                   or _changed_after(record, report.taken_at)):
            continue  # a job is on it, or the report is older than our news of it
        finding = _listed_finding(server_uuid, uuid, node_state, record)
        if finding is not None:
            yield finding
    for record in live_here:
        if (record.uuid not in report.machines and record.job_uuid is None
                and not _changed_after(record, report.taken_at)):
            yield _missing(record, report)


def _changed_after(record: Any, taken_at: datetime) -> bool:
    return max(utc(t) for t in (record.updated_at, record.destroyed_at)
               if t is not None) > taken_at


def _listed_finding(server_uuid: str, uuid: str, node_state: str,
                    record: Any) -> Finding | None:
    purge = f"sdc doctor purge {server_uuid} {uuid}"
    if record is None:
        return Finding("orphan", f"on the node ({node_state}), no record of it", server_uuid,
                       uuid, operator=purge)
    if record.server_uuid != server_uuid:
        return Finding("orphan", f"on the node ({node_state}), recorded on server "
                       f"{record.server_uuid} ({record.state})", server_uuid, uuid,
                       operator=purge)
    if record.state == "destroyed":
        return Finding("orphan", f"destroyed in the records, {node_state} on the node",
                       server_uuid, uuid, operator=purge)
    if record.state == "failed":
        return Finding("drift", f"failed in the records (no reservation, no address), "
                       f"{node_state} on the node", server_uuid, uuid,
                       operator=f"sdc vm delete {uuid}")
    if record.state in ("running", "stopped") and node_state in ("running", "stopped") \
            and node_state != record.state:
        return Finding("drift", f"{record.state} in the records, {node_state} on the node",
                       server_uuid, uuid, repair=f"record it {node_state}")
    return None


def _missing(record: Any, report: _Report) -> Finding:
    if record.missing_since is None:
        detail, repair = ("left out of the node's last report", "ask the node about it "
                          "(destroyed only if the node confirms it is not there)")
    else:
        asked = (f", the node said {_iso(record.missing_confirmed_at)} it does not have it "
                 "(destroyed at its next report that agrees)" if record.missing_confirmed_at
                 else f", asked {_iso(record.missing_asked_at)}" if record.missing_asked_at
                 else ", not asked yet")
        since = utc(record.missing_since).isoformat()
        detail, repair = f"left out of reports since {since}{asked}", None
    return Finding("missing", f"{record.state} in the records, {detail}", report.server.uuid,
                   record.uuid, repair=repair)


def _leaks(session: Session) -> Iterable[Finding]:
    machines = Machine.__table__
    rows = session.execute(
        select(Reservation.machine_uuid, Reservation.server_uuid, Reservation.state,
               Reservation.job_uuid, machines.c.state, machines.c.job_uuid, Job.execution)
        .outerjoin(machines, machines.c.uuid == Reservation.machine_uuid)
        .outerjoin(Job, Job.uuid == Reservation.job_uuid)
        .where(Reservation.state.in_(("held", "committed")))
    ).all()
    for uuid, server_uuid, res_state, _res_job, state, job_uuid, execution in rows:
        if job_uuid is not None or execution in ("queued", "running"):
            continue  # the job that holds it releases or commits it
        if state is None or state in ENDED:
            yield Finding("leaked_reservation",
                          f"{res_state} reservation of a machine that is {state or 'gone'}",
                          server_uuid, uuid, repair="release it")
    unreserved = session.execute(
        select(Machine.uuid, Machine.server_uuid, Machine.state)
        .outerjoin(Reservation, (Reservation.machine_uuid == Machine.uuid)
                   & (Reservation.state == "committed"))
        .where(Machine.state.in_(("running", "stopped")), Machine.job_uuid.is_(None),
               Reservation.machine_uuid.is_(None))
    ).all()
    for uuid, server_uuid, state in unreserved:
        yield Finding("leaked_reservation", f"{state} but holds no reservation: its room on "
                      "the server is counted free", server_uuid, uuid,
                      operator=f"sdc vm delete {uuid}")
    nics = session.execute(
        select(Nic.machine_uuid, Nic.ip, machines.c.state, machines.c.server_uuid)
        .outerjoin(machines, machines.c.uuid == Nic.machine_uuid)
        .where(machines.c.job_uuid.is_(None)
               & ((machines.c.state.in_(ENDED)) | machines.c.uuid.is_(None)))
        .order_by(Nic.machine_uuid, Nic.ip)
    ).all()
    for uuid, ip, state, server_uuid in nics:
        yield Finding("leaked_ip", f"{ip} held by a machine that is {state or 'gone'}",
                      server_uuid, uuid, repair="release it")


def _stuck_jobs(session: Session, now: float, stuck_after: float) -> Iterable[Finding]:
    for job in session.scalars(select(Job).where(Job.execution.in_(("queued", "running")))):
        workflow = REGISTRY.get(job.name)
        timeout_at = (job.created_at.timestamp() + workflow.timeout
                      if workflow is not None and job.phase == "chain" else None)
        late = [t for t in (job.step_deadline, timeout_at) if t is not None]
        if late and now - min(late) > stuck_after:
            yield Finding("stuck_job", f"{job.name} job {job.execution}, {job.phase} step "
                          f"{job.step_index}, deadline passed {now - min(late):.0f} s ago",
                          job.server_uuid, job.machine_uuid, job.uuid,
                          operator="check that the reconciler runs (sdc headnode beat)")


def repair(session: Session, findings: Iterable[Finding]) -> None:
    """Fix records and release leaks for the findings that allow it (marks them)."""
    for finding in findings:
        if finding.repair is None or finding.machine_uuid is None:
            continue
        if finding.kind == "leaked_reservation":
            capacity.release(session, finding.machine_uuid)
        elif finding.kind == "leaked_ip":
            release_nics(session, finding.machine_uuid)
        elif finding.kind == "missing":
            _suspect(session, finding.machine_uuid)
        elif finding.kind == "drift":
            _follow_node(session, finding)
        else:
            continue
        finding.repaired = True


def _suspect(session: Session, machine_uuid: str) -> None:
    machine = session.get(Machine, machine_uuid, with_for_update=True)
    if machine is not None and machine.missing_since is None and machine.server_uuid:
        server = session.get(Server, machine.server_uuid)
        suspect(session, machine, server.last_status_at if server is not None
                and server.last_status_at else datetime.now(UTC))


def _follow_node(session: Session, finding: Finding) -> None:
    machine = session.get(Machine, finding.machine_uuid, with_for_update=True)
    server = session.get(Server, finding.server_uuid)
    if machine is None or server is None or machine.job_uuid is not None:
        return
    node_state = (server.reported_machines or {}).get(machine.uuid)
    if node_state in ("running", "stopped") and machine.state in ("running", "stopped"):
        machine.state = node_state


def doctor(ctx: ServiceContext, repair_too: bool = False,
           stuck_after: float = STUCK_AFTER) -> dict[str, Any]:
    """``GET /ops/doctor`` and ``sdc doctor [--repair]``."""
    leftovers, unread = _leftovers_or_why(ctx)
    with ctx.transaction() as session:
        findings, skipped = check(session, stuck_after=stuck_after, leftovers=leftovers)
        skipped.extend(unread)
        if repair_too:
            repair(session, findings)
        servers = len(session.scalars(select(Server.uuid)).all())
    return {"checked_at": datetime.now(UTC).isoformat(), "servers": servers,
            "skipped": skipped, "findings": [asdict(f) for f in findings]}


def _leftovers_or_why(ctx: ServiceContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The nodes' leftovers; while Redis cannot be read, none, and a line that says so (the
    records are still compared)."""
    try:
        return read_leftovers(ctx.settings.redis_url), []
    except (redis.RedisError, OSError, ValueError) as exc:
        log.warning("doctor: node leftovers not read (%s)", exc)
        return {}, [{"server_uuid": None, "reason": f"node leftovers not read: {exc}"}]


def purge_orphan(ctx: ServiceContext, server_uuid: str, machine_uuid: str,
                 caller: dict[str, Any]) -> dict[str, Any]:
    """Start a job that destroys a machine the records do not have on ``server_uuid`` (an
    orphan the doctor found) on that node. The operator asks; the doctor never does."""
    with ctx.transaction() as session:
        server = session.get(Server, server_uuid)
        if server is None:
            raise NotFound("server", server_uuid)
        findings, _ = check(session)
        if not any(f.kind == "orphan" and f.server_uuid == server_uuid
                   and f.machine_uuid == machine_uuid for f in findings):
            raise Conflict(f"machine {machine_uuid} is not an orphan on server {server_uuid} "
                           "(as its last report and the records say)", code="NotAnOrphan")
        job = new_job(session, "purge_orphan", machine_uuid=machine_uuid,
                      server_uuid=server_uuid, owner_uuid=None,
                      params=PurgeParams(machine=machine_uuid).to_json(), caller=caller)
        session.flush()
        job_uuid = job.uuid
    if ctx.jobs is not None:
        ctx.jobs.enqueue(job_uuid)
    return {"server_uuid": server_uuid, "machine_uuid": machine_uuid, "job_uuid": job_uuid}


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).isoformat()
