"""``/ops/networks`` and ``/ops/accounts/<login>/keys`` on the real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import networks
from headnode.store.models import Key, Machine, Network
from tests.unit.headnode.api.conftest import (
    count,
    make_account,
    make_image,
    make_package,
    make_server,
)
from tests.unit.headnode.auth.conftest import private_key, public_line

BODY = {"name": "external", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
        "provision_start_ip": "10.88.0.10", "provision_end_ip": "10.88.0.250",
        "resolvers": ["8.8.8.8"], "vlan_id": 0}


def test_create_list_get_delete(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/networks", json=BODY)
    assert answer.status_code == 201
    created = answer.get_json()
    assert created["subnet"] == "10.88.0.0/24" and created["netmask"] == "255.255.255.0"
    assert created["public"] is True and created["owner_uuid"] is None
    assert created["nic_tag"] == "external" and created["resolvers"] == ["8.8.8.8"]
    assert api("get", "/ops/networks").get_json() == [created]
    assert api("get", f"/ops/networks/{created['uuid']}").get_json() == created
    assert api("get", "/ops/networks/external").get_json() == created
    assert api("get", "/ops/networks/external/ips").get_json() == [
        {"ip": "10.88.0.1", "reserved": True, "managed": True}]
    assert api("delete", "/ops/networks/external").status_code == 204
    assert api("get", "/ops/networks/external").status_code == 404
    assert count(sdc, Network) == 0


def test_a_private_network_names_its_owner(api: Any, sdc: Any) -> None:
    alice = make_account(sdc, login="alice")
    answer = api("post", "/ops/networks", json={"name": "a", "subnet": "10.9.0.0/16",
                                                "owner": "alice"})
    assert answer.status_code == 201
    assert (answer.get_json()["public"], answer.get_json()["owner_uuid"]) == (False, alice.uuid)


@pytest.mark.parametrize(("change", "field"), [
    ({"subnet": "10.88.0.0/33"}, "subnet"),
    ({"gateway": "192.168.0.1"}, "gateway"),
    ({"provision_end_ip": "10.88.0.5"}, "provision_end_ip"),
    ({"vlan_id": 9999}, "vlan_id"),
    ({"vlan_id": "x"}, "vlan_id"),
    ({"resolvers": "8.8.8.8"}, "resolvers"),
    ({"owner": "nobody"}, "owner"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_bodies_are_422_naming_the_field(api: Any, sdc: Any, change: dict[str, Any],
                                             field: str) -> None:
    answer = api("post", "/ops/networks", json={**BODY, **change})
    assert answer.status_code == 422
    assert field in answer.get_json()["errors"]
    assert count(sdc, Network) == 0


def test_missing_fields_are_named(api: Any) -> None:
    answer = api("post", "/ops/networks", json={})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"name", "subnet"}


def test_overlap_and_duplicate_name(api: Any) -> None:
    assert api("post", "/ops/networks", json=BODY).status_code == 201
    overlap = api("post", "/ops/networks", json={**BODY, "name": "other"})
    assert overlap.status_code == 422 and "subnet" in overlap.get_json()["errors"]
    same_name = api("post", "/ops/networks", json={**BODY, "subnet": "10.99.0.0/24",
                                                   "gateway": None,
                                                   "provision_start_ip": "10.99.0.10",
                                                   "provision_end_ip": "10.99.0.20"})
    assert same_name.status_code == 409


def test_a_network_in_use_is_not_deleted(api: Any, sdc: Any) -> None:
    make_server(sdc)
    make_package(sdc)
    make_image(sdc)
    make_account(sdc, login="alice")
    created = api("post", "/ops/networks", json=BODY).get_json()
    machine = api("post", "/ops/machines", json={"owner": "alice", "package": "small",
                                                 "image": "base-64"}).get_json()
    assert machine["ips"] == ["10.88.0.10"] and machine["primary_ip"] == "10.88.0.10"
    answer = api("delete", f"/ops/networks/{created['uuid']}")
    assert answer.status_code == 409 and answer.get_json()["code"] == "InUse"
    ips = api("get", "/ops/networks/external/ips").get_json()
    assert [i["ip"] for i in ips] == ["10.88.0.1", "10.88.0.10"]
    assert ips[1]["belongs_to_uuid"] == machine["uuid"]
    with sdc.transaction() as session:
        networks.release_nics(session, machine["uuid"])
        session.delete(session.get(Machine, machine["uuid"]))
    assert api("delete", f"/ops/networks/{created['uuid']}").status_code == 204


# -- keys -----------------------------------------------------------------------------------


def test_operators_seed_and_list_keys(api: Any, sdc: Any) -> None:
    make_account(sdc, login="alice")
    line = public_line(private_key("rsa"))
    answer = api("post", "/ops/accounts/alice/keys", json={"name": "laptop", "key": line})
    assert answer.status_code == 201
    key = answer.get_json()
    assert key["name"] == "laptop" and key["key"] == line
    assert len(key["fingerprint"].split(":")) == 16
    assert key["fingerprint_sha256"].startswith("SHA256:")
    assert api("get", "/ops/accounts/alice/keys").get_json() == [key]
    assert api("get", f"/ops/accounts/alice/keys/{key['fingerprint']}").get_json() == key
    again = api("post", "/ops/accounts/alice/keys", json={"name": "again", "key": line})
    assert again.status_code == 409
    assert api("delete", "/ops/accounts/alice/keys/laptop").status_code == 204
    assert api("get", "/ops/accounts/alice/keys").get_json() == []


def test_bad_keys_and_unknown_accounts(api: Any, sdc: Any) -> None:
    make_account(sdc, login="alice")
    bad = api("post", "/ops/accounts/alice/keys", json={"key": "ssh-rsa nonsense"})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"key"}
    missing = api("post", "/ops/accounts/alice/keys", json={"name": "x"})
    assert missing.status_code == 422 and set(missing.get_json()["errors"]) == {"key"}
    line = public_line(private_key("ed25519"))
    assert api("post", "/ops/accounts/nobody/keys", json={"key": line}).status_code == 404
    assert api("get", "/ops/accounts/nobody/keys").status_code == 404
    assert count(sdc, Key) == 0


def test_keys_need_the_operator_token(client: Any, sdc: Any) -> None:
    make_account(sdc, login="alice")
    assert client.get("/ops/accounts/alice/keys").status_code == 401
    assert client.get("/ops/networks").status_code == 401


def test_an_accounts_default_network(api: Any, sdc: Any) -> None:
    make_account(sdc, login="alice")
    path = "/ops/accounts/alice/default-network"
    assert api("get", path).status_code == 404  # no network at all yet
    public = api("post", "/ops/networks", json=BODY).get_json()
    assert api("get", path).get_json()["uuid"] == public["uuid"]
    own = api("post", "/ops/networks", json={"name": "own", "subnet": "10.9.0.0/16",
                                             "owner": "alice"}).get_json()
    answer = api("put", path, json={"network": "own"})
    assert answer.status_code == 200 and answer.get_json()["uuid"] == own["uuid"]
    assert api("get", path).get_json()["uuid"] == own["uuid"]
    bad = api("put", path, json={"network": "nope"})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"default_network"}
    assert api("put", path, json={}).status_code == 422
    assert api("put", path, json={"network": None}).get_json()["uuid"] == public["uuid"]
    assert api("put", "/ops/accounts/nobody/default-network",
               json={"network": None}).status_code == 404
