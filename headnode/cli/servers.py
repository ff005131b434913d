"""``sdc server list|get|setup|update|maintenance|forget|credentials``: the compute nodes,
their setup, reservation, traits, maintenance, removal and credentials."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from headnode.cli.context import (
    SdcGroup,
    client,
    json_option,
    parse_pairs,
    resolve_server,
    state_of,
)
from headnode.cli.output import console, emit, fmt_mib, render_object
from headnode.config import HeadnodeSettings
from headnode.services.node_credentials import canonical_uuid, write_credentials
from headnode.services.revocation import revoked_among
from headnode.store.db import session_factory
from schemas.mocknodes import node_uuids


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
        if srv.get("maintenance"):
            flags += " (maintenance)"
        table.add_row(srv.get("uuid", ""), srv.get("hostname", ""), srv.get("status", ""),
                      flags, f"{fmt_mib(used)} / {fmt_mib(srv.get('ram_mb'))}",
                      str(srv.get("machine_count", 0)))
    console().print(table)


@server.command("get")
@click.argument("server_ref", metavar="UUID")
@json_option
def server_get(server_ref: str) -> None:
    emit(client().get(f"/ops/servers/{resolve_server(server_ref)}"), render_object)


@server.command("update")
@click.argument("server_ref", metavar="UUID")
@click.option("--reserved/--no-reserved", default=None,
              help="A reserved server receives no new machines.")
@click.option("--trait", "traits", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Set the server's traits (repeatable; replaces them all).")
@click.option("--ssh-host", help="Where the head node reaches the node over SSH (host name "
              "or IP address; '' removes it).")
@click.option("--ssh-port", type=click.IntRange(1, 65535), help="Its SSH port (22 if unset).")
@click.option("--ssh-user", help="The user the head node logs in as (root if unset).")
@json_option
def server_update(server_ref: str, reserved: bool | None, traits: dict[str, str],
                  ssh_host: str | None, ssh_port: int | None, ssh_user: str | None) -> None:
    body: dict[str, Any] = {}
    if reserved is not None:
        body["reserved"] = reserved
    if traits:
        body["traits"] = {k: typed_trait(v) for k, v in traits.items()}
    if ssh_host is not None:
        body["ssh_host"] = ssh_host or None
    if ssh_port is not None:
        body["ssh_port"] = ssh_port
    if ssh_user is not None:
        body["ssh_user"] = ssh_user
    if not body:
        raise click.UsageError("nothing to change: give --reserved/--no-reserved, --trait or "
                               "--ssh-host/--ssh-port/--ssh-user")
    emit(client().put(f"/ops/servers/{resolve_server(server_ref)}", body), render_object)


@server.command("maintenance")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.argument("server_ref", metavar="UUID")
@json_option
def server_maintenance(state: str, server_ref: str) -> None:
    """Put a server in maintenance (no new machines; its own keep running and can still be
    started, stopped and destroyed), or take it out."""
    emit(client().put(f"/ops/servers/{resolve_server(server_ref)}",
                      {"maintenance": state == "on"}), render_object)


@server.command("forget")
@click.argument("server_ref", metavar="UUID")
@json_option
def server_forget(server_ref: str) -> None:
    """Remove a server that holds no machine any more, and revoke its node's credentials
    (its messages and heartbeats are refused from then on; a node set up again needs a new
    uuid). Refused while machines that are not destroyed remain on it."""
    uuid = resolve_server(server_ref)
    client().delete(f"/ops/servers/{uuid}")
    emit({"uuid": uuid, "forgotten": True, "credentials": "revoked"},
         lambda data: console().print(f"server {data['uuid']} forgotten; its node's "
                                      "credentials are revoked"))


def typed_trait(value: str) -> Any:
    """Traits are mostly flags (``ssd=true``); other values stay strings."""
    return {"true": True, "false": False}.get(value.lower(), value)


@server.command("credentials")
@click.argument("server_uuids", nargs=-1, metavar="[UUID]...")
@click.option("--new", "new_count", type=click.IntRange(min=0), default=0, metavar="N",
              help="Also issue credentials for N new server UUIDs.")
@click.option("--mockcloud", "mock_count", type=click.IntRange(min=0), default=0, metavar="N",
              help="Also for the N nodes of `sdc mockcloud --servers N --prefix PREFIX`.")
@click.option("--prefix", default="mock", show_default=True, help="The mock cloud's prefix.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The credentials file to write (0600; added to when it exists).")
@click.pass_context
@json_option
def server_credentials(ctx: click.Context, server_uuids: tuple[str, ...], new_count: int,
                       mock_count: int, prefix: str, out: Path) -> None:
    """Issue nodes the keys they sign their messages with, into a file for their agents
    (SDC_NODE_CREDENTIALS). Needs the head node's message key (SDC_MESSAGE_KEY, else
    SDC_DATA_DIR/message-key): run it on the head node. The keys are never printed."""
    wanted = [*server_uuids, *(str(uuidlib.uuid4()) for _ in range(new_count)),
              *node_uuids(prefix, mock_count)]
    if not wanted:
        raise click.UsageError("no server to issue credentials for: give UUIDs, --new or "
                               "--mockcloud")
    settings = state_of(ctx).settings()
    try:
        canonical = [canonical_uuid(text) for text in wanted]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="UUID") from exc
    refuse_revoked(settings, canonical)
    written = write_credentials(settings.resolved_message_key(), canonical, out)
    emit({"file": str(out), "servers": sorted(written)},
         lambda data: console().print(f"credentials of {len(data['servers'])} server(s) "
                                      f"written to {data['file']}:\n"
                                      + "\n".join(data["servers"])))


def refuse_revoked(settings: HeadnodeSettings, server_uuids: list[str]) -> None:
    """No credentials for a forgotten node (its uuid is revoked for good): asked of the head
    node's database, and refused when that cannot be read, rather than guessed."""
    try:
        with session_factory(settings.resolved_database_url)() as session:
            revoked = revoked_among(session, server_uuids)
    except SQLAlchemyError as exc:
        raise click.ClickException(
            "cannot read the head node's revoked credentials from its database "
            f"({type(exc).__name__}; is it reachable and migrated: `sdc headnode db "
            "upgrade`?): no credentials issued") from None
    if revoked:
        raise click.ClickException(
            f"server(s) {', '.join(sorted(revoked))} were forgotten and their credentials "
            "revoked: none issued. A node set up again gets a new uuid "
            "(`sdc server credentials --new 1`).")
