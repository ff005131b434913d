"""``sdc network create|list|get|ips|delete`` and ``sdc key add|list|delete``: the networks
machines get addresses on, and the SSH keys accounts sign CloudAPI requests with."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option
from headnode.cli.output import console, emit, render_object

MAX_KEY_FILE = 16384


# ---------------------------------------------------------------------------- networks


@click.group(cls=SdcGroup)
def network() -> None:
    """Networks: subnets and the provision ranges machines get addresses from."""


def parse_range(_ctx: click.Context, _param: click.Parameter,
                value: str | None) -> tuple[str, str] | None:
    """``10.88.0.10-10.88.0.250`` -> ("10.88.0.10", "10.88.0.250")."""
    if value is None:
        return None
    first, sep, last = value.partition("-")
    try:
        if not sep:
            raise ValueError(value)
        return str(ipaddress.IPv4Address(first.strip())), str(ipaddress.IPv4Address(last.strip()))
    except ValueError as exc:
        raise click.BadParameter("expected FIRST-LAST, e.g. 10.88.0.10-10.88.0.250") from exc


def parse_routes(_ctx: click.Context, _param: click.Parameter,
                 values: tuple[str, ...]) -> dict[str, str]:
    """``10.20.0.0/16=10.88.0.3`` (repeatable) -> {"10.20.0.0/16": "10.88.0.3"}; the
    addresses themselves are checked by the API, which names what is wrong."""
    routes: dict[str, str] = {}
    for value in values:
        destination, _sep, gateway = (part.strip() for part in value.partition("="))
        if not destination or not gateway:
            raise click.BadParameter(f"{value!r}: expected DEST=GATEWAY, e.g. "
                                     "10.20.0.0/16=10.88.0.3")
        routes[destination] = gateway
    return routes


def network_body(name: str, subnet: str, gateway: str | None, ip_range: tuple[str, str] | None,
                 public: bool | None, owner: str | None, vlan: int, nic_tag: str,
                 resolvers: tuple[str, ...], description: str, mtu: int | None = None,
                 routes: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "subnet": subnet, "vlan_id": vlan, "nic_tag": nic_tag,
                            "resolvers": list(resolvers), "description": description}
    if mtu is not None:
        body["mtu"] = mtu
    if routes:
        body["routes"] = routes
    if gateway:
        body["gateway"] = gateway
    if ip_range:
        body["provision_start_ip"], body["provision_end_ip"] = ip_range
    if public is not None:
        body["public"] = public
    if owner:
        body["owner"] = owner
    return body


@network.command("create")
@click.argument("name")
@click.option("--subnet", required=True, metavar="CIDR", help="e.g. 10.88.0.0/24")
@click.option("--gateway", metavar="IP")
@click.option("--range", "ip_range", callback=parse_range, metavar="FIRST-LAST",
              help="Provision range [default: every host address].")
@click.option("--public/--private", default=None,
              help="Seen by every account [default: public unless --owner].")
@click.option("--owner", metavar="LOGIN", help="The account a private network belongs to.")
@click.option("--vlan", type=click.IntRange(0, 4094), default=0, show_default=True)
@click.option("--nic-tag", default="external", show_default=True)
@click.option("--resolver", "resolvers", multiple=True, metavar="IP",
              help="DNS resolver (repeat for more).")
@click.option("--description", default="")
@click.option("--mtu", type=int, metavar="N",
              help="MTU of every NIC on the network, 576 to 9000 [default: 1500].")
@click.option("--route", "routes", multiple=True, callback=parse_routes,
              metavar="DEST=GATEWAY", help="Static route of the network's machines, "
              "e.g. 10.20.0.0/16=10.88.0.3 (repeat for more).")
@json_option
def network_create(name: str, subnet: str, gateway: str | None,
                   ip_range: tuple[str, str] | None, public: bool | None, owner: str | None,
                   vlan: int, nic_tag: str, resolvers: tuple[str, ...], description: str,
                   mtu: int | None, routes: dict[str, str]) -> None:
    body = network_body(name, subnet, gateway, ip_range, public, owner, vlan, nic_tag,
                        resolvers, description, mtu, routes)
    emit(client().post("/ops/networks", body), render_object)


@network.command("list")
@json_option
def network_list() -> None:
    emit(client().get("/ops/networks"), render_networks)


def render_networks(networks: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "subnet", "gateway", "range", "vlan", "nic tag", "mtu",
                  "public", "owner")
    for n in networks:
        table.add_row(n.get("uuid", ""), n.get("name", ""), n.get("subnet", ""),
                      n.get("gateway") or "-",
                      f"{n.get('provision_start_ip')}-{n.get('provision_end_ip')}",
                      str(n.get("vlan_id", 0)), n.get("nic_tag", ""), str(n.get("mtu", "-")),
                      "yes" if n.get("public") else "no", n.get("owner_uuid") or "-")
    console().print(table)


@network.command("get")
@click.argument("ref", metavar="NAME|UUID")
@json_option
def network_get(ref: str) -> None:
    emit(client().get(f"/ops/networks/{quote(ref, safe='')}"), render_object)


@network.command("ips")
@click.argument("ref", metavar="NAME|UUID")
@json_option
def network_ips(ref: str) -> None:
    """The addresses in use (and the gateway)."""
    emit(client().get(f"/ops/networks/{quote(ref, safe='')}/ips"), render_ips)


def render_ips(ips: list[dict[str, Any]]) -> None:
    table = Table("ip", "machine", "owner", "reserved")
    for ip in ips:
        table.add_row(ip.get("ip", ""), ip.get("belongs_to_uuid") or "-",
                      ip.get("owner_uuid") or "-", "yes" if ip.get("reserved") else "no")
    console().print(table)


@network.command("default")
@click.argument("login")
@click.argument("ref", metavar="NAME|UUID", required=False)
@click.option("--reset", is_flag=True, help="Back to the first public network.")
@json_option
def network_default(login: str, ref: str | None, reset: bool) -> None:
    """Show, or set, the network LOGIN's machines get when a create names none."""
    path = f"/ops/accounts/{quote(login, safe='')}/default-network"
    if ref is None and not reset:
        emit(client().get(path), render_object)
    else:
        emit(client().put(path, {"network": None if reset else ref}), render_object)


@network.command("delete")
@click.argument("ref", metavar="NAME|UUID")
def network_delete(ref: str) -> None:
    """Only a network no machine has an address on."""
    client().delete(f"/ops/networks/{quote(ref, safe='')}")
    click.echo(f"network {ref} deleted")


# ---------------------------------------------------------------------------- keys


@click.group(cls=SdcGroup)
def key() -> None:
    """SSH keys of accounts (they sign CloudAPI requests)."""


def read_key_file(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise click.BadParameter(f"{path} is too large for a public key", param_hint="FILE")
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="FILE") from exc


@key.command("add")
@click.argument("login")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="[default: the key's MD5 fingerprint]")
@json_option
def key_add(login: str, path: Path, name: str | None) -> None:
    """Add the OpenSSH public key in FILE (e.g. ~/.ssh/id_rsa.pub) to LOGIN's account."""
    body: dict[str, Any] = {"key": read_key_file(path).strip()}
    if name:
        body["name"] = name
    emit(client().post(f"/ops/accounts/{quote(login, safe='')}/keys", body), render_object)


@key.command("list")
@click.argument("login")
@json_option
def key_list(login: str) -> None:
    emit(client().get(f"/ops/accounts/{quote(login, safe='')}/keys"), render_keys)


def render_keys(keys: list[dict[str, Any]]) -> None:
    table = Table("name", "fingerprint (md5)", "fingerprint (sha256)", "type")
    for k in keys:
        table.add_row(k.get("name", ""), k.get("fingerprint", ""),
                      k.get("fingerprint_sha256", ""), (k.get("key") or "").split(" ")[0])
    console().print(table)


@key.command("delete")
@click.argument("login")
@click.argument("ref", metavar="NAME|FINGERPRINT")
def key_delete(login: str, ref: str) -> None:
    client().delete(f"/ops/accounts/{quote(login, safe='')}/keys/{quote(ref, safe='')}")
    click.echo(f"key {ref} of {login} deleted")
