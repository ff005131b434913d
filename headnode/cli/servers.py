"""``sdc server list|get|setup|update``: the compute nodes, their setup, reservation and
traits."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option, parse_pairs, resolve_server
from headnode.cli.output import console, emit, fmt_mib, render_object


@click.group(cls=SdcGroup)
def server() -> None:
    """Compute nodes: list, inspect, set up, reserve, set traits."""


@server.command("list")
@click.option("--status", type=click.Choice(["running", "unknown"]))
@click.option("--setup/--not-setup", default=None)
@json_option
def server_list(status: str | None, setup: bool | None) -> None:
    params: dict[str, Any] = {"status": status}
    if setup is not None:
        params["setup"] = str(setup).lower()
    emit(client().get("/ops/servers", params), render_servers)


def render_servers(servers: list[dict[str, Any]]) -> None:
    table = Table("uuid", "hostname", "status", "setup", "RAM used/total", "machines")
    for srv in servers:
        used = (srv.get("ram_inflight_mb") or 0) + (srv.get("ram_committed_mb") or 0)
        flags = "yes" if srv.get("setup") else "no"
        if srv.get("reserved"):
            flags += " (reserved)"
        table.add_row(srv.get("uuid", ""), srv.get("hostname", ""), srv.get("status", ""),
                      flags, f"{fmt_mib(used)} / {fmt_mib(srv.get('ram_mb'))}",
                      str(srv.get("machine_count", 0)))
    console().print(table)


@server.command("get")
@click.argument("server_ref", metavar="UUID")
@json_option
def server_get(server_ref: str) -> None:
    emit(client().get(f"/ops/servers/{resolve_server(server_ref)}"), render_object)


@server.command("setup")
@click.argument("server_ref", metavar="UUID")
@json_option
def server_setup(server_ref: str) -> None:
    """Mark a server set up so that it receives machines."""
    emit(client().put(f"/ops/servers/{resolve_server(server_ref)}", {"setup": True}),
         render_object)


@server.command("update")
@click.argument("server_ref", metavar="UUID")
@click.option("--reserved/--no-reserved", default=None,
              help="A reserved server receives no new machines.")
@click.option("--trait", "traits", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Set the server's traits (repeatable; replaces them all).")
@json_option
def server_update(server_ref: str, reserved: bool | None, traits: dict[str, str]) -> None:
    body: dict[str, Any] = {}
    if reserved is not None:
        body["reserved"] = reserved
    if traits:
        body["traits"] = {k: typed_trait(v) for k, v in traits.items()}
    if not body:
        raise click.UsageError("nothing to change: give --reserved/--no-reserved or --trait")
    emit(client().put(f"/ops/servers/{resolve_server(server_ref)}", body), render_object)


def typed_trait(value: str) -> Any:
    """Traits are mostly flags (``ssd=true``); other values stay strings."""
    return {"true": True, "false": False}.get(value.lower(), value)
