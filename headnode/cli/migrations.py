"""``sdc vm migrate ACTION MACHINE [--to SERVER] [--watch]`` and ``sdc vm migration
list|get``: moving a machine to another server in phases (docs/migration.md), through
``/ops/machines/<uuid>/migrate`` and ``/ops/migrations``. ``--watch`` follows the phase
until it ends, printing its steps and the bytes sent, and exits 1 if it failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from headnode.cli.client import ApiError
from headnode.cli.context import SdcGroup, client, json_option, resolve_server
from headnode.cli.output import console, emit, fmt_time, render_object

PHASE_ACTIONS = ("begin", "sync", "switch", "automatic", "abort", "finalize", "rollback")
PLACING_ACTIONS = ("begin", "automatic")
POLL_SECONDS = 0.5
#: a whole automatic migration of a large machine (its jobs' own deadlines end it sooner)
WATCH_TIMEOUT = 4 * 3600.0
#: a phase whose job has ended while its record still says running (a worker that died
#: before the job's error steps could record the failure) counts as over after this long
STALE_SECONDS = 10.0
JOB_OVER = ("succeeded", "failed", "canceled")


def migration_path(machine_uuid: str) -> str:
    return f"/ops/migrations/{machine_uuid}"


@click.command("migrate")
@click.argument("action", type=click.Choice([*PHASE_ACTIONS, "estimate"]))
@click.argument("machine_uuid", metavar="MACHINE")
@click.option("--to", "target", metavar="SERVER", help="begin, automatic: move it to this "
              "server (uuid or hostname); placement still checks it fits there.")
@click.option("--watch", is_flag=True, help="Follow the phase to its end (steps, bytes "
              "sent, rate); exit 1 if it failed.")
@json_option
def vm_migrate(action: str, machine_uuid: str, target: str | None, watch: bool) -> None:
    """Move a machine to another server: begin (place and prepare the target), sync (send
    its data, again and again while it runs), switch (stop, last sync, start it on the
    target), then finalize (remove the source copy) or rollback (back to the source);
    abort before a switch; automatic = begin, sync, switch in one go; estimate."""
    if target and action not in PLACING_ACTIONS:
        raise click.UsageError(f"--to: only with {' or '.join(PLACING_ACTIONS)}")
    body: dict[str, Any] = {"action": action}
    if target:
        body["target_server"] = resolve_server(target)
    answer = client().post(f"/ops/machines/{machine_uuid}/migrate", body)
    if action == "estimate":
        emit(answer, render_estimate)
        return
    if not watch:
        emit(answer, lambda a: click.echo(
            f"migration {action} of {machine_uuid}: job {a.get('job_uuid')} (follow it: "
            f"sdc vm migration get {machine_uuid})"))
        return
    row = watch_migration(machine_uuid, answer, show_progress)
    emit(row, render_outcome)
    if phase_failed(row):
        raise click.exceptions.Exit(1)


def phase_failed(row: dict[str, Any]) -> bool:
    """The phase just ended failed: the migration failed, or a finalize or rollback that
    could not be done left it as it was, with the reason in ``error`` (a phase's start
    clears the error of the one before)."""
    return row.get("state") == "failed" or bool(row.get("error"))


def render_estimate(est: dict[str, Any]) -> None:
    rate = fmt_bytes(est.get("transfer_bytes_second"))
    click.echo(f"size {fmt_bytes(est.get('size'))}, at {rate}/s: about "
               f"{(est.get('eta_ms') or 0) / 1000:.1f} s")


# ---------------------------------------------------------------------------- following


def migration_over(row: dict[str, Any], job_uuid: str | None) -> bool:
    """The phase started as ``job_uuid`` has ended (or another phase has started since)."""
    return row.get("state") != "running" or (job_uuid is not None
                                             and row.get("job_uuid") != job_uuid)


def job_over(job_uuid: str | None) -> bool:
    if job_uuid is None:
        return False
    try:
        return client().get(f"/ops/jobs/{job_uuid}").get("execution") in JOB_OVER
    except ApiError:
        return False


def watch_migration(machine_uuid: str, started: dict[str, Any],
                    on_poll: Callable[[dict[str, Any], dict[str, Any]], None],
                    timeout: float = WATCH_TIMEOUT) -> dict[str, Any]:
    """Poll the machine's migration until the phase ``started`` (the answer that started
    it, with its ``job_uuid``) ends; ``on_poll(row, previous)`` after each read. Returns
    the last row."""
    deadline = time.monotonic() + timeout
    job_uuid, previous = started.get("job_uuid"), started
    stale_since: float | None = None
    while True:
        row = client().get(migration_path(machine_uuid))
        on_poll(row, previous)
        if migration_over(row, job_uuid):
            return dict(row)
        if job_over(row.get("job_uuid")):
            stale_since = stale_since or time.monotonic()
            if time.monotonic() - stale_since > STALE_SECONDS:
                return dict(row)
        if time.monotonic() > deadline:
            raise click.ClickException(f"the migration of {machine_uuid} is still "
                                       f"{row.get('state')} after {timeout:.0f} s")
        previous = row
        time.sleep(POLL_SECONDS)


def show_progress(row: dict[str, Any], previous: dict[str, Any]) -> None:
    """New steps and a changed byte count, on stderr (stdout keeps the outcome)."""
    out = console(stderr=True)
    seen = len(previous.get("progress_history") or [])
    for event in (row.get("progress_history") or [])[seen:]:
        out.print(f"{event.get('phase')}: {event.get('state')} {event.get('message') or ''}"
                  .rstrip(), highlight=False)
    sent = (row.get("sent_bytes"), row.get("total_bytes"))
    if row.get("state") == "running" and row.get("sent_bytes") and (
            sent != (previous.get("sent_bytes"), previous.get("total_bytes"))):
        out.print(f"{row.get('phase')}: {fmt_transfer(row)}", highlight=False)


def fmt_transfer(row: dict[str, Any]) -> str:
    text = f"{fmt_bytes(row.get('sent_bytes'))}"
    if row.get("total_bytes"):
        text += f" of {fmt_bytes(row.get('total_bytes'))}"
    if row.get("rate_bps"):
        text += f" at {fmt_bytes(row.get('rate_bps'))}/s"
    return text


def fmt_bytes(value: Any) -> str:
    amount = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024:
            return f"{amount:.1f} {unit}" if unit != "B" else f"{int(amount)} B"
        amount /= 1024
    return f"{amount:.1f} TiB"


def outcome(row: dict[str, Any]) -> str:
    """One line: where the machine is now, or why the phase failed."""
    where = row.get("target_server_uuid") or "-"
    text = f"{row.get('phase')} {row.get('state')}"
    if phase_failed(row):
        error = row.get("error") or {}
        return f"{text}: {error.get('code', '')} {error.get('message', '')}".rstrip()
    if row.get("phase") in ("switch", "finalize") and row.get("state") == "successful":
        text += f": on server {where}"
        if row.get("downtime_ms") is not None:
            text += f" (downtime {row['downtime_ms']} ms)"
    elif row.get("phase") in ("begin", "sync"):
        text += f" (target {where}; sent {fmt_transfer(row)})"
    return text


def render_outcome(row: dict[str, Any]) -> None:
    click.echo(f"migration of {row.get('machine')}: {outcome(row)}")


# ---------------------------------------------------------------------------- records


@click.group("migration", cls=SdcGroup)
def migration() -> None:
    """Migrations' records: list, get."""


@migration.command("list")
@click.option("--machine", "machine_uuid", metavar="UUID", help="Only this machine's.")
@json_option
def migration_list(machine_uuid: str | None) -> None:
    emit(client().get("/ops/migrations", {"machine": machine_uuid}), render_migrations)


def render_migrations(rows: list[dict[str, Any]]) -> None:
    table = Table("machine", "phase", "state", "source", "target", "sent", "downtime",
                  "created")
    for row in rows:
        downtime = row.get("downtime_ms")
        table.add_row(row.get("machine", ""), row.get("phase", ""), row.get("state", ""),
                      row.get("source_server_uuid") or "-",
                      row.get("target_server_uuid") or "-", fmt_bytes(row.get("sent_bytes")),
                      f"{downtime} ms" if downtime is not None else "-",
                      fmt_time(row.get("created_timestamp")))
    console().print(table)


@migration.command("get")
@click.argument("machine_uuid", metavar="MACHINE")
@json_option
def migration_get(machine_uuid: str) -> None:
    """The machine's newest migration."""
    emit(client().get(migration_path(machine_uuid)), render_object)
