"""``sdc job cancel``: stop a queued or running job at its next step boundary. Added to the
``job`` group of :mod:`headnode.cli.main` when it is imported."""

from __future__ import annotations

import click

from headnode.cli.main import client, emit, job, json_option, render_job, wait_for_job


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
