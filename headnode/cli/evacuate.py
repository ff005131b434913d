"""``sdc server evacuate UUID [--parallel N]``: empty a server for repair. The server goes
into maintenance first (it takes no new machine, not even one of its own coming back), then
each of its machines moves where placement puts it (an ``automatic`` migration, then
``finalize`` to remove the source copy and give its room back), N at a time. One line per
machine says where it went or why it could not; the exit status is 1 if any could not."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import click

from headnode.cli.client import ApiError
from headnode.cli.context import client, json_option, resolve_server, state_of
from headnode.cli.migrations import JOB_OVER, STALE_SECONDS, migration_path, phase_failed
from headnode.cli.output import emit

POLL_SECONDS = 0.5
PAGE = 1000
#: answers that mean "not now": more node jobs than the head node runs at once, or the
#: machine in another job (a start, a stop) that will end
BUSY_CODES = frozenset({"TooManyNodeJobs", "MachineBusy"})
BUSY_RETRY_SECONDS = 2.0
#: how long one machine may wait its turn against busy answers before it counts as failed
BUSY_GIVE_UP_SECONDS = 3600.0


@dataclass
class Move:
    """One machine's evacuation: automatic, then finalize."""

    machine: dict[str, Any]
    #: the action under way (automatic, finalize), None before the first start
    action: str | None = None
    job_uuid: str | None = None
    queued_at: float = field(default_factory=time.monotonic)
    retry_at: float = 0.0
    stale_since: float | None = None
    result: dict[str, Any] | None = None

    @property
    def uuid(self) -> str:
        return str(self.machine["uuid"])


@click.command("evacuate")
@click.argument("server_ref", metavar="UUID")
@click.option("--parallel", type=click.IntRange(1, 64), default=1, show_default=True,
              metavar="N", help="How many machines move at once.")
@json_option
def server_evacuate(server_ref: str, parallel: int) -> None:
    """Put the server in maintenance and move every machine on it elsewhere (placement
    picks each target, the machines' affinity rules still hold; a stopped machine moves
    without being started). Waits out a busy head node."""
    server_uuid = resolve_server(server_ref)
    client().put(f"/ops/servers/{server_uuid}", {"maintenance": True})
    moves = run_moves([Move(m) for m in machines_on(server_uuid)], parallel)
    results = [move.result or {} for move in moves]
    failed = [r for r in results if not r.get("moved")]
    emit({"server_uuid": server_uuid, "machines": results},
         lambda _data: click.echo(f"server {server_uuid}: {len(results) - len(failed)} of "
                                  f"{len(results)} machine(s) moved"))
    if failed:
        raise click.exceptions.Exit(1)


def machines_on(server_uuid: str) -> list[dict[str, Any]]:
    """Every machine on the server (but destroyed ones), page after page."""
    found: list[dict[str, Any]] = []
    while True:
        page = client().get("/ops/machines", {"server_uuid": server_uuid, "limit": PAGE,
                                              "offset": len(found)})
        found.extend(page)
        if len(page) < PAGE:
            return found


def run_moves(moves: list[Move], parallel: int) -> list[Move]:
    """Keep ``parallel`` moves under way until every one has ended."""
    waiting, active = list(moves), list[Move]()
    while waiting or active:
        while waiting and len(active) < parallel:
            active.append(waiting.pop(0))
        for move in list(active):
            step(move)
            if move.result is not None:
                active.remove(move)
                report(move)
        if active:
            time.sleep(POLL_SECONDS)
    return moves


def step(move: Move) -> None:
    """Advance one move: start its next action when due, else see whether it ended."""
    if move.action is None:
        start(move, "automatic")
        return
    if move.job_uuid is None:  # refused as busy: try again when due
        start(move, move.action)
        return
    row = client().get(migration_path(move.uuid))
    if (row.get("state") == "running" and row.get("job_uuid") == move.job_uuid
            and not job_stale(move)):
        return
    if row.get("state") != "successful" or phase_failed(row):
        finish(move, row, moved=False)
    elif move.action == "automatic":
        start(move, "finalize")
    else:  # finalized: the source copy is gone and its room given back
        finish(move, row, moved=row.get("finished_timestamp") is not None)


def start(move: Move, action: str) -> None:
    move.action = action
    if time.monotonic() < move.retry_at:
        return
    try:
        answer = client().post(f"/ops/machines/{move.uuid}/migrate", {"action": action})
    except ApiError as exc:
        if exc.code in BUSY_CODES and time.monotonic() - move.queued_at < BUSY_GIVE_UP_SECONDS:
            move.job_uuid, move.retry_at = None, time.monotonic() + BUSY_RETRY_SECONDS
            return
        finish(move, {"phase": action, "state": "refused",
                      "error": {"code": exc.code, "message": exc.message}}, moved=False)
        return
    move.job_uuid, move.stale_since = answer.get("job_uuid"), None


def job_stale(move: Move) -> bool:
    """The phase's job has ended some seconds ago and its record still says running."""
    try:
        execution = client().get(f"/ops/jobs/{move.job_uuid}").get("execution")
    except ApiError:
        return False
    if execution not in JOB_OVER:
        return False
    move.stale_since = move.stale_since or time.monotonic()
    return time.monotonic() - move.stale_since > STALE_SECONDS


def finish(move: Move, row: dict[str, Any], moved: bool) -> None:
    error = row.get("error") or {}
    # a machine whose finalize failed runs on the target, its source copy still there
    switched = row.get("phase") == "switch" and row.get("state") == "successful"
    move.result = {"machine_uuid": move.uuid, "alias": move.machine.get("alias"),
                   "moved": moved, "server_uuid": row.get("target_server_uuid")
                   if moved or switched else move.machine.get("server_uuid"),
                   "phase": row.get("phase"), "state": row.get("state"),
                   "downtime_ms": row.get("downtime_ms"),
                   "error": error or None}


def report(move: Move) -> None:
    """The machine's line (stderr under --json, which prints the whole list at the end)."""
    result = move.result or {}
    name = f"{move.uuid} ({move.machine.get('alias') or '-'})"
    if result.get("moved"):
        downtime = result.get("downtime_ms")
        text = f"{name}: moved to {result.get('server_uuid')}" + (
            f" (downtime {downtime} ms)" if downtime is not None else "")
    else:
        error = result.get("error") or {}
        why = f"{error.get('code', '')} {error.get('message', '')}".strip() or "-"
        text = (f"{name}: not moved, on server {result.get('server_uuid')} "
                f"({result.get('phase')} {result.get('state')}: {why})")
    click.echo(text, err=state_of(click.get_current_context()).as_json)
