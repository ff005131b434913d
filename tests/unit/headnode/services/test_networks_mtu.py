"""A network's MTU and static routes on the real PostgreSQL: NAPI's bounds, each bad field
named and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import networks as svc
from headnode.services.errors import InvalidArgument
from headnode.store.models import Network
from tests.unit.headnode.services.conftest import count


def net(ctx: Any, **body: Any) -> Network:
    return svc.create_network(ctx, {"name": "external", "subnet": "10.88.0.0/24",
                                    "gateway": "10.88.0.1", **body})


@pytest.mark.parametrize("mtu", [576, 1500, 9000])
def test_mtu_within_napis_bounds_is_kept(ctx: Any, mtu: int) -> None:
    n = net(ctx, mtu=mtu)
    assert svc.get_network(ctx, n.uuid).mtu == mtu
    assert svc.network_to_dict(n)["mtu"] == mtu


def test_mtu_defaults_to_1500_and_routes_to_none(ctx: Any) -> None:
    n = net(ctx)
    stored = svc.get_network(ctx, n.uuid)
    assert (stored.mtu, stored.routes) == (1500, {})


@pytest.mark.parametrize("mtu", [575, 9001, 0, -1, "1500", 1500.0, True])
def test_mtu_outside_the_bounds_or_not_an_integer_is_refused(ctx: Any, mtu: Any) -> None:
    with pytest.raises(InvalidArgument) as err:
        net(ctx, mtu=mtu)
    assert err.value.field == "mtu"
    assert "576" in err.value.message and "9000" in err.value.message
    assert count(ctx, Network) == 0


def test_routes_are_kept_normalised(ctx: Any) -> None:
    n = net(ctx, routes={"10.10.0.0/16": "10.88.0.5", "192.168.7.7": "10.88.0.6",
                         "172.16.0.9/32": "10.88.0.6"})
    assert svc.get_network(ctx, n.uuid).routes == {
        "10.10.0.0/16": "10.88.0.5", "192.168.7.7": "10.88.0.6", "172.16.0.9": "10.88.0.6"}
    assert svc.network_to_dict(n)["routes"]["10.10.0.0/16"] == "10.88.0.5"


@pytest.mark.parametrize("routes", [
    {"10.10.0.0/16": "10.89.0.5"},  # the gateway is outside the subnet
    {"10.10.0.0/16": "10.88.0.255"},  # ... its broadcast address
    {"10.10.0.0/16": "gateway"},
    {"10.10.0.1/16": "10.88.0.5"},  # host bits set
    {"somewhere": "10.88.0.5"},
    ["10.10.0.0/16", "10.88.0.5"],
    "10.10.0.0/16=10.88.0.5",
])
def test_a_bad_route_names_routes_and_writes_nothing(ctx: Any, routes: Any) -> None:
    with pytest.raises(InvalidArgument) as err:
        net(ctx, routes=routes)
    assert err.value.field == "routes"
    assert count(ctx, Network) == 0


def test_a_route_gateway_outside_the_subnet_is_named_in_the_message(ctx: Any) -> None:
    with pytest.raises(InvalidArgument) as err:
        net(ctx, routes={"10.10.0.0/16": "10.89.0.5"})
    assert "10.89.0.5" in err.value.message and "10.88.0.0/24" in err.value.message
