"""A machine's NICs as resources (CloudAPI ListNics/GetNic/AddNic/RemoveNic, the operator's
NIC routes) and as the node sees them (vmadm's ``nics``).

Adding, removing and changing a NIC is a job, as any change to a machine is: the request
takes the machine's lock (409 ``MachineBusy`` while another job runs), writes what it can
at once and starts ``add_nic``, ``remove_nic`` or ``update_nic`` (workflows/nics.py), which
plugs, unplugs or re-filters the NIC on the node. An added NIC holds its address and MAC
from the request on (state ``provisioning``); a failed add gives both back. A removed NIC
is ``removing`` until the node has unplugged it, then its row (address, MAC) is gone.

The seam (``owner_uuid`` None is the operator, who sees every machine; another account's
machine is 404 ``ResourceNotFound``, as an unknown one is):

- ``nic_spec(nic, network) -> dict``: a ``schemas.nics.NicSpecSchema`` dict.
- ``machine_network_spec(session, machine) -> {"nics", "resolvers", "routes"}``: what a
  machine create's spec carries (its NICs in interface order).
- ``list_nics(session, machine_uuid, owner_uuid=None) -> list[Nic]``, interface order.
- ``get_nic(session, machine_uuid, mac, owner_uuid=None) -> Nic`` (mac with or without
  colons, any case; 404 ``ResourceNotFound`` naming the mac).
- ``add_nic(ctx, machine_uuid, network, ip=None, *, owner_uuid=None, caller=None)
  -> (Nic, Job)``: ``network`` a uuid or name the owner can see.
- ``remove_nic(ctx, machine_uuid, mac, *, owner_uuid=None, caller=None) -> Job``.
- ``update_nic(ctx, machine_uuid, mac, flags, *, owner_uuid=None, caller=None) -> Job``:
  ``flags`` any of the four ``allow_*`` booleans and ``allowed_ips``; that only operators
  may is the API's to enforce.
- ``nic_to_cloudapi(nic) -> dict`` (ip, mac, primary, netmask, gateway if any, state,
  network) and ``nic_to_ops(nic) -> dict`` (that plus machine_uuid, interface, nic_tag,
  vlan_id, mtu, the flags, allowed_ips, created_at): the Nic must come from
  ``list_nics``/``get_nic``/``add_nic``, which load its network and machine with it. A
  plugged NIC shows its machine's state (``nic_state``).
- ``normal_mac(mac)``, ``set_plugged(session, machine_uuid, machine_state)`` (the
  provision's ``record_created``). The nic tag check reads ``fleet.listed_nic_tags``, as
  placement does.

The three changes take a ``ServiceContext`` (one transaction, retried on a deadlock, the job
enqueued after the commit) as ``headnode.services.machine_meta`` does; the reads take the
caller's session.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from headnode.services.addresses import allocate_nic, free_interfaces
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.services.fleet import listed_nic_tags
from headnode.services.machines import CHANGEABLE, load_machine, start_machine_job
from headnode.services.networks import find_network
from headnode.store.models import Job, Machine, Network, Nic, Server
from schemas.networks import canonical_mac
from schemas.nics import MAX_ALLOWED_IPS, SPOOF_FLAGS
from workflows.params import NicParams

#: what ``update_nic`` may change
NIC_FLAGS = (*SPOOF_FLAGS, "allowed_ips")


# ---------------------------------------------------------------------------- node specs


def nic_spec(nic: Nic, network: Network) -> dict[str, Any]:
    """The NIC as the node plugs it (vmadm's names, ``NicSpecSchema``)."""
    prefix = ipaddress.IPv4Network(network.subnet).prefixlen
    return {"mac": nic.mac, "interface": nic.interface, "nic_tag": network.nic_tag,
            "vlan_id": network.vlan_id, "ips": [f"{nic.ip}/{prefix}"],
            "gateways": [network.gateway] if network.gateway else [],
            "primary": nic.primary, "mtu": network.mtu, "network_uuid": network.uuid,
            **{flag: bool(getattr(nic, flag)) for flag in SPOOF_FLAGS},
            "allowed_ips": list(nic.allowed_ips or [])}


def _interface_order(nic: Nic) -> tuple[int, str]:
    digits = (nic.interface or "")[3:]
    return (int(digits) if digits.isdigit() else 1 << 30, nic.mac)


def machine_network_spec(session: Session, machine: Machine) -> dict[str, Any]:
    """The ``nics`` (interface order; not those being removed), ``resolvers`` (the primary
    network's first, then the others', each once) and ``routes`` (every network's; the
    primary's first when two name one destination) of a machine's create spec."""
    # one statement: it runs in every provision
    pairs = sorted(session.execute(select(Nic, Network)
                                   .join(Network, Network.uuid == Nic.network_uuid)
                                   .where(Nic.machine_uuid == machine.uuid,
                                          Nic.state != "removing")).all(),
                   key=lambda pair: _interface_order(pair[0]))
    resolvers: list[str] = []
    routes: dict[str, str] = {}
    for _nic, network in sorted(pairs, key=lambda pair: not pair[0].primary):  # stable
        resolvers.extend(r for r in network.resolvers or [] if r not in resolvers)
        for destination, gateway in (network.routes or {}).items():
            routes.setdefault(destination, gateway)
    return {"nics": [nic_spec(nic, network) for nic, network in pairs],
            "resolvers": resolvers, "routes": routes}


def set_plugged(session: Session, machine_uuid: str, machine_state: str) -> int:
    """The machine's node has made it with its NICs: they are as it is (running or
    stopped). Returns how many changed."""
    state = "stopped" if machine_state == "stopped" else "running"
    result = session.execute(update(Nic).where(Nic.machine_uuid == machine_uuid,
                                               Nic.state == "provisioning")
                             .values(state=state).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- reads


def normal_mac(mac: str) -> str:
    """``90:B8:D0:AA:BB:CC`` or ``90b8d0aabbcc`` (old NAPIs' form) as ``90:b8:d0:aa:bb:cc``;
    anything else unchanged (and then found nowhere)."""
    return canonical_mac(str(mac)) or str(mac).lower()


def _owned_machine(session: Session, machine_uuid: str, owner_uuid: str | None) -> Machine:
    machine = load_machine(session, machine_uuid)
    if owner_uuid is not None and machine.owner_uuid != owner_uuid:
        raise NotFound("machine", machine_uuid)
    return machine


def _nics_query(machine_uuid: str) -> Any:
    return (select(Nic).where(Nic.machine_uuid == machine_uuid)
            .options(joinedload(Nic.network), joinedload(Nic.machine)))


def list_nics(session: Session, machine_uuid: str, owner_uuid: str | None = None) -> list[Nic]:
    """The machine's NICs, net0 first."""
    _owned_machine(session, machine_uuid, owner_uuid)
    return sorted(session.scalars(_nics_query(machine_uuid)).unique(), key=_interface_order)


def get_nic(session: Session, machine_uuid: str, mac: str,
            owner_uuid: str | None = None) -> Nic:
    _owned_machine(session, machine_uuid, owner_uuid)
    nic = session.scalars(_nics_query(machine_uuid).where(Nic.mac == normal_mac(mac))).first()
    if nic is None:
        raise NotFound("nic", mac)
    return nic


# ---------------------------------------------------------------------------- shapes


def nic_state(nic: Nic) -> str:
    """A plugged NIC is as its machine is (running or stopped); an added one is
    ``provisioning`` and a removed one ``removing`` until the node has done it."""
    if nic.state in ("provisioning", "removing"):
        return nic.state
    machine_state = nic.machine.state if nic.machine is not None else None
    return machine_state if machine_state in ("running", "stopped") else nic.state


def nic_to_cloudapi(nic: Nic) -> dict[str, Any]:
    """CloudAPI's NIC object."""
    network = nic.network
    body: dict[str, Any] = {
        "ip": nic.ip, "mac": nic.mac, "primary": nic.primary,
        "netmask": str(ipaddress.IPv4Network(network.subnet).netmask),
        "state": nic_state(nic), "network": nic.network_uuid}
    if network.gateway:
        body["gateway"] = network.gateway
    return body


def nic_to_ops(nic: Nic) -> dict[str, Any]:
    """The operator's view: CloudAPI's plus where it is plugged and how it is filtered."""
    network = nic.network
    return {**nic_to_cloudapi(nic), "gateway": network.gateway,
            "machine_uuid": nic.machine_uuid, "interface": nic.interface,
            "nic_tag": network.nic_tag, "vlan_id": network.vlan_id, "mtu": network.mtu,
            **{flag: bool(getattr(nic, flag)) for flag in SPOOF_FLAGS},
            "allowed_ips": list(nic.allowed_ips or []), "created_at": nic.created_at}


# ---------------------------------------------------------------------------- changes


def _check_nic_tag(session: Session, machine: Machine, network: Network) -> None:
    """The machine's server must provide the network's nic tag, as placement asks of it
    (a server no agent registered says nothing, and is let through by both)."""
    server = session.get(Server, machine.server_uuid) if machine.server_uuid else None
    provided = listed_nic_tags(server.sysinfo if server is not None else None)
    if provided is not None and network.nic_tag not in provided:
        name = server.hostname if server is not None else "(none)"
        raise Conflict(f"server {name} ({machine.server_uuid}) does not provide nic tag "
                       f"{network.nic_tag!r}, which network {network.name} needs",
                       code="NicTagNotProvided", nic_tag=network.nic_tag,
                       server=machine.server_uuid)


def _visible_network(session: Session, ident: Any, owner_uuid: str | None) -> Network:
    if not isinstance(ident, str) or not ident:
        raise InvalidArgument("network", "a network uuid or name")
    try:
        return find_network(session, ident, owner_uuid)
    except NotFound as exc:
        raise InvalidArgument("network", f"no network {ident!r}") from exc


def _job(ctx: ServiceContext, job_uuid: str) -> Job:
    with ctx.read() as session:
        job = session.get(Job, job_uuid)
        assert job is not None  # committed by start_machine_job
        return job


def _precheck(ctx: ServiceContext, machine_uuid: str, owner_uuid: str | None) -> None:
    # Another account's machine is not found before anything is taken (not "busy").
    with ctx.read() as session:
        _owned_machine(session, machine_uuid, owner_uuid)


def add_nic(ctx: ServiceContext, machine_uuid: str, network: str, ip: str | None = None, *,
            owner_uuid: str | None = None,
            caller: dict[str, Any] | None = None) -> tuple[Nic, Job]:
    """Give a running or stopped machine a NIC on ``network`` (at ``ip`` if given): its
    address, MAC and the machine's lowest free ``netN`` are taken now, and the ``add_nic``
    job plugs it. Refusals: InvalidArgument naming ``network`` (unknown or not visible) or
    ``ip`` (outside the provision range); Conflict ``InUse`` (the ip is held),
    ``SubnetFull``, ``NicTagNotProvided`` (the machine's server lacks the network's nic tag),
    ``MachineBusy``, ``InvalidState``. A refusal changes nothing."""
    _precheck(ctx, machine_uuid, owner_uuid)
    added: list[Nic] = []

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        chosen = _visible_network(session, network, owner_uuid or machine.owner_uuid)
        _check_nic_tag(session, machine, chosen)
        has_nics = session.scalar(select(Nic.mac).where(Nic.machine_uuid == machine.uuid)
                                  .limit(1)) is not None
        nic = allocate_nic(session, machine.uuid, chosen, primary=not has_nics,
                           interface=free_interfaces(session, machine.uuid, 1)[0], ip=ip)
        added.append(nic)
        return NicParams(mac=nic.mac).to_json()

    started = start_machine_job(ctx, machine_uuid, "add_nic", CHANGEABLE, caller or {},
                                prepare)
    with ctx.read() as session:
        nic = session.scalars(_nics_query(machine_uuid).where(Nic.mac == added[0].mac)).one()
    return nic, _job(ctx, started["job_uuid"])


def _nic_for_change(session: Session, machine: Machine, mac: str) -> Nic:
    nic = session.scalar(select(Nic).where(Nic.machine_uuid == machine.uuid,
                                           Nic.mac == normal_mac(mac)))
    if nic is None:
        raise NotFound("nic", mac)
    if nic.state != "running" and nic.state != "stopped":
        raise Conflict(f"nic {nic.mac} is {nic.state}", code="InvalidState", mac=nic.mac)
    return nic


def remove_nic(ctx: ServiceContext, machine_uuid: str, mac: str, *,
               owner_uuid: str | None = None, caller: dict[str, Any] | None = None) -> Job:
    """Unplug and delete a NIC (``remove_nic`` job; the NIC is ``removing`` meanwhile). The
    primary NIC cannot go while the machine has others: Conflict ``PrimaryNic``."""
    _precheck(ctx, machine_uuid, owner_uuid)

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        nic = _nic_for_change(session, machine, mac)
        if nic.primary:
            others = session.scalar(select(Nic.mac).where(Nic.machine_uuid == machine.uuid,
                                                          Nic.mac != nic.mac).limit(1))
            if others is not None:
                raise Conflict(f"nic {nic.mac} is the machine's primary NIC: remove its other "
                               "NICs first", code="PrimaryNic", mac=nic.mac)
        nic.state = "removing"
        return NicParams(mac=nic.mac).to_json()

    started = start_machine_job(ctx, machine_uuid, "remove_nic", CHANGEABLE, caller or {},
                                prepare)
    return _job(ctx, started["job_uuid"])


def _flags(flags: Any) -> dict[str, Any]:
    """A change of a NIC's filtering, each field checked (InvalidArgument naming it)."""
    if not isinstance(flags, dict) or not flags:
        raise InvalidArgument("flags", f"one or more of {', '.join(NIC_FLAGS)}")
    changes: dict[str, Any] = {}
    for name, value in flags.items():
        if name in SPOOF_FLAGS:
            if not isinstance(value, bool):
                raise InvalidArgument(name, "must be true or false")
            changes[name] = value
        elif name == "allowed_ips":
            changes[name] = _allowed_ips(value)
        else:
            raise InvalidArgument(name, f"not a NIC property that can change (one of "
                                  f"{', '.join(NIC_FLAGS)})")
    return changes


def _allowed_ips(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise InvalidArgument("allowed_ips", "must be a list of IPv4 addresses or subnets")
    if len(value) > MAX_ALLOWED_IPS:
        raise InvalidArgument("allowed_ips", f"at most {MAX_ALLOWED_IPS} entries (vmadm's "
                              f"limit), {len(value)} given")
    out: list[str] = []
    for item in value:
        try:
            network = ipaddress.IPv4Network(str(item), strict=False)
        except ValueError as exc:
            raise InvalidArgument("allowed_ips", f"{item!r} is not an IPv4 address or "
                                  "subnet") from exc
        out.append(str(network.network_address) if network.prefixlen == 32 else str(network))
    return out


def update_nic(ctx: ServiceContext, machine_uuid: str, mac: str, flags: dict[str, Any], *,
               owner_uuid: str | None = None, caller: dict[str, Any] | None = None) -> Job:
    """Change a NIC's anti-spoofing flags and ``allowed_ips`` (``update_nic`` job: the node
    first, then the row)."""
    changes = _flags(flags)
    _precheck(ctx, machine_uuid, owner_uuid)

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        nic = _nic_for_change(session, machine, mac)
        return NicParams(mac=nic.mac, changes=changes).to_json()

    started = start_machine_job(ctx, machine_uuid, "update_nic", CHANGEABLE, caller or {},
                                prepare)
    return _job(ctx, started["job_uuid"])
