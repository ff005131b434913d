"""Networks (NAPI-like): create, list, find, delete; which network a machine gets.

A network is an IPv4 subnet on a nic tag (and VLAN) with a provision range, an MTU, a
gateway, resolvers and static routes. Public networks are seen by every account, the others
only by their owner. A machine gets one NIC per network it asks for (by default its owner's
default network, else the first public one); the NIC row is the address's lease, taken and
freed by ``headnode.services.addresses`` (its names are re-exported here for the callers
that have always found them here).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from headnode.services.addresses import (
    MAC_PREFIX,
    attach_nics,
    free_addresses,
    release_machine_holdings,
    release_nics,
)
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.services.resolve import is_uuid
from headnode.store.models import Account, Machine, Network, Nic

#: re-exported: the callers of the allocation have always found it here
__all__ = ["MAC_PREFIX", "attach_nics", "free_addresses", "release_machine_holdings",
           "release_nics"]

NIC_TAG = re.compile(r"^[A-Za-z0-9_]{1,31}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: the smallest useful subnet: network, gateway, one address, broadcast
MAX_PREFIX = 30
#: NAPI's MTU bounds and default
MIN_MTU, MAX_MTU, DEFAULT_MTU = 576, 9000, 1500

# ---------------------------------------------------------------------------- shapes


def network_to_dict(n: Network) -> dict[str, Any]:
    """The operator's view (``/ops/networks``)."""
    return {"uuid": n.uuid, "name": n.name, "subnet": n.subnet, "gateway": n.gateway,
            "provision_start_ip": n.provision_start_ip,
            "provision_end_ip": n.provision_end_ip, "resolvers": list(n.resolvers or []),
            "vlan_id": n.vlan_id, "nic_tag": n.nic_tag, "public": n.public,
            "owner_uuid": n.owner_uuid, "description": n.description,
            "netmask": str(ipaddress.IPv4Network(n.subnet).netmask), "mtu": n.mtu,
            "routes": dict(n.routes or {}),
            "created_at": n.created_at}


def network_to_cloudapi(n: Network) -> dict[str, Any]:
    """CloudAPI's network object (ListNetworks, GetNetwork)."""
    body: dict[str, Any] = {"id": n.uuid, "name": n.name, "public": n.public,
                            "fabric": False, "subnet": n.subnet,
                            "provision_start_ip": n.provision_start_ip,
                            "provision_end_ip": n.provision_end_ip,
                            "resolvers": list(n.resolvers or [])}
    if n.gateway:
        body["gateway"] = n.gateway
    if n.description:
        body["description"] = n.description
    return body


def machine_network_fields(m: Machine) -> dict[str, Any]:
    """What a machine object says about its NICs (``Machine.nics`` is loaded with it)."""
    nics = sorted(m.nics, key=lambda nic: (not nic.primary, nic.created_at))
    return {
        "ips": [nic.ip for nic in nics],
        "primary_ip": nics[0].ip if nics else None,
        "networks": [nic.network_uuid for nic in nics],
        "nics": [{"mac": nic.mac, "ip": nic.ip, "network_uuid": nic.network_uuid,
                  "primary": nic.primary} for nic in nics],
    }


# ---------------------------------------------------------------------------- validation


def _address(field: str, value: Any, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError as exc:
        raise InvalidArgument(field, f"{value!r} is not an IPv4 address") from exc
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(field, f"{address} is not a host address of {subnet}")
    return address


def _subnet(value: Any) -> ipaddress.IPv4Network:
    try:
        subnet = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise InvalidArgument("subnet", f"{value!r} is not an IPv4 subnet in CIDR form "
                              "(e.g. 10.88.0.0/24, host bits zero)") from exc
    if subnet.prefixlen > MAX_PREFIX:
        raise InvalidArgument("subnet", f"a subnet must be /{MAX_PREFIX} or larger")
    return subnet


def _resolvers(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument("resolvers", "must be a list of IPv4 addresses")
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.IPv4Address(str(item))))
        except ValueError as exc:
            raise InvalidArgument("resolvers", f"{item!r} is not an IPv4 address") from exc
    return out


def _mtu(value: Any) -> int:
    if value is None:
        return DEFAULT_MTU
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_MTU <= value <= MAX_MTU:
        raise InvalidArgument("mtu", f"must be an integer from {MIN_MTU} to {MAX_MTU}")
    return value


def _routes(value: Any, subnet: ipaddress.IPv4Network) -> dict[str, str]:
    """{destination: gateway}: a destination is an IPv4 subnet or address, its gateway an
    address of this network's subnet (the machine reaches it directly)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument("routes", "must be an object {destination: gateway}")
    routes: dict[str, str] = {}
    for destination, gateway in value.items():
        try:
            target = ipaddress.IPv4Network(str(destination), strict=True)
        except ValueError as exc:
            raise InvalidArgument("routes", f"destination {destination!r} is not an IPv4 "
                                  "address or subnet (host bits zero)") from exc
        hop = _address("routes", gateway, subnet)
        key = str(target.network_address) if target.prefixlen == 32 else str(target)
        routes[key] = str(hop)
    return routes


def _owner(session: Session, ident: str | None) -> Account | None:
    if not ident:
        return None
    column = Account.uuid if is_uuid(ident) else Account.login
    account = session.scalar(select(Account).where(column == ident))
    if account is None:
        raise InvalidArgument("owner", f"no account {ident!r}")
    return account


def _check_overlap(session: Session, subnet: ipaddress.IPv4Network, nic_tag: str) -> None:
    for other in session.scalars(select(Network).where(Network.nic_tag == nic_tag)):
        if subnet.overlaps(ipaddress.IPv4Network(other.subnet)):
            raise InvalidArgument("subnet", f"{subnet} overlaps network {other.name} "
                                  f"({other.subnet}) on nic tag {nic_tag}")


def _network_fields(session: Session, body: dict[str, Any]) -> dict[str, Any]:
    """Check a create body; return the columns of the new network. The one place a network
    body is checked (the API's schema gives only the fields' JSON types): the operator API
    and every other caller get the same answers, naming the field."""
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidArgument("name", "1 to 128 letters, digits or _.- (starting with a "
                              "letter or digit)")
    subnet = _subnet(body.get("subnet"))
    hosts_first, hosts_last = subnet.network_address + 1, subnet.broadcast_address - 1
    gateway = (_address("gateway", body["gateway"], subnet)
               if body.get("gateway") not in (None, "") else None)
    start = _address("provision_start_ip", body.get("provision_start_ip") or hosts_first,
                     subnet)
    end = _address("provision_end_ip", body.get("provision_end_ip") or hosts_last, subnet)
    if start > end:
        raise InvalidArgument("provision_end_ip", f"{end} is before the range's start {start}")
    if gateway is not None and start == end == gateway:
        raise InvalidArgument("provision_start_ip", "the range holds only the gateway")
    vlan_id = body.get("vlan_id", 0)
    if not isinstance(vlan_id, int) or isinstance(vlan_id, bool) or not 0 <= vlan_id <= 4094:
        raise InvalidArgument("vlan_id", "must be an integer from 0 to 4094")
    nic_tag = body.get("nic_tag") or "external"
    if not isinstance(nic_tag, str) or not NIC_TAG.match(nic_tag):
        raise InvalidArgument("nic_tag", "1 to 31 letters, digits or _")
    owner = _owner(session, body.get("owner") or body.get("owner_uuid"))
    public = body.get("public")
    if public is None:
        public = owner is None
    if public and owner is not None:
        raise InvalidArgument("public", "a public network has no owner")
    if not public and owner is None:
        raise InvalidArgument("owner", "a network that is not public needs an owner")
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > 512:
        raise InvalidArgument("description", "at most 512 characters")
    mtu = _mtu(body.get("mtu"))
    routes = _routes(body.get("routes"), subnet)
    _check_overlap(session, subnet, nic_tag)
    return {"name": name, "subnet": str(subnet), "gateway": str(gateway) if gateway else None,
            "provision_start_ip": str(start), "provision_end_ip": str(end),
            "resolvers": _resolvers(body.get("resolvers")), "vlan_id": vlan_id,
            "mtu": mtu, "routes": routes,
            "nic_tag": nic_tag, "public": bool(public),
            "owner_uuid": owner.uuid if owner else None, "description": description}


# ---------------------------------------------------------------------------- CRUD


def create_network(ctx: ServiceContext, body: dict[str, Any]) -> Network:
    """``body``: name, subnet, gateway?, provision_start_ip?, provision_end_ip? (default:
    every host address), resolvers?, vlan_id?, nic_tag? (default external), public?, owner?
    (uuid or login; a network with an owner is private unless said otherwise), description?,
    mtu? (576 to 9000, default 1500), routes? ({destination: gateway in the subnet})
    """
    try:
        with ctx.transaction() as session:
            fields = _network_fields(session, body)
            if session.scalar(select(Network.uuid).where(Network.name == fields["name"])):
                raise Conflict(f"a network named {fields['name']!r} already exists",
                               code="DuplicateName")
            network = Network(**fields)
            session.add(network)
    except IntegrityError as exc:
        raise Conflict(f"a network named {body.get('name')!r} already exists",
                       code="DuplicateName") from exc
    return network


def _visible(account_uuid: str | None) -> Any:
    if account_uuid is None:
        return True
    return or_(Network.public.is_(True), Network.owner_uuid == account_uuid)


def list_networks(ctx: ServiceContext, account_uuid: str | None = None) -> list[Network]:
    """Every network for an operator (``account_uuid`` None), else the public ones and the
    account's own."""
    with ctx.read() as session:
        return list(session.scalars(select(Network).where(_visible(account_uuid))
                                    .order_by(Network.created_at, Network.name)))


def find_network(session: Session, ident: str, account_uuid: str | None) -> Network:
    """By uuid or name, among those ``account_uuid`` sees (None: every network)."""
    column = Network.uuid if is_uuid(ident) else Network.name
    network = session.scalar(select(Network).where(column == ident, _visible(account_uuid)))
    if network is None:
        raise NotFound("network", ident)
    return network


def get_network(ctx: ServiceContext, uuid: str, account_uuid: str | None = None) -> Network:
    """By uuid (or name). Another account's private network is NotFound."""
    with ctx.read() as session:
        return find_network(session, uuid, account_uuid)


def delete_network(ctx: ServiceContext, ident: str) -> None:
    """Only a network no machine holds an address on."""
    with ctx.transaction() as session:
        network = find_network(session, ident, None)
        used = session.scalar(select(func.count()).select_from(Nic)
                              .where(Nic.network_uuid == network.uuid))
        if used:
            raise Conflict(f"network {network.name} has {used} addresses in use",
                           code="InUse")
        # accounts whose default this was fall back to the first public network
        session.execute(update(Account).where(Account.default_network_uuid == network.uuid)
                        .values(default_network_uuid=None))
        session.delete(network)


def list_network_ips(ctx: ServiceContext, uuid: str,
                     account_uuid: str | None) -> list[dict[str, Any]]:
    """CloudAPI ListNetworkIPs: the addresses in use, lowest first. On a public network an
    account sees only its own machines' addresses; on its own network, all of them and the
    gateway (reserved)."""
    with ctx.read() as session:
        network = find_network(session, uuid, account_uuid)
        query = (select(Nic, Machine.owner_uuid).join(Machine, Machine.uuid == Nic.machine_uuid)
                 .where(Nic.network_uuid == network.uuid).order_by(Nic.ip_num))
        if account_uuid is not None and network.public:
            query = query.where(Machine.owner_uuid == account_uuid)
        ips = [{"ip": nic.ip, "reserved": False, "managed": False,
                "belongs_to_uuid": nic.machine_uuid, "belongs_to_type": "zone",
                "owner_uuid": owner} for nic, owner in session.execute(query)]
        if network.gateway and (account_uuid is None or not network.public):
            ips.append({"ip": network.gateway, "reserved": True, "managed": True})
            ips.sort(key=lambda entry: int(ipaddress.IPv4Address(entry["ip"])))
        return ips


# ---------------------------------------------------------------------------- allocation


def default_network_uuid(owner: Any) -> Any:
    """The uuid of the network an account's machines get when they name none, as a scalar
    subquery on ``owner`` (``Account`` or an alias of it): its default network if still
    visible to it, else the first public one. A create reads it with its other lookups."""
    chosen = aliased(Network)
    own_default = (select(chosen.uuid)
                   .where(chosen.uuid == owner.default_network_uuid,
                          or_(chosen.public.is_(True), chosen.owner_uuid == owner.uuid))
                   .scalar_subquery())
    public = aliased(Network)
    first_public = (select(public.uuid).where(public.public.is_(True))
                    .order_by(public.created_at, public.name).limit(1).scalar_subquery())
    return func.coalesce(own_default, first_public)


def default_network(session: Session, owner_uuid: str) -> Network | None:
    """The owner's default network if it is still visible to them, else the first public."""
    owner = select(Account).where(Account.uuid == owner_uuid).subquery("owner")
    return session.scalar(select(Network).where(Network.uuid == default_network_uuid(owner.c)))


def get_default_network(ctx: ServiceContext, account_uuid: str) -> Network | None:
    """The network an account's machines get when they name none (CloudAPI's
    ``default_network`` in ``/:login/config``)."""
    with ctx.read() as session:
        if session.get(Account, account_uuid) is None:
            raise NotFound("account", account_uuid)
        return default_network(session, account_uuid)


def set_default_network(ctx: ServiceContext, account_uuid: str,
                        ident: str | None) -> Network | None:
    """Make a network the account can see its default (uuid or name); None goes back to
    the first public network. Another account's private network is InvalidArgument, as an
    unknown one is."""
    with ctx.transaction() as session:
        account = session.get(Account, account_uuid)
        if account is None:
            raise NotFound("account", account_uuid)
        if ident is None:
            account.default_network_uuid = None
            return default_network(session, account_uuid)
        try:
            network = find_network(session, ident, account_uuid)
        except NotFound as exc:
            raise InvalidArgument("default_network", f"no network {ident!r}") from exc
        account.default_network_uuid = network.uuid
        return network


def requested_networks(session: Session, owner_uuid: str,
                       requested: list[str] | None) -> list[Network]:
    """The networks a create names (uuids or names the owner can see), else its default."""
    if not requested:
        network = default_network(session, owner_uuid)
        return [network] if network is not None else []
    networks: list[Network] = []
    for ident in requested:
        if not isinstance(ident, str) or not ident:
            raise InvalidArgument("networks", "each network is a uuid or a name")
        try:
            network = find_network(session, ident, owner_uuid)
        except NotFound as exc:
            raise InvalidArgument("networks", f"no network {ident!r}") from exc
        if any(n.uuid == network.uuid for n in networks):
            raise InvalidArgument("networks", f"network {ident!r} is named twice")
        networks.append(network)
    return networks
