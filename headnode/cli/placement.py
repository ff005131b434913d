"""``sdc placement explain`` and ``sdc capacity [simulate|history|forecast]``: why a machine
would go where it goes (or nowhere), what the fleet still holds, and until when."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option
from headnode.cli.output import console, emit, fmt_mib, fmt_time

affinity_option = click.option(
    "--affinity", "affinity", multiple=True, metavar="RULE",
    help="Affinity rule, repeatable: instance!=web*, role==database, instance==~db1.")
network_option = click.option(
    "--network", "networks", multiple=True, metavar="NETWORK",
    help="Network uuid or name the machine would have, repeatable (a server must provide "
         "each one's nic tag); none: the owner's default network.")


# ---------------------------------------------------------------------------- explain


@click.group(cls=SdcGroup)
def placement() -> None:
    """Placement decisions, explained."""


@placement.command("explain")
@click.option("--package", required=True, help="Package uuid or name.")
@click.option("--image", required=True, help="Image uuid or name.")
@click.option("--owner", help="Account uuid or login (for affinity and owner spread).")
@affinity_option
@network_option
@json_option
def explain(package: str, image: str, owner: str | None, affinity: tuple[str, ...],
            networks: tuple[str, ...]) -> None:
    """Dry-run an allocation: the funnel step by step, then the chosen server or why none."""
    body: dict[str, Any] = {"package": package, "image": image, "dry_run": True}
    if owner:
        body["owner"] = owner
    if affinity:
        body["affinity"] = list(affinity)
    if networks:
        body["networks"] = list(networks)
    emit(client().post("/ops/allocate", body), render_decision)


def render_decision(decision: dict[str, Any]) -> None:
    con = console()
    tags = decision.get("nic_tags") or []
    table = Table("step", "removed", "left", "reason", title=(
        f"{decision.get('considered', 0)} servers considered"
        + (f", nic tags {', '.join(tags)}" if tags else "")))
    for step in decision.get("steps") or []:
        removed = int(step.get("removed") or 0)
        table.add_row(step.get("name", ""), f"[red]{removed}[/]" if removed else "0",
                      str(step.get("remaining", "")), step.get("reason", "") if removed else "")
    con.print(table)
    if decision.get("server_uuid"):
        scores = ", ".join(f"{k} {v:.2f}" for k, v in (decision.get("scores") or {}).items())
        con.print(f"[green]{decision.get('message')}[/] ({decision.get('server_uuid')}; "
                  f"scores: {scores or '-'})", highlight=False)
    else:
        con.print(f"[red]{decision.get('message')}[/]", highlight=False)


# ---------------------------------------------------------------------------- capacity


@click.group(cls=SdcGroup, invoke_without_command=True)
@json_option
@click.pass_context
def capacity(ctx: click.Context) -> None:
    """The fleet's RAM, CPU and disk, and how many more machines of each package fit."""
    if ctx.invoked_subcommand is None:
        emit(client().get("/ops/capacity"), render_capacity)


def amounts(row: dict[str, Any], resource: str, mib: bool = True) -> list[str]:
    values = row.get(resource) or {}
    show = fmt_mib if mib else (lambda v: f"{v} %")
    return [show(int(values.get(part) or 0)) for part in ("total", "provisioned", "reserved",
                                                           "free")]


def render_capacity(report: dict[str, Any]) -> None:
    con = console()
    servers = Table("server", "placeable", "machines", "RAM total", "prov.", "reserved", "free",
                    "CPU total", "prov.", "reserved", "free", "disk total", "prov.",
                    "reserved", "free", title="servers")
    for srv in report.get("servers") or []:
        servers.add_row(srv.get("hostname") or srv.get("uuid", ""),
                        "yes" if srv.get("placeable") else "no", str(srv.get("machines", 0)),
                        *amounts(srv, "ram_mb"), *amounts(srv, "cpu", mib=False),
                        *amounts(srv, "disk_mb"))
    fleet = report.get("fleet") or {}
    servers.add_row(f"[bold]fleet ({fleet.get('placeable_servers', 0)}/"
                    f"{fleet.get('servers', 0)} placeable)[/]", "", str(fleet.get("machines", 0)),
                    *amounts(fleet, "ram_mb"), *amounts(fleet, "cpu", mib=False),
                    *amounts(fleet, "disk_mb"), end_section=True)
    con.print(servers)
    packages = Table("package", "RAM", "disk", "cpu cap", "more that fit", title="packages")
    for pkg in report.get("packages") or []:
        packages.add_row(pkg.get("name", ""), fmt_mib(pkg.get("memory")), fmt_mib(pkg.get("disk")),
                         str(pkg.get("cpu_cap") or "-"), str(pkg.get("fits", 0)))
    con.print(packages)


def parse_place(ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> list[tuple[str, int]]:
    items = []
    for value in values:
        name, sep, count = value.rpartition("=")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise click.BadParameter(f"{value!r} is not PACKAGE=COUNT", ctx=ctx, param=param)
        items.append((name, int(count)))
    return items


@capacity.command("simulate")
@click.option("--add-servers", type=click.IntRange(min=0), default=0,
              help="Add this many servers made from the template below.")
@click.option("--ram-mb", type=click.IntRange(min=1), default=262_144, show_default=True)
@click.option("--cpus", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--disk-gb", type=click.IntRange(min=1), default=3_336, show_default=True)
@click.option("--remove", "remove", multiple=True, metavar="UUID",
              help="Leave this server out (repeatable).")
@click.option("--place", "place", multiple=True, required=True, callback=parse_place,
              metavar="PACKAGE=COUNT", help="Machines to place, in order (repeatable).")
@click.option("--nic-tag", "nic_tags", multiple=True, metavar="TAG",
              help="A nic tag the added servers provide (repeatable; none given: they "
                   "pass the nic-tags step).")
@click.option("--owner", help="Account whose machines the affinity rules see.")
@affinity_option
@network_option
@json_option
def simulate(add_servers: int, ram_mb: int, cpus: int, disk_gb: int, remove: tuple[str, ...],
             place: list[tuple[str, int]], nic_tags: tuple[str, ...], owner: str | None,
             affinity: tuple[str, ...], networks: tuple[str, ...]) -> None:
    """What if: add or remove servers, then place machines as creates would. Nothing is
    written. Placed machines are named <package>1, <package>2...; --affinity and --network
    apply to every --place."""
    shared: dict[str, Any] = {}
    if affinity:
        shared["affinity"] = list(affinity)
    if networks:
        shared["networks"] = list(networks)
    body: dict[str, Any] = {"place": [{"package": name, "count": count, **shared}
                                      for name, count in place]}
    if add_servers:
        body["add_servers"] = [{"ram_mb": ram_mb, "cpus": cpus, "disk_mb": disk_gb * 1024,
                                "count": add_servers,
                                **({"nic_tags": list(nic_tags)} if nic_tags else {})}]
    if remove:
        body["remove_servers"] = list(remove)
    if owner:
        body["owner"] = owner
    emit(client().post("/ops/capacity/simulate", body), render_simulation)


def render_simulation(answer: dict[str, Any]) -> None:
    con = console()
    placements = Table("package", "asked", "placed", "refused", "on", "why not",
                       title="placements")
    for item in answer.get("placements") or []:
        on = ", ".join(f"{host} {n}" for host, n in sorted((item.get("servers") or {}).items()))
        placements.add_row(item.get("package", ""), str(item.get("requested", 0)),
                           str(item.get("placed", 0)), str(item.get("refused", 0)), on or "-",
                           item.get("refusal") or "")
    con.print(placements)
    left = Table("server", "new", "placed", "machines", "RAM free", "CPU free", "disk free",
                 title="what is left")
    for srv in answer.get("servers") or []:
        free = srv.get("free") or {}
        left.add_row(srv.get("hostname") or srv.get("uuid", ""), "yes" if srv.get("added") else "",
                     str(srv.get("machines_placed", 0)), str(srv.get("machines", 0)),
                     fmt_mib(free.get("ram_mb")), f"{free.get('cpu', 0)} %",
                     fmt_mib(free.get("disk_mb")))
    con.print(left)
    fits = ", ".join(f"{p.get('name')} {p.get('fits')}" for p in answer.get("packages") or [])
    con.print(f"then still fit: {fits or '-'}", highlight=False)


@capacity.command("history")
@click.option("--since", metavar="ISO8601", help="Only snapshots taken at or after it.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def history(since: str | None, limit: int) -> None:
    """Fleet utilization over time (one snapshot per SDC_CAPACITY_HISTORY_INTERVAL)."""
    emit(client().get("/ops/capacity/history", {"since": since, "limit": limit}),
         render_history)


def render_history(points: list[dict[str, Any]]) -> None:
    table = Table("taken", "servers", "machines", "RAM used", "RAM free", "disk free")
    for pt in points:
        ram = pt.get("ram_mb") or {}
        used = int(ram.get("provisioned") or 0) + int(ram.get("reserved") or 0)
        table.add_row(fmt_time(pt.get("taken_at")), str(pt.get("servers", 0)),
                      str(pt.get("machines", 0)), fmt_mib(used), fmt_mib(ram.get("free")),
                      fmt_mib((pt.get("disk_mb") or {}).get("free")))
    console().print(table)


@capacity.command("forecast")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Fit the growth over the history of the last this many days.")
@json_option
def forecast(days: int) -> None:
    """When each package stops fitting at the current growth: a linear trend of the used
    RAM, new machines in the current mix placed as creates would. Nothing is written."""
    emit(client().get("/ops/capacity/forecast", {"days": days}), render_forecast)


def render_forecast(answer: dict[str, Any]) -> None:
    con = console()
    ram = (answer.get("trend") or {}).get("ram_mb")
    history = answer.get("history") or {}
    if ram:
        r2 = ram.get("r2")
        con.print(f"used RAM grows {ram['per_day']:.0f} MiB a day "
                  f"(± {2 * ram['stderr']:.0f}, 2 standard errors; "
                  f"R² {'-' if r2 is None else f'{r2:.3f}'}; {ram['points']} snapshots, "
                  f"{fmt_time(history.get('first'))} to {fmt_time(history.get('last'))})",
                  highlight=False)
    else:
        con.print(f"[yellow]{answer.get('reason')}[/]", highlight=False)
    table = Table("package", "fits now", "stops fitting", "earliest", "latest", "in days",
                  "why no date", title=f"forecast from {fmt_time(answer.get('now'))}")
    for pkg in answer.get("packages") or []:
        days = pkg.get("days")
        table.add_row(pkg.get("name", ""), str(pkg.get("fits_now", 0)), fmt_time(pkg.get("date")),
                      fmt_time(pkg.get("earliest")), fmt_time(pkg.get("latest")),
                      "-" if days is None else f"{days:.1f}",
                      "" if pkg.get("date") and pkg.get("days") else pkg.get("reason") or "")
    con.print(table)
    con.print("assumptions:", highlight=False)
    for sentence in answer.get("assumptions") or []:
        con.print(f"  - {sentence}", highlight=False)
