"""``sdc server exec`` (one command on many nodes at once, over SSH) and ``sdc server
ssh-key`` (the head node's public key, for the nodes' authorized_keys). Both run on the head
node: its SSH key and known_hosts are in SDC_DATA_DIR/ssh."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from headnode.cli.context import client, is_uuid, json_option, state_of
from headnode.cli.output import console, emit, fmt_duration
from headnode.ssh.client import Access, Target
from headnode.ssh.errors import SshError
from headnode.ssh.fanout import Node, NodeResult, run_on_all
from headnode.ssh.keys import fingerprint, head_key, head_key_path, public_line
from headnode.ssh.known_hosts import KnownHosts

ALL = "all"
#: what the table shows of each node's output (--json has all that was kept)
TABLE_LINES = 10


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("--servers", "servers_spec", default=ALL, show_default=True,
              metavar="all|UUID,...", help="Every set-up server, or these servers.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=86400), default=60.0,
              show_default=True, metavar="SECONDS",
              help="Per node, connecting included; a node still running is reported "
                   "'timeout'.")
@click.option("--parallel", type=click.IntRange(1, 256), default=16, show_default=True,
              metavar="N", help="How many nodes at once.")
@click.option("--accept-new-host-key", "accept_new", is_flag=True,
              help="Trust (and record in known_hosts) the host key of a node seen for the "
                   "first time. A changed key is refused all the same.")
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARG]...")
@json_option
@click.pass_context
def server_exec(ctx: click.Context, servers_spec: str, timeout: float, parallel: int,
                accept_new: bool, command: tuple[str, ...]) -> None:
    """Run CMD on the servers over SSH at once; one row per server: its status (ok, failed,
    timeout, unreachable, auth-failed, host-key-unknown, host-key-changed, no-ssh-address,
    error),
    exit code, time and output. Each argument is passed as one word (quoted); for a shell
    line use `-- sh -c '...'`. Exits 1 when any server did not run it with exit code 0."""
    wanted = parse_servers(servers_spec)
    nodes = [node_of(srv) for srv in choose_servers(wanted)]
    data_dir = state_of(ctx).settings().data_dir
    try:
        access = Access(head_key(data_dir), KnownHosts.of(data_dir), accept_new)
    except SshError as exc:
        raise click.ClickException(str(exc)) from None
    results = run_on_all(nodes, shlex.join(command), access, timeout, parallel)
    emit([result_dict(r) for r in results], render_results)
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


@click.command("ssh-key")
@json_option
@click.pass_context
def server_ssh_key(ctx: click.Context) -> None:
    """Print the head node's public SSH key (made on first use), the line to add to
    ~/.ssh/authorized_keys of the user it logs in as on each node."""
    data_dir = state_of(ctx).settings().data_dir
    try:
        key = head_key(data_dir)
    except SshError as exc:
        raise click.ClickException(str(exc)) from None
    emit({"public_key": public_line(key), "fingerprint": fingerprint(key),
          "path": str(head_key_path(data_dir))},
         lambda data: click.echo(data["public_key"]))


def parse_servers(spec: str) -> list[str] | None:
    """None for every set-up server, else the uuids named (each checked before asking)."""
    if spec.strip() == ALL:
        return None
    uuids = [part.strip().lower() for part in spec.split(",") if part.strip()]
    bad = [u for u in uuids if not is_uuid(u)]
    if not uuids or bad:
        raise click.BadParameter(
            f"{', '.join(repr(b) for b in bad) or 'nothing'}: give 'all' or server UUIDs "
            "separated by commas", param_hint="--servers")
    return list(dict.fromkeys(uuids))


def choose_servers(wanted: list[str] | None) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = list(client().get("/ops/servers"))
    if wanted is None:
        chosen = [srv for srv in servers if srv.get("setup")]
        if not chosen:
            raise click.ClickException("no server is set up: nothing to run on")
        return chosen
    by_uuid = {str(srv.get("uuid")).lower(): srv for srv in servers}
    unknown = [u for u in wanted if u not in by_uuid]
    if unknown:
        raise click.ClickException(f"no such server: {', '.join(unknown)}")
    return [by_uuid[u] for u in wanted]


def node_of(srv: dict[str, Any]) -> Node:
    host = srv.get("ssh_host")
    target = Target(host, int(srv.get("ssh_port") or 22), srv.get("ssh_user") or "root") \
        if host else None
    return Node(str(srv["uuid"]), str(srv.get("hostname") or ""), target)


def result_dict(result: NodeResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["duration"] = round(result.duration, 3)
    return data


def render_results(results: list[dict[str, Any]]) -> None:
    table = Table("server", "hostname", "status", "exit", "took", "output")
    for res in results:
        status = Text(res["status"], style="green" if res["status"] == "ok" else "red")
        code = res["exit_code"]
        table.add_row(res["uuid"], Text(res["hostname"]), status,
                      "-" if code is None else str(code), fmt_duration(res["duration"]),
                      Text(shown_output(res)))
    console().print(table)
    failed = sum(res["status"] != "ok" for res in results)
    console().print(f"{len(results) - failed} of {len(results)} server(s) ok", highlight=False)


def shown_output(res: dict[str, Any]) -> str:
    """The end of what the node said (stderr after stdout), or why it could not run."""
    parts = [res["stdout"], res["stderr"], res["error"]]
    lines = "\n".join(p for p in parts if p).splitlines()
    if len(lines) > TABLE_LINES:
        lines = [f"({len(lines) - TABLE_LINES} more lines: --json)", *lines[-TABLE_LINES:]]
    return "\n".join(lines)
