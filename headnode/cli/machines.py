"""``sdc vm create|list|get|start|stop|reboot|delete|resize|rename`` and
``sdc vm snapshot create|list|get|rollback|delete``: machines, the changes to their
definition, and snapshots of their dataset."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from headnode.cli.client import ApiError
from headnode.cli.context import (
    SdcGroup,
    client,
    json_option,
    parse_pairs,
    resolve_account,
    resolve_server,
    wait_option,
)
from headnode.cli.output import console, emit, fmt_time, follow_job, render_object


@click.group(cls=SdcGroup)
def vm() -> None:
    """Machines: provision, list, start, stop, reboot, delete."""


@vm.command("create")
@click.option("--owner", required=True, help="Account uuid or login.")
@click.option("--package", "package_ref", required=True, help="Package uuid or name.")
@click.option("--image", "image_ref", required=True, help="Image uuid or name.")
@click.option("--alias")
@click.option("--tag", "tags", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Repeatable.")
@click.option("--metadata", "metadata", multiple=True, callback=parse_pairs,
              metavar="KEY=VALUE", help="Customer metadata; repeatable.")
@click.option("--server", "server_uuid", help="Place on this server (skips the allocator).")
@wait_option
@json_option
def vm_create(owner: str, package_ref: str, image_ref: str, alias: str | None,
              tags: dict[str, str], metadata: dict[str, str], server_uuid: str | None,
              wait: bool) -> None:
    body = machine_create_body(owner, package_ref, image_ref, alias, tags, metadata,
                               server_uuid)
    machine = client().post("/ops/machines", body)
    if wait and machine.get("job_uuid"):
        follow_job(machine["job_uuid"], machine["uuid"])
        return
    emit(machine, render_object)


def machine_create_body(owner: str, package_ref: str, image_ref: str, alias: str | None,
                        tags: dict[str, str], metadata: dict[str, str],
                        server_uuid: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"owner": owner, "package": package_ref, "image": image_ref}
    if alias:
        body["alias"] = alias
    if tags:
        body["tags"] = tags
    if metadata:
        body["metadata"] = metadata
    if server_uuid:
        body["server_uuid"] = server_uuid
    return body


@vm.command("list")
@click.option("--state", type=click.Choice(
    ["provisioning", "running", "stopped", "failed", "destroyed", "unknown"]))
@click.option("--owner", help="Account uuid or login.")
@click.option("--server", "server_ref", help="Server uuid or hostname.")
@json_option
def vm_list(state: str | None, owner: str | None, server_ref: str | None) -> None:
    params = {
        "state": state,
        "owner_uuid": resolve_account(owner) if owner else None,
        "server_uuid": resolve_server(server_ref) if server_ref else None,
    }
    machines = client().get("/ops/machines", params)
    emit(machines, render_machines)


def names_by_uuid(path: str, key: str) -> dict[str, str]:
    """uuid -> a friendly name, for tables; a lookup that fails only costs friendliness."""
    try:
        return {row["uuid"]: row.get(key) or row["uuid"] for row in client().get(path)}
    except ApiError:
        return {}


def render_machines(machines: list[dict[str, Any]]) -> None:
    hostnames = names_by_uuid("/ops/servers", "hostname") if machines else {}
    packages = names_by_uuid("/ops/packages", "name") if machines else {}
    table = Table("uuid", "alias", "state", "server", "package", "created")
    for mach in machines:
        srv, pkg = str(mach.get("server_uuid") or "-"), str(mach.get("package_uuid") or "-")
        table.add_row(mach.get("uuid", ""), mach.get("alias") or "-", mach.get("state", ""),
                      hostnames.get(srv, srv), packages.get(pkg, pkg),
                      fmt_time(mach.get("created_at")))
    console().print(table)


@vm.command("get")
@click.argument("machine_uuid", metavar="UUID")
@json_option
def vm_get(machine_uuid: str) -> None:
    emit(client().get(f"/ops/machines/{machine_uuid}"), render_object)


def machine_action_command(action: str, doc: str) -> click.Command:
    @click.argument("machine_uuid", metavar="UUID")
    @wait_option
    @json_option
    def run(machine_uuid: str, wait: bool) -> None:
        if action == "delete":
            answer = client().delete(f"/ops/machines/{machine_uuid}")
        else:
            answer = client().post(f"/ops/machines/{machine_uuid}", params={"action": action})
        if wait and answer and answer.get("job_uuid"):
            follow_job(answer["job_uuid"], machine_uuid)
            return
        emit(answer, lambda a: click.echo(
            f"{action} of {machine_uuid}: job {(a or {}).get('job_uuid', '-')}"))

    run.__doc__ = doc
    return vm.command(action)(run)


for _action, _doc in (("start", "Start a stopped machine."),
                      ("stop", "Stop a running machine."),
                      ("reboot", "Reboot a running machine."),
                      ("delete", "Destroy a machine and free its resources.")):
    machine_action_command(_action, _doc)


# ---------------------------------------------------------------------------- changes, snapshots


def start_or_follow(answer: dict[str, Any], machine_uuid: str, what: str, wait: bool,
                    about: str = "of") -> None:
    """Follow the job a change started to its end (``--wait``), or say which job it is:
    ``<what> <about> <machine>: job <uuid>``."""
    if wait and answer.get("job_uuid"):
        follow_job(answer["job_uuid"], machine_uuid)
        return
    emit(answer,
         lambda a: click.echo(f"{what} {about} {machine_uuid}: job {a.get('job_uuid')}"))


@vm.command("resize")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("package_ref", metavar="PACKAGE")
@wait_option
@json_option
def vm_resize(machine_uuid: str, package_ref: str, wait: bool) -> None:
    """Give a machine another package's RAM, disk and CPU."""
    answer = client().post(f"/ops/machines/{machine_uuid}",
                           params={"action": "resize", "package": package_ref})
    start_or_follow(answer, machine_uuid, "resize", wait)


@vm.command("rename")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("alias")
@wait_option
@json_option
def vm_rename(machine_uuid: str, alias: str, wait: bool) -> None:
    """Give a machine a new alias (its hostname)."""
    answer = client().post(f"/ops/machines/{machine_uuid}",
                           params={"action": "rename", "alias": alias})
    start_or_follow(answer, machine_uuid, "rename", wait)


@vm.group(cls=SdcGroup)
def snapshot() -> None:
    """Snapshots of a machine's dataset: create, list, get, rollback, delete."""


@snapshot.command("create")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@wait_option
@json_option
def snapshot_create(machine_uuid: str, name: str, wait: bool) -> None:
    answer = client().post(f"/ops/machines/{machine_uuid}/snapshots", {"name": name})
    start_or_follow(answer, machine_uuid, f"snapshot {name}", wait)


@snapshot.command("list")
@click.argument("machine_uuid", metavar="UUID")
@json_option
def snapshot_list(machine_uuid: str) -> None:
    emit(client().get(f"/ops/machines/{machine_uuid}/snapshots"), render_snapshots)


def render_snapshots(rows: list[dict[str, Any]]) -> None:
    table = Table("name", "state", "created", "updated")
    for row in rows:
        table.add_row(row.get("name", ""), row.get("state", ""),
                      fmt_time(row.get("created_at")), fmt_time(row.get("updated_at")))
    console().print(table)


@snapshot.command("get")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@json_option
def snapshot_get(machine_uuid: str, name: str) -> None:
    emit(client().get(f"/ops/machines/{machine_uuid}/snapshots/{name}"), render_object)


@snapshot.command("rollback")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@wait_option
@json_option
def snapshot_rollback(machine_uuid: str, name: str, wait: bool) -> None:
    """Restore the machine's dataset to the snapshot."""
    answer = client().post(f"/ops/machines/{machine_uuid}/snapshots/{name}")
    start_or_follow(answer, machine_uuid, f"rollback to {name}", wait)


@snapshot.command("delete")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@wait_option
@json_option
def snapshot_delete(machine_uuid: str, name: str, wait: bool) -> None:
    answer = client().delete(f"/ops/machines/{machine_uuid}/snapshots/{name}")
    start_or_follow(answer, machine_uuid, f"delete of snapshot {name}", wait)
