"""Output helpers of the ``sdc`` commands: the console, JSON or a table (``emit``),
times, sizes and values for tables, and jobs: their steps as a table, and following one until
it ends.

Imports no command module (every command module may import it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from headnode.cli.client import ApiError
from headnode.cli.context import client, state_of
from sdccommon.redact import redact_url as redact_url  # the commands print URLs

# Piped output (files, CI logs, tests) keeps whole uuids instead of rich's 80 columns.
PIPE_WIDTH = 200
POLL_INTERVAL = 0.2
# Step results can be whole manifests; the table shows their start, `--json` all of them.
RESULT_WIDTH = 80
FINAL_EXECUTIONS = ("succeeded", "failed", "canceled")


# ---------------------------------------------------------------------------- console, JSON


def console(stderr: bool = False) -> Console:
    con = Console(stderr=stderr)
    if not con.is_terminal:
        con = Console(stderr=stderr, width=max(con.width, PIPE_WIDTH))
    return con


def emit(data: Any, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON under ``--json``, else through ``render``."""
    if state_of(click.get_current_context()).as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        render(data)


# ---------------------------------------------------------------------------- formatting


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 strings or unix times, as the API and the job engine give them."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: Any, end: Any) -> float | None:
    begun, ended = parse_time(start), parse_time(end)
    if begun is None:
        return None
    return ((ended or datetime.now(UTC)) - begun).total_seconds()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def fmt_time(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") if parsed else "-"


def fmt_mib(mib: int | None) -> str:
    if mib is None:
        return "-"
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


def fmt_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "-" if value is None else str(value)


def render_object(obj: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in obj:
        table.add_row(key, fmt_value(obj[key]))
    console().print(table)


# ---------------------------------------------------------------------------- jobs


def job_duration(row: dict[str, Any]) -> float | None:
    # A queued job has not started; the time it has waited is not its duration.
    return seconds_between(row.get("started_at"), row.get("finished_at"))


def render_job(row: dict[str, Any]) -> None:
    con = console()
    con.print(f"[bold]job {row.get('uuid')}[/] {row.get('name', '')}: "
              f"{row.get('execution', '')} (machine {row.get('machine_uuid') or '-'}, "
              f"server {row.get('server_uuid') or '-'}, "
              f"took {fmt_duration(job_duration(row))})", highlight=False)
    if row.get("cancel_requested_at"):
        by = row.get("canceled_by") or {}
        con.print(f"[yellow]cancel asked[/] at {fmt_time(row['cancel_requested_at'])} by "
                  f"{by.get('login') or by.get('type') or '-'}", highlight=False)
    con.print(job_steps_table(row))
    if row.get("error"):
        con.print(f"[red]error:[/] {fmt_job_error(row['error'])}", highlight=False)


def job_steps_table(row: dict[str, Any]) -> Table:
    table = Table("phase", "step", "try", "started", "duration")
    table.add_column("result / error", max_width=RESULT_WIDTH, overflow="ellipsis",
                     no_wrap=True)
    for phase in ("chain", "onerror"):
        results: list[dict[str, Any]] = row.get(f"{phase}_results") or []
        done = {r.get("name") for r in results}
        # The engine's "attempt" counts every scheduling in the whole job; operators want
        # to see how often this step ran.
        tries: dict[str, int] = {}
        for res in results:
            name = str(res.get("name", ""))
            tries[name] = tries.get(name, 0) + 1
            outcome = (f"[red]{fmt_job_error(res['error'])}[/]" if res.get("error")
                       else fmt_value(res.get("result")))
            table.add_row(phase, name, str(tries[name]),
                          fmt_time(res.get("started_at")),
                          fmt_duration(seconds_between(res.get("started_at"),
                                                       res.get("finished_at"))), outcome)
        # Steps that never ran show too, so the whole workflow reads in one table.
        if phase == "onerror" and not results:
            continue
        for name in row.get(phase) or []:
            if name not in done:
                table.add_row(phase, name, "", "-", "-", "[dim]not run[/]")
    return table


def fmt_job_error(error: Any) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if code or message:
            return f"{code or 'Error'}: {message or ''}".rstrip(": ")
    return fmt_value(error)


# ---------------------------------------------------------------------------- following jobs


def current_step(row: dict[str, Any]) -> str:
    """The step a job is at, from its recorded results (the engine runs them in order)."""
    phase = row.get("phase") or "chain"
    names: list[str] = row.get(phase) or []
    results: list[dict[str, Any]] = row.get(f"{phase}_results") or []
    if not results:
        return names[0] if names else "queued"
    last = results[-1]
    last_name = str(last.get("name"))
    if last.get("finished_at") is None or last.get("error"):
        return last_name  # running, or about to be retried
    try:
        return names[names.index(last_name) + 1]
    except (ValueError, IndexError):
        return last_name


def wait_for_job(job_uuid: str, on_poll: Callable[[dict[str, Any]], None] | None = None,
                 timeout: float = 600.0) -> dict[str, Any]:
    """Poll the job until its execution is final; return it."""
    deadline = time.monotonic() + timeout
    ops = client()
    while True:
        row = ops.get(f"/ops/jobs/{job_uuid}")
        if on_poll:
            on_poll(row)
        if row.get("execution") in FINAL_EXECUTIONS:
            return dict(row)
        if time.monotonic() > deadline:
            raise click.ClickException(f"job {job_uuid} still {row.get('execution')} "
                                       f"after {timeout:g} s")
        time.sleep(POLL_INTERVAL)


def follow_job(job_uuid: str, machine_uuid: str | None) -> None:
    """Show the job's steps as they finish, then the machine's state; exit 1 on failure."""
    row = watch_job(job_uuid)
    machine = fetch_machine(machine_uuid) if machine_uuid else None
    if state_of(click.get_current_context()).as_json:
        click.echo(json.dumps({"job": row, "machine": machine}, indent=2, default=str))
    elif machine is not None:
        click.echo(f"machine {machine.get('uuid')} ({machine.get('alias') or '-'}) is "
                   f"{machine.get('state')}")
    if row.get("execution") in ("failed", "canceled"):
        click.echo(f"job {job_uuid} {row['execution']}: {fmt_job_error(row.get('error'))}",
                   err=True)
        raise click.exceptions.Exit(1)


def watch_job(job_uuid: str, timeout: float = 600.0) -> dict[str, Any]:
    """Show the job's steps on stderr as they finish, and the step it is at, until it ends;
    the job as it ended."""
    err = console(stderr=True)
    printed: set[tuple[str, str, Any]] = set()

    with err.status(f"job {job_uuid}: queued") as status:
        def show(row: dict[str, Any]) -> None:
            for phase in ("chain", "onerror"):
                for res in row.get(f"{phase}_results") or []:
                    key = (phase, res.get("name"), res.get("attempt"))
                    if res.get("finished_at") is None or key in printed:
                        continue
                    printed.add(key)
                    mark = "[red]x[/]" if res.get("error") else "[green]ok[/]"
                    took = fmt_duration(seconds_between(res.get("started_at"),
                                                        res.get("finished_at")))
                    err.print(f"  {mark} {phase}/{res.get('name')} ({took})", highlight=False)
            status.update(f"job {job_uuid} ({row.get('name', '')}): "
                          f"{row.get('execution')}, step [bold]{current_step(row)}[/]")

        return wait_for_job(job_uuid, show, timeout)


def fetch_machine(machine_uuid: str) -> dict[str, Any] | None:
    try:
        return dict(client().get(f"/ops/machines/{machine_uuid}"))
    except ApiError as exc:
        if exc.status == 404:  # a destroyed machine may be gone from the API
            return {"uuid": machine_uuid, "state": "destroyed"}
        raise
