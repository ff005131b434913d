"""``sdc package create|list|get|delete``: the sizes machines are made in."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option
from headnode.cli.output import console, emit, fmt_mib, fmt_value, render_object


@click.group(cls=SdcGroup)
def package() -> None:
    """Packages: the sizes machines are made in."""


@package.command("create")
@click.argument("name")
@click.option("--memory", type=click.IntRange(min=1), required=True, help="RAM, MiB.")
@click.option("--disk", type=click.IntRange(min=1), required=True, help="Disk quota, MiB.")
@click.option("--vcpus", type=click.IntRange(min=1))
@click.option("--cpu-cap", type=click.IntRange(min=0), help="Percent of one CPU; 0 = uncapped.")
@click.option("--swap", type=click.IntRange(min=0), help="MiB.")
@click.option("--max-lwps", type=click.IntRange(min=1))
@click.option("--description")
@json_option
def package_create(name: str, memory: int, disk: int, **optional: Any) -> None:
    body = {"name": name, "memory": memory, "disk": disk}
    body.update({k: v for k, v in optional.items() if v is not None})
    emit(client().post("/ops/packages", body), render_object)


@package.command("list")
@json_option
def package_list() -> None:
    emit(client().get("/ops/packages"), render_packages)


def render_packages(packages: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "memory", "disk", "vcpus", "cpu cap", "active")
    for pkg in packages:
        table.add_row(pkg.get("uuid", ""), pkg.get("name", ""), fmt_mib(pkg.get("memory")),
                      fmt_mib(pkg.get("disk")), fmt_value(pkg.get("vcpus")),
                      fmt_value(pkg.get("cpu_cap")), fmt_value(pkg.get("active")))
    console().print(table)


@package.command("get")
@click.argument("ref", metavar="UUID|NAME")
@json_option
def package_get(ref: str) -> None:
    emit(client().get(f"/ops/packages/{ref}"), render_object)


@package.command("delete")
@click.argument("ref", metavar="UUID|NAME")
@json_option
def package_delete(ref: str) -> None:
    client().delete(f"/ops/packages/{ref}")
    emit({"deleted": ref}, lambda _: click.echo(f"package {ref} deleted"))
