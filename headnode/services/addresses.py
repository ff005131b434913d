"""Addresses and MACs: a NIC row is its address's lease on one network.

A NIC takes the lowest free address of its network's provision range, or one the caller
asks for; the unique (network, address) pair makes two concurrent provisions that picked
the same address fail one insert (it inserts nothing: ON CONFLICT DO NOTHING), which looks
again, so no address is ever handed out twice. Its MAC is made with it (NAPI's prefix; the
primary key keeps MACs unique) and its interface is the machine's lowest free ``netN``.
NICs are deleted, and their addresses and MACs free again, when the machine is destroyed,
its provision fails or the NIC is removed.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from sqlalchemy import Table, delete, select, text
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from headnode.services import capacity
from headnode.services.conflicts import insert_unless_taken
from headnode.services.errors import Conflict, InvalidArgument
from headnode.store.models import Machine, Network, Nic, utcnow

#: Joyent's OUI, which NAPI gives the MACs it makes
MAC_PREFIX = "90:b8:d0"
NICS: Table = Nic.__table__  # type: ignore[assignment]
#: a lost race for an address (or a MAC collision) is retried this often
ALLOCATION_ATTEMPTS = 64

# The free addresses are the gaps in the sorted leases, with a sentinel just below the range
# (so the range's first address is a gap when free) and the gateway counted as taken: each
# row is a gap's first and last address, lowest first. One ordered pass over the network's
# leases: its cost does not hang on the planner's statistics (an anti-join did,
# quadratically, on a freshly filled table).
_FREE_GAPS = text("""
SELECT t.ip_num + 1,
       CASE WHEN t.nxt IS NULL OR t.nxt - 1 > CAST(:end AS BIGINT) THEN CAST(:end AS BIGINT)
            ELSE t.nxt - 1 END
FROM (
    SELECT taken.ip_num, LEAD(taken.ip_num) OVER (ORDER BY taken.ip_num) AS nxt FROM (
        SELECT n.ip_num FROM nics n
            WHERE n.network_uuid = :net AND n.ip_num >= :start AND n.ip_num <= :end
        UNION ALL SELECT CAST(:sentinel AS BIGINT)
        UNION ALL SELECT CAST(:gateway AS BIGINT)
    ) AS taken
) AS t
WHERE (t.nxt IS NULL OR t.nxt > t.ip_num + 1) AND t.ip_num + 1 <= :end
ORDER BY t.ip_num LIMIT :gaps
""")

_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(CAST(:k1 AS INTEGER), CAST(:k2 AS INTEGER))")
#: how many free addresses a provision looks at when the lowest is being taken by another
CANDIDATES = 16
#: ... among this many addresses from the lowest free one
CANDIDATE_WINDOW = 64


def random_mac() -> str:
    return MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def interface_name(index: int) -> str:
    return f"net{index}"


def free_interfaces(session: Session, machine_uuid: str, count: int) -> list[str]:
    """The ``count`` lowest ``netN`` names none of the machine's NICs has, lowest first."""
    taken = set(session.scalars(select(Nic.interface).where(Nic.machine_uuid == machine_uuid)))
    names: list[str] = []
    index = 0
    while len(names) < count:
        if interface_name(index) not in taken:
            names.append(interface_name(index))
        index += 1
    return names


def free_addresses(session: Session, network: Network, limit: int = CANDIDATES,
                   window: int = CANDIDATE_WINDOW) -> list[int]:
    """The lowest address of the provision range that no NIC holds (and not the gateway),
    then the free ones after it within ``window`` of it: at most ``limit``, lowest first;
    empty when the range is full. One statement."""
    start = int(ipaddress.IPv4Address(network.provision_start_ip))
    end = int(ipaddress.IPv4Address(network.provision_end_ip))
    gateway = int(ipaddress.IPv4Address(network.gateway)) if network.gateway else -1
    sentinel = start - 1
    gaps = session.execute(_FREE_GAPS, {
        "net": network.uuid, "start": start, "end": end, "sentinel": sentinel,
        "gateway": gateway if start <= gateway <= end else sentinel, "gaps": limit,
    }).all()
    if not gaps:
        return []
    bound = int(gaps[0][0]) + window
    free: list[int] = []
    for first, last in gaps:  # each gap holds at least one address: enough gaps for limit
        free.extend(range(int(first), min(int(last), bound) + 1))
    return free[:limit]


def _lock_key(network: Network, ip_num: int) -> tuple[int, int]:
    # two signed 32-bit keys: the network (a hash; a collision only skips an address) and
    # the address
    return (int(network.uuid.replace("-", "")[:8], 16) - 2**31,
            (ip_num & 0xFFFFFFFF) - 2**31)


def _claim_candidate(session: Session, network: Network, free: list[int]) -> int:
    """On PostgreSQL, the first of the ``free`` addresses no concurrent provision is
    inserting right now (each holds a transaction-level advisory lock on the address it
    takes), so concurrent provisions take neighbouring addresses instead of queueing behind
    one another's transactions for the same one. Elsewhere (SQLite takes one writer at a
    time) or when every candidate is busy: the lowest, and the unique constraint decides."""
    if session.get_bind().dialect.name != "postgresql":
        return free[0]
    for ip_num in free:
        key = _lock_key(network, ip_num)
        if session.execute(_TRY_LOCK, {"k1": key[0], "k2": key[1]}).scalar():
            return ip_num
    return free[0]


def _requested(network: Network, ip: Any) -> int:
    """The address a caller asks for, as a number: an IPv4 address of the network's
    provision range (InvalidArgument naming ``ip`` otherwise) that is not its gateway."""
    try:
        address = ipaddress.IPv4Address(str(ip))
    except ValueError as exc:
        raise InvalidArgument("ip", f"{ip!r} is not an IPv4 address") from exc
    start = ipaddress.IPv4Address(network.provision_start_ip)
    end = ipaddress.IPv4Address(network.provision_end_ip)
    if not start <= address <= end:
        raise InvalidArgument("ip", f"{address} is outside network {network.name}'s provision "
                              f"range {start}-{end}")
    if network.gateway and address == ipaddress.IPv4Address(network.gateway):
        raise Conflict(f"ip {address} is network {network.name}'s gateway", code="InUse",
                       ip=str(address), network=network.uuid)
    return int(address)


def _insert(session: Session, nic: Nic) -> bool:
    """Write the lease directly (the object is only the answer): False when the address is
    already held (a concurrent provision took it first) or, rarely, the MAC is."""
    return insert_unless_taken(session, NICS, {
        "mac": nic.mac, "machine_uuid": nic.machine_uuid, "network_uuid": nic.network_uuid,
        "ip": nic.ip, "ip_num": nic.ip_num, "primary": nic.primary,
        "created_at": nic.created_at, "interface": nic.interface, "state": nic.state,
        "allowed_ips": []}, returning="mac")


def _new_nic(machine_uuid: str, network: Network, ip_num: int, primary: bool, interface: str,
             state: str) -> Nic:
    return Nic(mac=random_mac(), machine_uuid=machine_uuid, network_uuid=network.uuid,
               ip=str(ipaddress.IPv4Address(ip_num)), ip_num=ip_num, primary=primary,
               created_at=utcnow(), interface=interface, state=state,
               allow_ip_spoofing=False, allow_mac_spoofing=False, allow_dhcp_spoofing=False,
               allow_restricted_traffic=False, allowed_ips=[])


def _subnet_full(network: Network) -> Conflict:
    return Conflict(f"network {network.name} ({network.subnet}) has no free address left in "
                    "its provision range", code="SubnetFull", network=network.uuid)


def allocate_nic(session: Session, machine_uuid: str, network: Network, *, primary: bool,
                 interface: str, ip: str | None = None, state: str = "provisioning") -> Nic:
    """One NIC of ``machine_uuid`` on ``network``: at ``ip`` when given (InvalidArgument
    naming ``ip`` outside the provision range, Conflict ``InUse`` when it is held or the
    gateway), else the lowest free address (Conflict ``SubnetFull`` when none is left)."""
    wanted = _requested(network, ip) if ip is not None else None
    for _ in range(ALLOCATION_ATTEMPTS):
        if wanted is None:
            free = free_addresses(session, network)
            if not free:
                raise _subnet_full(network)
            ip_num = _claim_candidate(session, network, free)
        else:
            ip_num = wanted
        nic = _new_nic(machine_uuid, network, ip_num, primary, interface, state)
        if _insert(session, nic):
            return nic
        if wanted is not None and session.scalar(select(Nic.mac).where(
                Nic.network_uuid == network.uuid, Nic.ip_num == wanted)) is not None:
            raise Conflict(f"ip {nic.ip} on network {network.name} is in use", code="InUse",
                           ip=nic.ip, network=network.uuid)
    raise Conflict(f"could not take an address on network {network.name}: too many "
                   "concurrent provisions, try again", code="SubnetFull",
                   network=network.uuid)


def attach_nics(session: Session, machine: Machine, networks: list[Network],
                created_here: bool = True) -> list[Nic]:
    """One NIC on each of ``networks`` (the first is primary; none, no NIC) for ``machine``,
    which this transaction created unless ``created_here`` is False. Raises Conflict
    ("SubnetFull"); the caller's transaction then rolls back."""
    session.flush()  # the machine row must exist before NICs reference it
    interfaces = ([interface_name(i) for i in range(len(networks))] if created_here
                  else free_interfaces(session, machine.uuid, len(networks)))
    # plugged when the node makes the machine (see services.nics.set_plugged)
    state = machine.state if machine.state in ("running", "stopped") else "provisioning"
    nics = [allocate_nic(session, machine.uuid, network, primary=(i == 0),
                         interface=interfaces[i], state=state)
            for i, network in enumerate(networks)]
    _carry_nics(session, machine, nics, created_here)
    return nics


def _carry_nics(session: Session, machine: Machine, added: list[Nic],
                created_here: bool) -> None:
    """Make the machine object carry its addresses (the collection is view-only, so adding
    NICs does not change it). What it held before plus what was just added is all of it,
    without reading it back; a machine whose NICs were never loaded reads them."""
    known = machine.__dict__.get("nics")
    if known is None and not created_here:
        session.refresh(machine, attribute_names=["nics"])
        return
    nics = sorted([*(known or []), *added], key=lambda nic: nic.created_at)
    set_committed_value(machine, "nics", nics)


def release_nics(session: Session, machine_uuid: str) -> int:
    """Free a machine's addresses; returns how many. Idempotent."""
    result = session.execute(delete(Nic).where(Nic.machine_uuid == machine_uuid)
                             .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_machine_holdings(session: Session, machine_uuid: str) -> dict[str, Any]:
    """Give back everything a machine that no longer exists holds: its room on its server
    (reservation) and its addresses (NICs). The destroy workflow and a node's confirmation
    that a machine is gone both call this, so neither can forget one of them. Idempotent."""
    return {"reservation": capacity.release(session, machine_uuid),
            "nics": release_nics(session, machine_uuid)}
