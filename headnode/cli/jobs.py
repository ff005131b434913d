"""``sdc job list|get|cancel``: the workflow jobs every change to a machine (or a node's
setup) runs as, following one as it runs, and stopping one at its next step boundary."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option
from headnode.cli.output import (
    console,
    emit,
    fmt_duration,
    fmt_time,
    job_duration,
    render_job,
    wait_for_job,
    watch_job,
)

#: the longest job (a node's setup: a bundle built, installed over SSH) takes under this
WATCH_TIMEOUT = 7200.0


@click.group(cls=SdcGroup)
def job() -> None:
    """Workflow jobs: every change to a machine runs as one."""


@job.command("list")
@click.option("--machine", "machine_uuid", metavar="UUID")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def job_list(machine_uuid: str | None, limit: int) -> None:
    emit(client().get("/ops/jobs", {"machine_uuid": machine_uuid, "limit": limit}),
         render_jobs)


def render_jobs(jobs: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "execution", "machine", "created", "duration")
    for row in jobs:
        table.add_row(row.get("uuid", ""), row.get("name", ""), row.get("execution", ""),
                      row.get("machine_uuid") or "-", fmt_time(row.get("created_at")),
                      fmt_duration(job_duration(row)))
    console().print(table)


@job.command("get")
@click.argument("job_uuid", metavar="UUID")
@click.option("--watch", is_flag=True,
              help="Show each step as it finishes until the job ends, then the job; exit 1 "
                   "unless it succeeded.")
@json_option
def job_get(job_uuid: str, watch: bool) -> None:
    if not watch:
        emit(client().get(f"/ops/jobs/{job_uuid}"), render_job)
        return
    row = watch_job(job_uuid, timeout=WATCH_TIMEOUT)
    emit(row, render_job)
    if row.get("execution") != "succeeded":
        raise click.exceptions.Exit(1)


@job.command("cancel")
@click.argument("job_uuid", metavar="UUID")
@click.option("--wait", is_flag=True,
              help="Wait until the job has ended; exit 1 unless it ended canceled.")
@json_option
def job_cancel(job_uuid: str, wait: bool) -> None:
    """Cancel a job: it stops at its next step boundary and runs its onerror chain (a
    canceled provision leaves nothing behind). Asking twice is harmless; a job that has
    already ended cannot be canceled."""
    row = client().post(f"/ops/jobs/{job_uuid}/cancel")
    if wait:
        row = wait_for_job(job_uuid)
    emit(row, render_job if wait else render_asked)
    if wait and row.get("execution") != "canceled":
        click.echo(f"job {job_uuid} ended {row.get('execution')} before the cancel took "
                   "effect", err=True)
        raise click.exceptions.Exit(1)


def render_asked(row: dict[str, object]) -> None:
    click.echo(f"cancel of job {row.get('uuid')} ({row.get('name')}, {row.get('execution')}) "
               f"asked at {row.get('cancel_requested_at')}: it stops at its next step "
               "boundary (`sdc job get` shows it)")
