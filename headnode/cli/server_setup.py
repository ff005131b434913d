"""``sdc server setup HOST|UUID``, ``sdc server upgrade-agent`` and ``sdc server
rollback-agent``: bringing nodes in over SSH and moving their agents to another version, as
jobs of the head node (POST /ops/servers/setup, /ops/servers/<uuid>/upgrade-agent), each
followed here step by step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import requests
from click.core import ParameterSource

from headnode.cli.client import ApiError, ApiUnreachable, error_from_response
from headnode.cli.context import client, is_uuid, json_option, resolve_server, state_of
from headnode.cli.head_key_install import KeyInstallError, install_head_key
from headnode.cli.output import console, emit, fmt_job_error, render_object, watch_job
from headnode.cli.server_exec import choose_servers, parse_servers
from headnode.ssh.client import Target

#: a setup builds the agent's wheels on first use, then installs over SSH
JOB_TIMEOUT = 7200.0
BUSY_RETRY_SECONDS = 2.0
#: options that only a setup over SSH (a HOST) takes
SSH_ONLY = ("user", "port", "key", "accept_new", "prefix", "backend", "pool", "nic_tags",
            "hostname", "version")


@click.command("setup")
@click.argument("ref", metavar="HOST|UUID")
@click.option("--user", default="root", show_default=True, help="Who to log in as.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False,
                                                   path_type=Path),
              help="Your own private key the node lets in: used once, here, to add the head "
                   "node's key to the node's authorized_keys (never sent to the API).")
@click.option("--accept-new-host-key", "accept_new", is_flag=True,
              help="First contact: trust (and record) the node's host key. A changed key is "
                   "refused all the same.")
@click.option("--backend", type=click.Choice(["linux", "smartos", "sim"]), default="linux",
              show_default=True)
@click.option("--pool", default="", help="The storage pool (or its mount point) the agent "
              "uses.")
@click.option("--nic-tags", default="", metavar="TAG[:LINK],...",
              help="The nic tags the node provides.")
@click.option("--hostname", default="", help="The name the node registers with (default: "
              "its own).")
@click.option("--prefix", default="/", show_default=True, hidden=True,
              help="Where on the node the agent goes (a directory of its own for each node "
                   "when nodes share a host).")
@click.option("--version", "version", default=None, metavar="VERSION",
              help="A stored agent version (`sdc server upgrade-agent --wheel`); default: "
                   "built from the head node's checkout.")
@click.option("--no-wait", is_flag=True, help="Start the job and print its uuid.")
@json_option
@click.pass_context
def server_setup(ctx: click.Context, ref: str, key_file: Path | None, no_wait: bool,
                 **options: Any) -> None:
    """Set a node up over SSH (HOST), or mark a known server set up (UUID).

    For a HOST: checks the node (and says what it lacks), installs the agent in a
    virtualenv, writes its configuration and credentials, starts it (systemd, or a
    supervised process), waits for its first heartbeat and marks the server set up. Each
    step is shown as it ends; running it again changes nothing; a failure says which step
    failed, and the node is put back as it was. The node must let in the head node's key
    (`sdc server ssh-key`), or give --key."""
    if is_uuid(ref):
        given = [name for name in SSH_ONLY
                 if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
        if given or key_file:
            raise click.UsageError(f"{', '.join(given or ['key'])}: only for a setup over "
                                   "SSH (give a HOST, not a server UUID)")
        emit(client().put(f"/ops/servers/{resolve_server(ref)}", {"setup": True}),
             render_object)
        return
    if key_file is not None:
        add_head_key(ctx, ref, key_file, options)
    body = setup_body(ref, options)
    started = client().post("/ops/servers/setup", body)
    finish(started, no_wait, f"setup of {ref}:{options['port']}")


def setup_body(host: str, options: dict[str, Any]) -> dict[str, Any]:
    body = {"host": host, "port": options["port"], "user": options["user"],
            "prefix": options["prefix"], "backend": options["backend"],
            "accept_new_host_key": options["accept_new"]}
    for name in ("pool", "nic_tags", "hostname", "version"):
        if options.get(name):
            body[name] = options[name]
    return body


def add_head_key(ctx: click.Context, host: str, key_file: Path,
                 options: dict[str, Any]) -> None:
    target = Target(host, options["port"], options["user"])
    data_dir = state_of(ctx).settings().data_dir
    try:
        path = install_head_key(target, key_file, data_dir, options["accept_new"])
    except KeyInstallError as exc:
        raise click.ClickException(str(exc)) from None
    console(stderr=True).print(f"the head node's key is in {path} on {host}",
                               highlight=False)


def finish(started: dict[str, Any], no_wait: bool, what: str) -> dict[str, Any]:
    """Follow the job a request started (unless --no-wait); exit 1 if it did not succeed."""
    job_uuid = started["job_uuid"]
    if no_wait:
        emit(started, lambda d: click.echo(f"job {d['job_uuid']} started: `sdc job get "
                                           f"{d['job_uuid']} --watch`"))
        return started
    row = watch_job(job_uuid, timeout=JOB_TIMEOUT)
    emit(row, lambda r: report(r, what))
    if row.get("execution") != "succeeded":
        raise click.exceptions.Exit(1)
    return row


def report(row: dict[str, Any], what: str) -> None:
    if row.get("execution") == "succeeded":
        server = row.get("server_uuid") or last_result(row).get("server_uuid") or "?"
        click.echo(f"{what}: done (server {server})")
        return
    error = row.get("error") or {}
    click.echo(f"{what} {row.get('execution')} at step {error.get('step', '?')}: "
               f"{fmt_job_error(error)}", err=True)
    undone = [r.get("name") for r in row.get("onerror_results") or [] if not r.get("error")]
    if undone:
        click.echo(f"the node was put back as it was ({', '.join(undone)})", err=True)
    click.echo(f"the job's steps: sdc job get {row.get('uuid')}", err=True)


def last_result(row: dict[str, Any]) -> dict[str, Any]:
    for entry in reversed(row.get("chain_results") or []):
        if isinstance(entry.get("result"), dict):
            return dict(entry["result"])
    return {}


# -- upgrades ----------------------------------------------------------------------------------

@click.command("upgrade-agent")
@click.option("--servers", "servers_spec", default="all", show_default=True,
              metavar="all|UUID,...", help="Every set-up server, or these servers.")
@click.option("--parallel", type=click.IntRange(1, 64), default=1, show_default=True,
              metavar="N", help="How many servers at once (the head node runs at most "
              "SDC_WORKER_CONCURRENCY - 1 node jobs at once; the others wait their turn).")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An sdc wheel to roll out (uploaded to the head node first).")
@click.option("--version", "version", default=None, metavar="VERSION",
              help="A version stored before (default: built from the head node's checkout).")
@json_option
def server_upgrade_agent(servers_spec: str, parallel: int, wheel: Path | None,
                         version: str | None) -> None:
    """Roll another agent version onto the servers, N at a time: each waits for the node's
    heartbeat with the new version before the next; the first failure stops the roll-out
    and says how to roll that node back."""
    if wheel is not None and version is not None:
        raise click.UsageError("give --wheel or --version, not both")
    servers = choose_servers(parse_servers(servers_spec))
    if wheel is not None:
        version = upload_wheel(wheel)
    done: list[dict[str, Any]] = []
    for start in range(0, len(servers), parallel):
        batch = servers[start:start + parallel]
        # every job of the batch is started before any is followed: they run side by side
        started = [start_upgrade(srv, {"version": version}) for srv in batch]
        rows = [follow_upgrade(row) for row in started]
        done.extend(rows)
        failed = [row for row in rows if row.get("execution") != "succeeded"]
        if failed:
            stop_rollout(done, failed, len(servers))
    emit([summary(row) for row in done],
         lambda rows: click.echo(f"{len(rows)} server(s) now run agent "
                                 f"{version or 'of the head node'}"))


def start_upgrade(srv: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Start the server's upgrade job; a refusal is recorded as that server's failure."""
    uuid = str(srv["uuid"])
    given_up_at = time.monotonic() + JOB_TIMEOUT
    while True:
        try:
            started = client().post(f"/ops/servers/{uuid}/upgrade-agent", body)
            break
        except ApiError as exc:
            # more than the head node runs at once (SDC_WORKER_CONCURRENCY - 1): wait for
            # one of those already started to end
            if exc.code == "TooManyNodeJobs" and time.monotonic() < given_up_at:
                time.sleep(BUSY_RETRY_SECONDS)
                continue
            return {"server_uuid": uuid, "execution": "refused",
                    "error": {"step": "start", "code": exc.code, "message": exc.message}}
    return {"server_uuid": uuid, "hostname": srv.get("hostname"),
            "job_uuid": started["job_uuid"]}


def follow_upgrade(started: dict[str, Any]) -> dict[str, Any]:
    """Follow a started upgrade job until it ends (a refused one is already over)."""
    uuid = started["server_uuid"]
    if "job_uuid" not in started:
        return started
    console(stderr=True).print(f"server {uuid} ({started.get('hostname') or '-'}):",
                               highlight=False)
    row = watch_job(started["job_uuid"], timeout=JOB_TIMEOUT)
    row["server_uuid"] = uuid
    return row


def stop_rollout(done: list[dict[str, Any]], failed: list[dict[str, Any]],
                 total: int) -> None:
    emit([summary(row) for row in done], lambda _rows: None)  # what ran, under --json
    for row in failed:
        error = row.get("error") or {}
        click.echo(f"server {row['server_uuid']}: {row.get('execution')} at step "
                   f"{error.get('step', '?')}: {fmt_job_error(error)}", err=True)
        if error.get("step") not in (None, "start", "prepare_bundle", "inspect"):
            click.echo(f"  to go back to the release it ran before: sdc server "
                       f"rollback-agent {row['server_uuid']}", err=True)
    click.echo(f"stopped: {len(done) - len(failed)} of {total} server(s) upgraded",
               err=True)
    raise click.exceptions.Exit(1)


def summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"server_uuid": row.get("server_uuid"), "job_uuid": row.get("uuid"),
            "execution": row.get("execution"), "error": row.get("error")}


def upload_wheel(path: Path) -> str:
    """PUT the wheel (raw) to /ops/agent-bundles/<name>; the version the head node read."""
    ops = client()
    try:
        resp = ops.session.put(ops.url(f"/ops/agent-bundles/{path.name}"),
                               data=path.read_bytes(), timeout=ops.timeout,
                               verify=ops.verify,
                               headers={"Content-Type": "application/octet-stream"})
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise ApiUnreachable(ops.base_url, type(exc).__name__) from None
    if resp.status_code >= 400:
        raise error_from_response(resp)
    return str(resp.json()["version"])


@click.command("rollback-agent")
@click.argument("server_ref", metavar="UUID")
@click.option("--no-wait", is_flag=True, help="Start the job and print its uuid.")
@json_option
def server_rollback_agent(server_ref: str, no_wait: bool) -> None:
    """Switch the server's agent back to the release it ran before (its `previous`), and
    wait for its heartbeat with that version."""
    uuid = resolve_server(server_ref)
    started = client().post(f"/ops/servers/{uuid}/upgrade-agent", {"rollback": True})
    finish(started, no_wait, f"rollback of server {uuid}")
