"""The catalog pages: images, packages, networks, accounts and SSH keys; what a tenant sees
of them, the operators' forms, and bad input (a 4xx naming the field, nothing created)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from headnode.store.models import Account, Key, Network, Package
from tests.unit.headnode.api.conftest import count, make_account, make_image, make_package
from tests.unit.headnode.auth.conftest import private_key, public_line
from tests.unit.headnode.console.conftest import csrf_of, post_form, sign_in_as_tenant


def row_names(page: str) -> list[str]:
    """The first cell of each row of the page's tables: the name of each thing listed."""
    return re.findall(r'<tr>\s*<th scope="row">([^<]*)</th>', page)


def note_of(page: str, field: str) -> str:
    found = re.search(rf'id="{field}-note">\s*(.*?)\s*</p>', page, re.S)
    return found.group(1) if found else ""


@pytest.fixture
def tenants(sdc: Any) -> dict[str, Account]:
    return {"alice": make_account(sdc, login="alice"),
            "bob": make_account(sdc, login="bob", email="bob@example.com")}


# ---------------------------------------------------------------------------- images


def test_images_an_operator_sees_all_a_tenant_the_usable_ones(
        sdc: Any, client: FlaskClient, operator: FlaskClient, tenants: dict[str, Any]) -> None:
    make_image(sdc, name="public-img")
    make_image(sdc, name="alices-img", public=False, owner_uuid=tenants["alice"].uuid)
    make_image(sdc, name="bobs-img", public=False, owner_uuid=tenants["bob"].uuid)
    make_image(sdc, name="broken-img", state="failed")
    every = row_names(operator.get("/console/images").get_data(as_text=True))
    assert sorted(every) == ["alices-img", "bobs-img", "broken-img", "public-img"]
    sign_in_as_tenant(client, tenants["alice"])
    page = client.get("/console/images").get_data(as_text=True)
    assert sorted(row_names(page)) == ["alices-img", "public-img"]
    assert "<h1>Images</h1>" in page


def test_no_images_and_a_page_past_the_end(operator: FlaskClient) -> None:
    assert "No images." in operator.get("/console/images").get_data(as_text=True)
    past = operator.get("/console/images?page=2")
    assert past.status_code == 200 and "No images on this page." in past.get_data(as_text=True)
    assert operator.get("/console/images?page=nope").status_code == 400


# ---------------------------------------------------------------------------- packages


def test_a_tenant_sees_active_packages_without_the_form(
        sdc: Any, client: FlaskClient, tenants: dict[str, Any]) -> None:
    make_package(sdc, name="small")
    make_package(sdc, name="retired", active=False)
    sign_in_as_tenant(client, tenants["alice"])
    page = client.get("/console/packages").get_data(as_text=True)
    assert row_names(page) == ["small"] and "New package" not in page
    before = count(sdc, Package)
    answer = post_form(client, "/console/packages", {"name": "mine", "memory": "1", "disk": "1"})
    assert answer.status_code == 404 and count(sdc, Package) == before


def test_an_operator_creates_a_package(sdc: Any, operator: FlaskClient) -> None:
    answer = post_form(operator, "/console/packages", {
        "name": "g4-8G", "memory": "8192", "disk": "81920", "vcpus": "4", "cpu_cap": "400",
        "group": "g4", "active": "on"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/packages"
    page = operator.get("/console/packages").get_data(as_text=True)
    assert "Package g4-8G created." in page and row_names(page) == ["g4-8G"]
    with sdc.read() as session:
        made = session.query(Package).one()
        assert (made.memory, made.disk, made.vcpus, made.cpu_cap, made.active, made.default) \
            == (8192, 81920, 4, 400, True, False)


@pytest.mark.parametrize(("form", "field"), [
    ({"memory": "1024", "disk": "10240"}, "name"),
    ({"name": "x", "memory": "lots", "disk": "10240"}, "memory"),
    ({"name": "x", "memory": "0", "disk": "10240"}, "memory"),
    ({"name": "x", "memory": "1024"}, "disk"),
    ({"name": "x", "memory": "1024", "disk": "1", "vcpus": "1.5"}, "vcpus"),
])
def test_a_bad_package_form_names_the_field_and_creates_nothing(
        sdc: Any, operator: FlaskClient, form: dict[str, str], field: str) -> None:
    answer = post_form(operator, "/console/packages", form)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400, page
    assert f"{field}:" in page and note_of(page, field).startswith("Error:")
    assert 'aria-invalid="true"' in page
    assert count(sdc, Package) == 0


def test_a_duplicate_package_is_a_409_with_the_form_kept(sdc: Any, operator: FlaskClient) -> None:
    make_package(sdc, name="small")
    answer = post_form(operator, "/console/packages",
                       {"name": "small", "memory": "2048", "disk": "1"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 409 and "package small already exists" in page
    assert 'name="memory" type="number" value="2048"' in page
    assert count(sdc, Package) == 1


# ---------------------------------------------------------------------------- networks


def make_network(sdc: Any, **overrides: Any) -> Network:
    from headnode.services import networks
    body = {"name": "external", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1"}
    body.update(overrides)
    return networks.create_network(sdc, body)


def test_networks_a_tenant_sees_public_ones_and_their_own(
        sdc: Any, client: FlaskClient, operator: FlaskClient, tenants: dict[str, Any]) -> None:
    make_network(sdc)
    make_network(sdc, name="alice-net", subnet="10.1.0.0/24", gateway=None, owner="alice")
    make_network(sdc, name="bob-net", subnet="10.2.0.0/24", gateway=None, owner="bob")
    page = operator.get("/console/networks").get_data(as_text=True)
    assert row_names(page) == ["external", "alice-net", "bob-net"]
    assert "private to bob" in page
    sign_in_as_tenant(client, tenants["alice"])
    page = client.get("/console/networks").get_data(as_text=True)
    assert row_names(page) == ["external", "alice-net"] and "New network" not in page


def test_an_operator_creates_a_network(sdc: Any, operator: FlaskClient,
                                       tenants: dict[str, Any]) -> None:
    answer = post_form(operator, "/console/networks", {
        "name": "internal", "subnet": "192.168.50.0/24", "gateway": "192.168.50.1",
        "provision_start_ip": "192.168.50.10", "provision_end_ip": "192.168.50.99",
        "nic_tag": "internal", "vlan_id": "50", "resolvers": "8.8.8.8, 1.1.1.1",
        "owner": "alice"})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    with sdc.read() as session:
        made = session.query(Network).one()
        assert (made.provision_start_ip, made.provision_end_ip, made.nic_tag, made.vlan_id,
                made.resolvers, made.public, made.owner_uuid) == (
            "192.168.50.10", "192.168.50.99", "internal", 50, ["8.8.8.8", "1.1.1.1"], False,
            tenants["alice"].uuid)
    assert "Network internal (192.168.50.0/24) created." in operator.get(
        "/console/networks").get_data(as_text=True)


@pytest.mark.parametrize(("form", "field"), [
    ({"subnet": "10.9.0.0/24"}, "name"),
    ({"name": "n", "subnet": "10.9.0.0/33"}, "subnet"),
    ({"name": "n", "subnet": "10.9.0.0/24", "gateway": "10.10.0.1"}, "gateway"),
    ({"name": "n", "subnet": "10.9.0.0/24", "vlan_id": "5000"}, "vlan_id"),
    ({"name": "n", "subnet": "10.9.0.0/24", "vlan_id": "ten"}, "vlan_id"),
    ({"name": "n", "subnet": "10.9.0.0/24", "resolvers": "8.8.8.8 not-an-ip"}, "resolvers"),
    ({"name": "n", "subnet": "10.9.0.0/24", "owner": "nobody"}, "owner"),
])
def test_a_bad_network_form_names_the_field_and_creates_nothing(
        sdc: Any, operator: FlaskClient, form: dict[str, str], field: str) -> None:
    answer = post_form(operator, "/console/networks", form)
    page = answer.get_data(as_text=True)
    assert 400 <= answer.status_code < 500, page
    assert f"{field}:" in page, page
    assert count(sdc, Network) == 0


def test_deleting_a_network(sdc: Any, client: FlaskClient, operator: FlaskClient,
                            tenants: dict[str, Any]) -> None:
    network = make_network(sdc)
    answer = post_form(operator, "/console/networks/delete", {"network": network.uuid})
    assert answer.status_code == 302 and count(sdc, Network) == 0
    gone = post_form(operator, "/console/networks/delete", {"network": network.uuid})
    assert gone.status_code == 404 and "Not deleted." in gone.get_data(as_text=True)
    kept = make_network(sdc)
    sign_in_as_tenant(client, tenants["alice"])
    refused = post_form(client, "/console/networks/delete", {"network": kept.uuid})
    assert refused.status_code == 404 and count(sdc, Network) == 1


# ---------------------------------------------------------------------------- accounts


def test_accounts_are_for_operators_only(client: FlaskClient, tenants: dict[str, Any]) -> None:
    sign_in_as_tenant(client, tenants["alice"])
    assert client.get("/console/accounts").status_code == 404
    assert 'href="/console/accounts"' not in client.get("/console/keys").get_data(as_text=True)


def test_an_operator_creates_an_account(sdc: Any, operator: FlaskClient) -> None:
    answer = post_form(operator, "/console/accounts",
                       {"login": "carol", "email": "carol@example.com"})
    assert answer.status_code == 302
    page = operator.get("/console/accounts").get_data(as_text=True)
    assert row_names(page) == ["carol"] and "Account carol created." in page
    assert 'href="/console/keys?account=carol"' in page


@pytest.mark.parametrize(("form", "field", "status"), [
    ({"login": "c", "email": "c@example.com"}, "login", 400),
    ({"login": "console", "email": "c@example.com"}, "login", 400),
    ({"login": "carol", "email": "not-an-address"}, "email", 400),
    ({"login": "carol"}, "email", 400),
])
def test_a_bad_account_form_names_the_field(sdc: Any, operator: FlaskClient,
                                            form: dict[str, str], field: str,
                                            status: int) -> None:
    answer = post_form(operator, "/console/accounts", form)
    page = answer.get_data(as_text=True)
    assert answer.status_code == status and f"{field}:" in page
    assert count(sdc, Account) == 0


def test_a_taken_login_is_a_409(sdc: Any, operator: FlaskClient,
                                tenants: dict[str, Any]) -> None:
    answer = post_form(operator, "/console/accounts",
                       {"login": "alice", "email": "other@example.com"})
    assert answer.status_code == 409 and "login alice is taken" in answer.get_data(as_text=True)
    assert count(sdc, Account) == 2


def test_a_page_of_50_accounts(sdc: Any, operator: FlaskClient) -> None:
    for i in range(51):
        make_account(sdc, login=f"user{i:03d}", email=f"u{i}@example.com")
    first = row_names(operator.get("/console/accounts").get_data(as_text=True))
    second = row_names(operator.get("/console/accounts?page=2").get_data(as_text=True))
    assert len(first) == 50 and second == ["user050"]


# ---------------------------------------------------------------------------- keys


def test_a_tenant_adds_and_deletes_their_own_key(sdc: Any, client: FlaskClient,
                                                 tenants: dict[str, Any]) -> None:
    sign_in_as_tenant(client, tenants["alice"])
    assert "No SSH keys yet." in client.get("/console/keys").get_data(as_text=True)
    line = public_line(private_key("ed25519"), "alice@laptop")
    # an ``account`` in a tenant's form is ignored: a key goes to the tenant's own account
    answer = post_form(client, "/console/keys", {"name": "laptop", "key": line + "\n",
                                                 "account": tenants["bob"].uuid})
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/keys"
    page = client.get("/console/keys").get_data(as_text=True)
    assert row_names(page) == ["laptop"] and "Key laptop added." in page
    with sdc.read() as session:
        assert [k.account_uuid for k in session.query(Key)] == [tenants["alice"].uuid]
    answer = post_form(client, "/console/keys/delete", {"name": "laptop"})
    assert answer.status_code == 302 and count(sdc, Key) == 0


def test_a_tenant_cannot_delete_another_tenants_key(sdc: Any, client: FlaskClient,
                                                    operator: FlaskClient,
                                                    tenants: dict[str, Any]) -> None:
    answer = post_form(operator, "/console/keys", {
        "account": tenants["bob"].uuid, "name": "bobs",
        "key": public_line(private_key("ed25519"))})
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/keys?account=bob"
    assert row_names(operator.get("/console/keys?account=bob").get_data(as_text=True)) == ["bobs"]
    sign_in_as_tenant(client, tenants["alice"])
    assert row_names(client.get("/console/keys?account=bob").get_data(as_text=True)) == []
    refused = post_form(client, "/console/keys/delete",
                        {"name": "bobs", "account": tenants["bob"].uuid})
    assert refused.status_code == 404 and count(sdc, Key) == 1


@pytest.mark.parametrize(("form", "field", "status"), [
    ({"name": "k"}, "key", 400),
    ({"name": "k", "key": "ssh-ed25519 not-base64"}, "key", 422),
    ({"name": "a/b", "key": "GOOD"}, "name", 422),
])
def test_a_bad_key_names_the_field_and_adds_nothing(
        sdc: Any, client: FlaskClient, tenants: dict[str, Any], form: dict[str, str],
        field: str, status: int) -> None:
    sign_in_as_tenant(client, tenants["alice"])
    if form.get("key") == "GOOD":
        form = {**form, "key": public_line(private_key("ed25519"))}
    answer = post_form(client, "/console/keys", form)
    page = answer.get_data(as_text=True)
    assert answer.status_code == status and f"{field}:" in page, page
    assert count(sdc, Key) == 0


def test_the_same_key_twice_is_a_409(sdc: Any, client: FlaskClient,
                                     tenants: dict[str, Any]) -> None:
    sign_in_as_tenant(client, tenants["alice"])
    line = public_line(private_key("ed25519"))
    assert post_form(client, "/console/keys", {"key": line}).status_code == 302
    again = post_form(client, "/console/keys", {"key": line, "name": "other"})
    assert again.status_code == 409 and "already added" in again.get_data(as_text=True)
    assert count(sdc, Key) == 1


def test_an_operator_chooses_whose_keys(operator: FlaskClient, tenants: dict[str, Any]) -> None:
    assert "Choose an account" in operator.get("/console/keys").get_data(as_text=True)
    assert operator.get("/console/keys?account=nobody").status_code == 404
    page = operator.get(f"/console/keys?account={tenants['alice'].uuid}").get_data(as_text=True)
    assert "<h1>SSH keys of alice</h1>" in page


def test_deleting_a_package_no_machine_uses(sdc: Any, client: FlaskClient, operator: FlaskClient,
                                            fleet: dict[str, Any]) -> None:
    from tests.unit.headnode.api.conftest import make_machine

    spare = make_package(sdc, name="spare")
    make_machine(sdc, fleet)  # of fleet's package "small"
    answer = post_form(operator, "/console/packages/delete", {"package": spare.uuid})
    assert answer.status_code == 302 and count(sdc, Package) == 1
    used = post_form(operator, "/console/packages/delete", {"package": fleet["package"].uuid})
    assert used.status_code == 409 and "deactivate it instead" in used.get_data(as_text=True)
    assert count(sdc, Package) == 1
    sign_in_as_tenant(client, fleet["owner"])
    refused = post_form(client, "/console/packages/delete", {"package": fleet["package"].uuid})
    assert refused.status_code == 404 and count(sdc, Package) == 1


def test_an_account_made_with_a_console_password_signs_in_with_it(
        sdc: Any, client: FlaskClient, operator: FlaskClient) -> None:
    password = "  a long enough passphrase "  # kept as typed, spaces and all
    answer = post_form(operator, "/console/accounts", {
        "login": "dave", "email": "dave@example.com", "password": password})
    assert answer.status_code == 302
    short = post_form(operator, "/console/accounts", {
        "login": "erin", "email": "erin@example.com", "password": "too-short"})
    refused = short.get_data(as_text=True)
    assert short.status_code == 400 and "password: Length must be between 12" in refused
    assert "too-short" not in refused  # a password is never sent back
    assert count(sdc, Account) == 1
    client.post("/console/signout", data={"csrf_token": csrf_of(refused)})
    signed = post_form(client, "/console/signin/tenant",
                       {"login": "dave", "password": password})
    assert signed.status_code == 302, signed.get_data(as_text=True)
    assert "dave" in client.get("/console/keys").get_data(as_text=True)
