"""Networks and IP allocation on the real PostgreSQL: validation, visibility, allocation order,
range edges, exhaustion, concurrency, release."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

import pytest
from sqlalchemy import select

from headnode.services import machines as machine_svc
from headnode.services import networks as svc
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.store.models import Account, Machine, Network, Nic
from tests.unit.headnode.services.conftest import count, make_account, make_machine

CALLER = {"type": "operator"}


def net(ctx: Any, name: str = "external", subnet: str = "10.88.0.0/24", **body: Any) -> Network:
    return svc.create_network(ctx, {"name": name, "subnet": subnet, **body})


def machine_row(ctx: Any, fleet: dict[str, Any], alias: str, owner: Account | None = None
                ) -> Machine:
    owner = owner or fleet["owner"]
    return make_machine(ctx, fleet, alias=alias, owner_uuid=owner.uuid)


def allocate(ctx: Any, machine: Machine, requested: list[str] | None = None,
             owner_uuid: str | None = None) -> list[str]:
    with ctx.transaction() as session:
        m = session.get(Machine, machine.uuid)
        assert m is not None
        networks = svc.requested_networks(session, owner_uuid or m.owner_uuid, requested)
        nics = svc.attach_nics(session, m, networks, created_here=False)
        return [nic.ip for nic in nics]


def ips_in_use(ctx: Any, network: Network) -> list[str]:
    with ctx.read() as session:
        return list(session.scalars(select(Nic.ip).where(Nic.network_uuid == network.uuid)
                                    .order_by(Nic.ip_num)))


# -- create and validate --------------------------------------------------------------------


def test_create_defaults_the_range_to_every_host_address(ctx: Any) -> None:
    n = net(ctx, gateway="10.88.0.1", resolvers=["8.8.8.8"])
    assert (n.provision_start_ip, n.provision_end_ip) == ("10.88.0.1", "10.88.0.254")
    assert n.public is True and n.owner_uuid is None and n.nic_tag == "external"
    assert svc.network_to_dict(n)["netmask"] == "255.255.255.0"
    assert svc.get_network(ctx, n.uuid).resolvers == ["8.8.8.8"]


@pytest.mark.parametrize(("body", "field"), [
    ({"subnet": "10.88.0.1/24"}, "subnet"),  # host bits set
    ({"subnet": "nonsense"}, "subnet"),
    ({"subnet": "10.88.0.0/31"}, "subnet"),
    ({"gateway": "10.89.0.1"}, "gateway"),
    ({"gateway": "10.88.0.255"}, "gateway"),  # broadcast
    ({"provision_start_ip": "10.88.0.0"}, "provision_start_ip"),  # network address
    ({"provision_end_ip": "10.88.1.5"}, "provision_end_ip"),
    ({"provision_start_ip": "10.88.0.50", "provision_end_ip": "10.88.0.10"}, "provision_end_ip"),
    ({"resolvers": ["8.8.8.8", "dns"]}, "resolvers"),
    ({"vlan_id": 4095}, "vlan_id"),
    ({"nic_tag": "bad tag"}, "nic_tag"),
    ({"name": "-x"}, "name"),
    ({"public": False}, "owner"),
    ({"owner": "nobody"}, "owner"),
])
def test_bad_bodies_name_the_field_and_write_nothing(ctx: Any, body: dict[str, Any],
                                                     field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        net(ctx, **body)
    assert err.value.field == field
    assert count(ctx, Network) == 0


def test_overlap_on_one_nic_tag_is_refused_but_not_across_tags(ctx: Any) -> None:
    net(ctx, "a", "10.88.0.0/24")
    with pytest.raises(InvalidArgument) as err:
        net(ctx, "b", "10.88.0.128/25")
    assert err.value.field == "subnet" and "overlaps network a" in err.value.message
    assert net(ctx, "c", "10.88.0.0/24", nic_tag="internal").nic_tag == "internal"


def test_duplicate_name_is_a_conflict(ctx: Any) -> None:
    net(ctx, "a", "10.88.0.0/24")
    with pytest.raises(Conflict):
        net(ctx, "a", "10.89.0.0/24")


# -- visibility -----------------------------------------------------------------------------


def test_private_networks_are_seen_only_by_their_owner(ctx: Any) -> None:
    alice, bob = make_account(ctx, login="alice"), make_account(ctx, login="bob")
    public = net(ctx, "public", "10.88.0.0/24")
    mine = net(ctx, "alice-net", "10.90.0.0/24", owner="alice")
    assert mine.public is False and mine.owner_uuid == alice.uuid
    assert {n.name for n in svc.list_networks(ctx, alice.uuid)} == {"public", "alice-net"}
    assert {n.name for n in svc.list_networks(ctx, bob.uuid)} == {"public"}
    assert {n.name for n in svc.list_networks(ctx)} == {"public", "alice-net"}
    assert svc.get_network(ctx, mine.uuid, alice.uuid).uuid == mine.uuid
    with pytest.raises(NotFound):
        svc.get_network(ctx, mine.uuid, bob.uuid)
    with pytest.raises(NotFound):
        svc.list_network_ips(ctx, mine.uuid, bob.uuid)
    assert svc.get_network(ctx, public.uuid, bob.uuid).uuid == public.uuid


# -- allocation -----------------------------------------------------------------------------


def test_addresses_are_taken_lowest_first_skipping_the_gateway(ctx: Any,
                                                              fleet: dict[str, Any]) -> None:
    n = net(ctx, gateway="10.88.0.2", provision_start_ip="10.88.0.1",
            provision_end_ip="10.88.0.5")
    got = [allocate(ctx, machine_row(ctx, fleet, f"m{i}"))[0] for i in range(4)]
    assert got == ["10.88.0.1", "10.88.0.3", "10.88.0.4", "10.88.0.5"]
    assert ips_in_use(ctx, n) == got


@pytest.mark.parametrize(("gateway", "expected"), [
    ("10.88.0.10", ["10.88.0.11", "10.88.0.12"]),  # the range's first address
    ("10.88.0.12", ["10.88.0.10", "10.88.0.11"]),  # its last
    ("10.88.0.1", ["10.88.0.10", "10.88.0.11", "10.88.0.12"]),  # outside it
])
def test_the_gateway_is_never_handed_out(ctx: Any, fleet: dict[str, Any], gateway: str,
                                         expected: list[str]) -> None:
    net(ctx, gateway=gateway, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.12")
    got = [allocate(ctx, machine_row(ctx, fleet, f"m{i}"))[0] for i in range(len(expected))]
    assert got == expected
    with pytest.raises(Conflict):
        allocate(ctx, machine_row(ctx, fleet, "one-too-many"))


def test_free_addresses_are_the_gaps_lowest_first_within_the_window(
        ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, gateway="10.88.0.12", provision_start_ip="10.88.0.10",
            provision_end_ip="10.88.0.20")
    holder = machine_row(ctx, fleet, "holder")
    base = int(ipaddress.IPv4Address("10.88.0.0"))
    with ctx.transaction() as session:
        for i, last_octet in enumerate([10, 14, 15, 19]):
            session.add(Nic(mac=f"90:b8:d0:00:00:{i:02x}", machine_uuid=holder.uuid,
                            network_uuid=n.uuid, ip=f"10.88.0.{last_octet}",
                            ip_num=base + last_octet))

    def free(**kwargs: int) -> list[int]:
        with ctx.read() as session:
            network = session.get(Network, n.uuid)
            assert network is not None
            return [ip - base for ip in svc.free_addresses(session, network, **kwargs)]

    assert free() == [11, 13, 16, 17, 18, 20]
    assert free(limit=4) == [11, 13, 16, 17]
    assert free(window=5) == [11, 13, 16]  # up to 11 + 5
    assert free(limit=1) == [11]
    for octet in [11, 13, 16, 17, 18, 20]:
        allocate(ctx, machine_row(ctx, fleet, f"m{octet}"))
    assert free() == []


def test_a_hole_in_the_middle_is_filled_first(ctx: Any, fleet: dict[str, Any]) -> None:
    net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.20")
    rows = [machine_row(ctx, fleet, f"m{i}") for i in range(5)]
    for m in rows:
        allocate(ctx, m)
    with ctx.transaction() as session:
        svc.release_nics(session, rows[2].uuid)  # 10.88.0.12
    assert allocate(ctx, machine_row(ctx, fleet, "next")) == ["10.88.0.12"]
    assert allocate(ctx, machine_row(ctx, fleet, "after")) == ["10.88.0.15"]


def test_range_edges_and_exhaustion_is_subnet_full(ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, provision_start_ip="10.88.0.253", provision_end_ip="10.88.0.254")
    assert allocate(ctx, machine_row(ctx, fleet, "a")) == ["10.88.0.253"]
    assert allocate(ctx, machine_row(ctx, fleet, "b")) == ["10.88.0.254"]
    third = machine_row(ctx, fleet, "c")
    with pytest.raises(Conflict) as err:
        allocate(ctx, third)
    assert err.value.code == "SubnetFull" and err.value.status == 409
    assert ips_in_use(ctx, n) == ["10.88.0.253", "10.88.0.254"]


def test_a_released_address_is_handed_out_again(ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.20")
    first, second = machine_row(ctx, fleet, "a"), machine_row(ctx, fleet, "b")
    assert allocate(ctx, first) == ["10.88.0.10"]
    assert allocate(ctx, second) == ["10.88.0.11"]
    with ctx.transaction() as session:
        assert svc.release_nics(session, first.uuid) == 1
        assert svc.release_nics(session, first.uuid) == 0  # idempotent
    assert ips_in_use(ctx, n) == ["10.88.0.11"]
    assert allocate(ctx, machine_row(ctx, fleet, "c")) == ["10.88.0.10"]


def test_requested_networks_by_uuid_or_name_first_is_primary(ctx: Any,
                                                            fleet: dict[str, Any]) -> None:
    a = net(ctx, "a", "10.88.0.0/24", provision_start_ip="10.88.0.10")
    b = net(ctx, "b", "10.89.0.0/24", provision_start_ip="10.89.0.10", owner="alice")
    m = machine_row(ctx, fleet, "two")
    assert allocate(ctx, m, ["b", a.uuid]) == ["10.89.0.10", "10.88.0.10"]
    with ctx.read() as session:
        loaded = session.get(Machine, m.uuid)
        assert loaded is not None
        fields = svc.machine_network_fields(loaded)
    assert fields["primary_ip"] == "10.89.0.10"
    assert fields["ips"] == ["10.89.0.10", "10.88.0.10"]
    assert fields["networks"] == [b.uuid, a.uuid]


@pytest.mark.parametrize("requested", [["nope"], ["a", "a"], [""]])
def test_unknown_or_repeated_networks_are_invalid(ctx: Any, fleet: dict[str, Any],
                                                  requested: list[str]) -> None:
    net(ctx, "a", "10.88.0.0/24")
    with pytest.raises(InvalidArgument) as err:
        allocate(ctx, machine_row(ctx, fleet, "m"), requested)
    assert err.value.field == "networks"
    assert count(ctx, Nic) == 0


def test_another_accounts_private_network_cannot_be_requested(ctx: Any,
                                                             fleet: dict[str, Any]) -> None:
    make_account(ctx, login="bob")
    net(ctx, "bobnet", "10.90.0.0/24", owner="bob")
    with pytest.raises(InvalidArgument) as err:
        allocate(ctx, machine_row(ctx, fleet, "m"), ["bobnet"])
    assert err.value.field == "networks"


def test_default_is_the_accounts_default_else_the_first_public(ctx: Any,
                                                              fleet: dict[str, Any]) -> None:
    net(ctx, "first", "10.88.0.0/24", provision_start_ip="10.88.0.10")
    net(ctx, "second", "10.89.0.0/24", provision_start_ip="10.89.0.10")
    own = net(ctx, "own", "10.90.0.0/24", provision_start_ip="10.90.0.10", owner="alice")
    assert allocate(ctx, machine_row(ctx, fleet, "a")) == ["10.88.0.10"]
    with ctx.transaction() as session:
        account = session.get(Account, fleet["owner"].uuid)
        assert account is not None
        account.default_network_uuid = own.uuid
    assert allocate(ctx, machine_row(ctx, fleet, "b")) == ["10.90.0.10"]


def test_no_network_at_all_means_no_nic(ctx: Any, fleet: dict[str, Any]) -> None:
    assert allocate(ctx, machine_row(ctx, fleet, "a")) == []


def test_concurrent_allocations_never_share_an_address(ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.250")
    machines = [machine_row(ctx, fleet, f"m{i}") for i in range(40)]
    got: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(batch: list[Machine]) -> None:
        start.wait()
        for m in batch:
            try:
                ips = allocate(ctx, m)
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)
                continue
            with lock:
                got.extend(ips)

    threads = [threading.Thread(target=worker, args=(machines[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(got) == 40 and len(set(got)) == 40
    # lowest first: together they filled the start of the range without a gap
    expected = [str(ipaddress.IPv4Address("10.88.0.10") + i) for i in range(40)]
    assert sorted(got, key=ipaddress.IPv4Address) == expected
    assert ips_in_use(ctx, n) == expected


def test_an_address_taken_by_an_uncommitted_insert_is_lost_and_the_next_one_taken(
        ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.20")
    first, second = machine_row(ctx, fleet, "a"), machine_row(ctx, fleet, "b")
    outcome: list[Any] = []

    def allocate_second() -> None:
        try:
            outcome.append(allocate(ctx, second))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    # Another transaction holds the lowest address, uncommitted and without the advisory
    # lock: the second allocation sees it free, its insert waits, then finds it taken.
    with ctx.transaction() as session:
        session.add(Nic(mac="90:b8:d0:00:00:01", machine_uuid=first.uuid,
                        network_uuid=n.uuid, ip="10.88.0.10", ip_num=0x0A58000A,
                        primary=True))
        session.flush()
        thread = threading.Thread(target=allocate_second)
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive()  # waiting for this transaction
    thread.join(timeout=30)
    assert outcome == [["10.88.0.11"]]
    assert ips_in_use(ctx, n) == ["10.88.0.10", "10.88.0.11"]


# -- machines -------------------------------------------------------------------------------


def test_created_machine_carries_its_addresses_and_release_frees_them(
        ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.20")
    answer = machine_svc.create_machine(
        ctx, {"owner": "alice", "package": "small", "image": "base-64"}, CALLER)
    assert answer["ips"] == ["10.88.0.10"] and answer["primary_ip"] == "10.88.0.10"
    assert answer["networks"] == [n.uuid]
    assert machine_svc.get_machine(ctx, answer["uuid"])["ips"] == ["10.88.0.10"]
    ips = svc.list_network_ips(ctx, n.uuid, fleet["owner"].uuid)
    assert [(i["ip"], i["belongs_to_uuid"]) for i in ips] == [("10.88.0.10", answer["uuid"])]


def test_the_machine_object_carries_every_nic_without_reading_them_back(
        ctx: Any, fleet: dict[str, Any]) -> None:
    net(ctx, "a", "10.88.0.0/24", provision_start_ip="10.88.0.10")
    net(ctx, "b", "10.89.0.0/24", provision_start_ip="10.89.0.10")
    m = machine_row(ctx, fleet, "m")
    allocate(ctx, m, ["a"])
    with ctx.transaction() as session:
        loaded = session.get(Machine, m.uuid)  # its NIC on "a" comes with it
        assert loaded is not None
        svc.attach_nics(session, loaded,
                        svc.requested_networks(session, fleet["owner"].uuid, ["b"]),
                        created_here=False)
        in_hand = svc.machine_network_fields(loaded)
    assert in_hand["ips"] == ["10.88.0.10", "10.89.0.10"]
    assert machine_svc.get_machine(ctx, m.uuid)["ips"] == in_hand["ips"]


def test_a_create_naming_no_network_gets_the_default(ctx: Any, fleet: dict[str, Any]) -> None:
    def created_on() -> list[str]:
        body = {"owner": "alice", "package": "small", "image": "base-64"}
        return machine_svc.create_machine(ctx, body, CALLER)["networks"]

    def set_default(network: Network | None) -> None:
        with ctx.transaction() as session:
            account = session.get(Account, fleet["owner"].uuid)
            assert account is not None
            account.default_network_uuid = network.uuid if network else None

    assert created_on() == []  # no network at all
    first = net(ctx, "first", "10.88.0.0/24")
    net(ctx, "second", "10.89.0.0/24")
    assert created_on() == [first.uuid]
    own = net(ctx, "own", "10.90.0.0/24", owner="alice")
    assert created_on() == [first.uuid]  # a private network is not the default by itself
    set_default(own)
    assert created_on() == [own.uuid]
    make_account(ctx, login="bob")
    set_default(net(ctx, "bobnet", "10.91.0.0/24", owner="bob"))  # not visible to alice
    assert created_on() == [first.uuid]
    assert svc.get_default_network(ctx, fleet["owner"].uuid).uuid == first.uuid


def test_a_refused_create_leaves_no_address_taken(ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx, provision_start_ip="10.88.0.10", provision_end_ip="10.88.0.20")
    with pytest.raises(InvalidArgument):
        machine_svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                         "image": "base-64", "networks": [n.uuid, "nope"]},
                                   CALLER)
    assert count(ctx, Nic) == 0 and count(ctx, Machine) == 0


def test_delete_network_only_when_unused(ctx: Any, fleet: dict[str, Any]) -> None:
    n = net(ctx)
    m = machine_row(ctx, fleet, "a")
    allocate(ctx, m)
    with pytest.raises(Conflict) as err:
        svc.delete_network(ctx, n.uuid)
    assert err.value.code == "InUse"
    with ctx.transaction() as session:
        svc.release_nics(session, m.uuid)
    svc.delete_network(ctx, "external")
    assert count(ctx, Network) == 0


def test_set_and_reset_the_default_network(ctx: Any, fleet: dict[str, Any]) -> None:
    alice = fleet["owner"].uuid
    bob = make_account(ctx, login="bob")
    first = net(ctx, "first", "10.88.0.0/24", provision_start_ip="10.88.0.10")
    own = net(ctx, "own", "10.90.0.0/24", provision_start_ip="10.90.0.10", owner="alice")
    net(ctx, "bobnet", "10.91.0.0/24", owner="bob")
    assert svc.get_default_network(ctx, alice).uuid == first.uuid
    assert svc.set_default_network(ctx, alice, "own").uuid == own.uuid
    assert svc.get_default_network(ctx, alice).uuid == own.uuid
    assert allocate(ctx, machine_row(ctx, fleet, "a")) == ["10.90.0.10"]
    with pytest.raises(InvalidArgument) as err:  # another account's private network
        svc.set_default_network(ctx, alice, "bobnet")
    assert err.value.field == "default_network"
    with pytest.raises(InvalidArgument):
        svc.set_default_network(ctx, alice, "nope")
    assert svc.get_default_network(ctx, alice).uuid == own.uuid  # unchanged
    assert svc.set_default_network(ctx, alice, None).uuid == first.uuid
    assert svc.get_default_network(ctx, bob.uuid).uuid == first.uuid
    with pytest.raises(NotFound):
        svc.get_default_network(ctx, "00000000-0000-0000-0000-000000000000")
