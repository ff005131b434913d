"""``sdc vm nic list|get|add|remove|update``: a machine's NICs, and the anti-spoofing
settings only an operator may change. Adding, removing and updating are jobs (``--wait``
follows them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option, wait_option
from headnode.cli.machines import start_or_follow
from headnode.cli.output import console, emit, render_object

#: the NIC flags (vmadm's names), each letting the machine do what the node otherwise drops
FLAG_HELP = {
    "allow_ip_spoofing": "send from addresses other than the NIC's (and its allowed IPs)",
    "allow_mac_spoofing": "send frames from MACs other than the NIC's",
    "allow_dhcp_spoofing": "send DHCP server replies",
    "allow_restricted_traffic": "send ether types other than IPv4, IPv6 and ARP",
}
FLAGS = tuple(FLAG_HELP)


@click.group(cls=SdcGroup)
def nic() -> None:
    """A machine's NICs: list, get, add, remove, and their anti-spoofing settings."""


def nics_path(machine_uuid: str, mac: str | None = None) -> str:
    path = f"/ops/machines/{quote(machine_uuid, safe='')}/nics"
    return f"{path}/{quote(mac, safe=':')}" if mac else path


@nic.command("list")
@click.argument("machine_uuid", metavar="UUID")
@json_option
def nic_list(machine_uuid: str) -> None:
    """The machine's NICs in interface order, with the anti-spoofing rules lifted."""
    emit(client().get(nics_path(machine_uuid)), render_nics)


def flags_of(row: dict[str, Any]) -> str:
    """The flags that are on, short (``ip,mac``), and the extra addresses."""
    on = [name.removeprefix("allow_").removesuffix("_spoofing") for name in FLAGS
          if row.get(name)]
    extra = [f"+{ip}" for ip in row.get("allowed_ips") or []]
    return ",".join(on + extra) or "-"


def render_nics(rows: list[dict[str, Any]]) -> None:
    table = Table("interface", "mac", "ip", "network", "nic tag", "vlan", "primary", "state",
                  "allowed")
    for row in rows:
        table.add_row(row.get("interface") or "-", row.get("mac", ""),
                      f"{row.get('ip', '')}", row.get("network_uuid") or row.get("network", ""),
                      row.get("nic_tag", ""), str(row.get("vlan_id", 0)),
                      "yes" if row.get("primary") else "no", row.get("state", ""),
                      flags_of(row))
    console().print(table)


@nic.command("get")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("mac")
@json_option
def nic_get(machine_uuid: str, mac: str) -> None:
    """One NIC (MAC with or without colons)."""
    emit(client().get(nics_path(machine_uuid, mac)), render_object)


@nic.command("add")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("network", metavar="NETWORK")
@click.option("--ip", metavar="IP", help="This address of the network [default: the lowest "
              "free one of its range].")
@wait_option
@json_option
def nic_add(machine_uuid: str, network: str, ip: str | None, wait: bool) -> None:
    """Give the machine a NIC on NETWORK (uuid or name); a running machine gets it at once."""
    body: dict[str, Any] = {"network": network}
    if ip:
        body["ip"] = ip
    answer = client().post(nics_path(machine_uuid), body)
    added = (answer.get("nic") or {}).get("mac", "?")
    start_or_follow(answer, machine_uuid, f"NIC {added} added", wait, about="on")


@nic.command("remove")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("mac")
@wait_option
@json_option
def nic_remove(machine_uuid: str, mac: str, wait: bool) -> None:
    """Unplug and delete a NIC (the primary one only when it is the last)."""
    answer = client().delete(nics_path(machine_uuid, mac))
    start_or_follow(answer, machine_uuid, f"NIC {mac} removed", wait, about="on")


def flag_options(command: Any) -> Any:
    for name in reversed(FLAGS):
        dashed = name.replace("_", "-")
        command = click.option(f"--{dashed}/--no-{dashed}", name, default=None,
                               help=f"Let the machine {FLAG_HELP[name]} (or no longer)."
                               )(command)
    return command


def update_body(flags: dict[str, bool | None], allowed_ips: tuple[str, ...],
                clear_allowed_ips: bool) -> dict[str, Any]:
    body: dict[str, Any] = {name: value for name, value in flags.items() if value is not None}
    if allowed_ips or clear_allowed_ips:
        body["allowed_ips"] = list(allowed_ips)
    return body


@nic.command("update")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("mac")
@flag_options
@click.option("--allowed-ip", "allowed_ips", multiple=True, metavar="IP|CIDR",
              help="Another address the machine may send from (repeat for more; replaces "
                   "the list).")
@click.option("--clear-allowed-ips", is_flag=True, help="Empty the list of allowed_ips.")
@wait_option
@json_option
def nic_update(machine_uuid: str, mac: str, allowed_ips: tuple[str, ...],
               clear_allowed_ips: bool, wait: bool, **flags: bool | None) -> None:
    """Change a NIC's anti-spoofing settings (operators only: tenants cannot)."""
    if allowed_ips and clear_allowed_ips:
        raise click.UsageError("--allowed-ip and --clear-allowed-ips exclude each other")
    body = update_body(flags, allowed_ips, clear_allowed_ips)
    if not body:
        raise click.UsageError("nothing to change: give a flag, --allowed-ip or "
                               "--clear-allowed-ips")
    answer = client().put(nics_path(machine_uuid, mac), body)
    start_or_follow(answer, machine_uuid, f"NIC {mac} updated", wait, about="on")
