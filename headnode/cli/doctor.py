"""``sdc doctor [--repair]`` and ``sdc doctor purge SERVER MACHINE``: the records against
every node's truth (``/ops/doctor``).

``sdc doctor`` exits 1 while something is found that a repair did not fix, so a script (or
a fault test) can wait for a clean bill."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option
from headnode.cli.output import console, emit


@click.group(cls=SdcGroup, invoke_without_command=True)
@click.option("--repair", is_flag=True,
              help="Fix records and release leaked reservations and addresses; never "
                   "destroys a machine on a node (it says what to run).")
@click.option("--stuck-after", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds past its deadline before a job counts as stuck.")
@json_option
@click.pass_context
def doctor(ctx: click.Context, repair: bool, stuck_after: float) -> None:
    """Orphans on nodes, records missing from nodes, drift, leaks and stuck jobs."""
    if ctx.invoked_subcommand is not None:
        return
    params = {"stuck_after": stuck_after}
    report = (client().post("/ops/doctor/repair", params=params) if repair
              else client().get("/ops/doctor", params=params))
    emit(report, render_report)
    if any(not f.get("repaired") for f in report.get("findings") or []):
        raise click.exceptions.Exit(1)


def render_report(report: dict[str, Any]) -> None:
    con = console()
    findings = report.get("findings") or []
    for skipped in report.get("skipped") or []:
        con.print(f"[yellow]not compared[/]: server {skipped.get('server_uuid')} "
                  f"({skipped.get('reason')})", highlight=False)
    if not findings:
        con.print(f"[green]nothing found[/] ({report.get('servers', 0)} servers checked)",
                  highlight=False)
        return
    table = Table("kind", "server", "machine / job", "detail", "repair", "operator would run",
                  title=f"{len(findings)} findings")
    for f in findings:
        repair = f.get("repair") or "-"
        if f.get("repaired"):
            repair = f"[green]done[/]: {repair}"
        table.add_row(f.get("kind", ""), _short(f.get("server_uuid")),
                      _short(f.get("machine_uuid") or f.get("job_uuid")), f.get("detail", ""),
                      repair, f.get("operator") or "-")
    con.print(table)


def _short(uuid: str | None) -> str:
    return uuid[:8] if uuid else "-"


@doctor.command("purge")
@click.argument("server_uuid")
@click.argument("machine_uuid")
@json_option
def purge(server_uuid: str, machine_uuid: str) -> None:
    """Destroy an orphan (a machine the records do not have on SERVER) on its node."""
    emit(client().post("/ops/doctor/purge", {"server_uuid": server_uuid,
                                             "machine_uuid": machine_uuid}),
         lambda job: console().print(f"purging {job['machine_uuid']} from "
                                     f"{job['server_uuid']}: job {job['job_uuid']}",
                                     highlight=False))
