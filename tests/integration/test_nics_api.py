"""A machine's NICs through real processes (API, worker, sim agents): CloudAPI's ListNics,
GetNic, AddNic and RemoveNic signed as a tenant, the operator's NIC routes with the
anti-spoofing settings, ``sdc vm nic ...`` and ``sdc network create --mtu --route``.
Every refusal names its field and leaves the machine's NICs and the addresses as they were."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.integration.conftest import Cloud, sdc
from tests.support.httpsig_client import Signer
from tests.support.wait import wait_until

JOB_TIMEOUT = 60


class Tenant:
    """CloudAPI requests signed with one account's key, against the cloud's API."""

    def __init__(self, cloud: Cloud, signer: Signer) -> None:
        self.url = cloud.api.base_url
        self.signer = signer

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = self.signer.headers(method, path)
        return requests.request(method.upper(), self.url + path, headers=headers, json=body,
                                timeout=30, allow_redirects=False)


@pytest.fixture(scope="module")
def seeded(cloud: Cloud) -> dict[str, Any]:
    seed = cloud.seed()
    bob = cloud.api.post("/ops/accounts", {"login": "bob", "email": "bob@example.com"})
    for args in (["front", "--subnet", "10.88.0.0/24", "--gateway", "10.88.0.1",
                  "--range", "10.88.0.10-10.88.0.250", "--mtu", "9000",
                  "--route", "10.20.0.0/16=10.88.0.3", "--route", "10.30.0.5=10.88.0.4"],
                 ["back", "--subnet", "10.77.0.0/24", "--range", "10.77.0.5-10.77.0.9",
                  "--owner", "alice", "--vlan", "77"],
                 ["bobs", "--subnet", "10.66.0.0/24", "--owner", "bob"],
                 ["elsewhere", "--subnet", "10.55.0.0/24", "--nic-tag", "internal"]):
        created = sdc(cloud, "network", "create", *args)
        assert created.returncode == 0, created.stderr
    signers = {"alice": Signer("alice"), "bob": Signer("bob")}
    for login, signer in signers.items():
        cloud.api.post(f"/ops/accounts/{login}/keys", {"key": signer.public_line})
    nets = {n["name"]: n for n in cloud.api.get("/ops/networks")}
    return {**seed, "bob": bob, "networks": nets,
            "alice": Tenant(cloud, signers["alice"]), "bobt": Tenant(cloud, signers["bob"])}


def provision(cloud: Cloud, owner: str, alias: str, networks: list[str]) -> dict[str, Any]:
    machine = cloud.api.post("/ops/machines", {"owner": owner, "package": "small",
                                               "image": "base-64", "alias": alias,
                                               "networks": networks})
    assert cloud.wait_job(machine["job_uuid"])["execution"] == "succeeded"
    return dict(cloud.api.get(f"/ops/machines/{machine['uuid']}"))


def wait_machine_idle(cloud: Cloud, machine_uuid: str) -> None:
    wait_until(lambda: cloud.api.get(f"/ops/machines/{machine_uuid}")["job_uuid"] is None,
               timeout=JOB_TIMEOUT, interval=0.1, message=f"machine {machine_uuid}'s job")


def in_use(cloud: Cloud, network: str) -> list[str]:
    return [ip["ip"] for ip in cloud.api.get(f"/ops/networks/{network}/ips")
            if not ip.get("reserved")]


def test_network_mtu_and_routes(cloud: Cloud, seeded: dict[str, Any]) -> None:
    front = seeded["networks"]["front"]
    assert front["mtu"] == 9000
    assert front["routes"] == {"10.20.0.0/16": "10.88.0.3", "10.30.0.5": "10.88.0.4"}
    assert seeded["networks"]["back"]["mtu"] == 1500
    shown = json.loads(sdc(cloud, "--json", "network", "get", "front").stdout)
    assert shown["routes"] == front["routes"]
    off_net = sdc(cloud, "network", "create", "x", "--subnet", "10.44.0.0/24",
                  "--route", "10.20.0.0/16=10.45.0.1")
    assert off_net.returncode == 1 and "routes" in off_net.stderr
    no_gateway = sdc(cloud, "network", "create", "x", "--subnet", "10.44.0.0/24",
                     "--route", "10.20.0.0/16")
    assert no_gateway.returncode == 2 and "--route" in no_gateway.stderr
    too_big = sdc(cloud, "network", "create", "x", "--subnet", "10.44.0.0/24",
                  "--mtu", "9001")
    assert too_big.returncode == 1 and "mtu" in too_big.stderr
    assert "x" not in {n["name"] for n in cloud.api.get("/ops/networks")}


def test_tenant_adds_gets_and_removes_a_nic(cloud: Cloud, seeded: dict[str, Any]) -> None:
    alice, nets = seeded["alice"], seeded["networks"]
    machine = provision(cloud, "alice", "nic1", ["front"])
    base = f"/my/machines/{machine['uuid']}/nics"

    listed = alice.call("get", base)
    assert listed.status_code == 200 and listed.headers["x-resource-count"] == "1"
    (first,) = listed.json()
    assert first == {"ip": machine["primary_ip"], "mac": machine["nics"][0]["mac"],
                     "primary": True, "netmask": "255.255.255.0", "gateway": "10.88.0.1",
                     "state": "running", "network": nets["front"]["uuid"]}
    head = alice.call("head", base)
    assert (head.status_code, head.content, head.headers["x-resource-count"]) == (200, b"", "1")

    added = alice.call("post", base, {"network": nets["back"]["uuid"]})
    assert added.status_code == 201, added.text
    nic = added.json()
    assert nic["state"] == "provisioning" and nic["primary"] is False
    assert nic["network"] == nets["back"]["uuid"] and nic["ip"] == "10.77.0.5"
    bare = nic["mac"].replace(":", "")
    assert added.headers["Location"] == f"{base}/{bare}"

    def state_of(mac: str) -> str | None:
        got = alice.call("get", f"{base}/{mac}")
        return str(got.json()["state"]) if got.status_code == 200 else None

    wait_until(lambda: state_of(bare) == "running", timeout=JOB_TIMEOUT, interval=0.2,
               message="the added NIC to run")
    assert alice.call("get", f"{base}/{nic['mac']}").json()["ip"] == "10.77.0.5"  # colons
    ops_view = cloud.api.get(f"/ops/machines/{machine['uuid']}/nics")
    assert [(n["interface"], n["nic_tag"], n["vlan_id"], n["mtu"]) for n in ops_view] == [
        ("net0", "external", 0, 9000), ("net1", "external", 77, 1500)]
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["ips"] == [
        machine["primary_ip"], "10.77.0.5"]

    again = alice.call("post", base, {"network": "back"})  # by name; it has one there
    assert again.status_code == 302 and again.headers["Location"] == f"{base}/{bare}"

    primary = alice.call("delete", f"{base}/{first['mac'].replace(':', '')}")
    assert primary.status_code == 409 and primary.json()["code"] == "PrimaryNic"

    removed = alice.call("delete", f"{base}/{bare}")
    assert removed.status_code == 204
    wait_until(lambda: alice.call("get", f"{base}/{bare}").status_code == 404,
               timeout=JOB_TIMEOUT, interval=0.2, message="the removed NIC to go")
    assert [n["mac"] for n in alice.call("get", base).json()] == [first["mac"]]
    assert in_use(cloud, "back") == []


def test_tenant_refusals_name_the_field_and_change_nothing(cloud: Cloud,
                                                            seeded: dict[str, Any]) -> None:
    alice, bob, nets = seeded["alice"], seeded["bobt"], seeded["networks"]
    machine = provision(cloud, "alice", "nic2", ["front"])
    base = f"/my/machines/{machine['uuid']}/nics"
    before = (alice.call("get", base).json(), in_use(cloud, "front"), in_use(cloud, "back"))

    def refused(body: Any, code: str, field: str) -> None:
        answer = alice.call("post", base, body)
        assert answer.status_code == 409, (body, answer.text)
        assert answer.json()["code"] == code and field in answer.json()["message"], answer.text

    refused({}, "MissingParameter", "network")
    refused({"network": nets["bobs"]["uuid"]}, "InvalidArgument", "network")  # bob's
    refused({"network": "nowhere"}, "InvalidArgument", "network")
    refused({"network": "back", "ip": "10.77.0"}, "InvalidArgument", "ip")
    refused({"network": "back", "ip": "10.77.0.200"}, "InvalidArgument", "ip")  # off range
    refused({"network": "back", "allow_ip_spoofing": True}, "InvalidArgument",
            "allow_ip_spoofing")
    refused({"network": "back", "allowed_ips": ["10.0.0.1"]}, "InvalidArgument",
            "allowed_ips")
    refused({"network": {"ipv4_uuid": nets["back"]["uuid"], "ipv4_ips": ["x"]}},
            "InvalidArgument", "network")
    no_tag = alice.call("post", base, {"network": "elsewhere"})  # sim nodes lack "internal"
    assert no_tag.status_code == 409 and no_tag.json()["code"] == "NicTagNotProvided"

    bad_mac = alice.call("get", f"{base}/not-a-mac")
    assert bad_mac.status_code == 409 and "mac" in bad_mac.json()["message"]
    assert alice.call("get", f"{base}/90b8d0000000").status_code == 404
    assert alice.call("delete", f"{base}/90b8d0000000").status_code == 404
    for call in (("get", base), ("post", base, {"network": "front"}),
                 ("delete", f"{base}/{machine['nics'][0]['mac'].replace(':', '')}")):
        assert bob.call(*call).status_code == 404  # alice's machine is not bob's to see

    assert (alice.call("get", base).json(), in_use(cloud, "front"),
            in_use(cloud, "back")) == before


def test_tenant_picks_the_address(cloud: Cloud, seeded: dict[str, Any]) -> None:
    alice, nets = seeded["alice"], seeded["networks"]
    machine = provision(cloud, "alice", "nic3", ["front"])
    base = f"/my/machines/{machine['uuid']}/nics"
    # the network object form, as `triton inst nic create INST ipv4_uuid=.. ipv4_ips=..`
    added = alice.call("post", base, {"network": {"ipv4_uuid": nets["back"]["uuid"],
                                                  "ipv4_ips": ["10.77.0.8"]}})
    assert added.status_code == 201, added.text
    assert added.json()["ip"] == "10.77.0.8"
    wait_machine_idle(cloud, machine["uuid"])
    assert "10.77.0.8" in in_use(cloud, "back")
    taken = provision(cloud, "alice", "nic4", ["front"])
    clash = alice.call("post", f"/my/machines/{taken['uuid']}/nics",
                       {"network": "back", "ip": "10.77.0.8"})
    assert clash.status_code == 409 and clash.json()["code"] == "InUse", clash.text


def test_operator_sets_anti_spoofing(cloud: Cloud, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, "alice", "nic5", ["front"])
    mac = machine["nics"][0]["mac"]
    path = f"/ops/machines/{machine['uuid']}/nics/{mac}"
    nic = cloud.api.get(path)
    assert nic["allow_ip_spoofing"] is False and nic["allowed_ips"] == []

    answer = cloud.api.put(path, {"allow_ip_spoofing": True, "allowed_ips": ["10.88.0.200",
                                                                             "10.9.0.0/16"]})
    assert answer["machine_uuid"] == machine["uuid"] and answer["nic"]["mac"] == mac
    assert cloud.wait_job(answer["job_uuid"])["execution"] == "succeeded"
    nic = cloud.api.get(path.replace(":", ""))  # without colons too
    assert nic["allow_ip_spoofing"] is True and nic["allow_mac_spoofing"] is False
    assert nic["allowed_ips"] == ["10.88.0.200", "10.9.0.0/16"]

    patched = cloud.api.request("PATCH", path, {"allow_ip_spoofing": False})
    assert cloud.wait_job(patched["job_uuid"])["execution"] == "succeeded"
    nic = cloud.api.get(path)
    assert nic["allow_ip_spoofing"] is False and nic["allowed_ips"] == ["10.88.0.200",
                                                                        "10.9.0.0/16"]

    for body, field in (({}, "body"), ({"allowed_ips": ["10.88.0"]}, "allowed_ips.0"),
                        ({"allow_ip_spoofing": "yes"}, "allow_ip_spoofing"),
                        ({"ip": "10.88.0.9"}, "ip")):
        response = requests.put(cloud.api.base_url + path, json=body, timeout=30,
                                headers={"Authorization": f"Bearer {cloud.api.token}"})
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["errors"], (body, response.text)
    bad_mac = requests.get(cloud.api.base_url + f"/ops/machines/{machine['uuid']}/nics/xx",
                           headers={"Authorization": f"Bearer {cloud.api.token}"}, timeout=30)
    assert bad_mac.status_code == 422 and "mac" in bad_mac.json()["errors"]
    assert cloud.api.get(path)["allowed_ips"] == ["10.88.0.200", "10.9.0.0/16"]


def test_sdc_vm_nic_commands(cloud: Cloud, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, "alice", "nic6", ["front"])
    uuid = machine["uuid"]
    added = sdc(cloud, "vm", "nic", "add", uuid, "back", "--ip", "10.77.0.9", "--wait")
    assert added.returncode == 0, added.stderr
    assert f"machine {uuid} (nic6) is running" in added.stdout

    table = sdc(cloud, "vm", "nic", "list", uuid)
    assert table.returncode == 0 and "net1" in table.stdout and "10.77.0.9" in table.stdout
    rows = json.loads(sdc(cloud, "--json", "vm", "nic", "list", uuid).stdout)
    assert [(r["interface"], r["ip"], r["state"]) for r in rows] == [
        ("net0", machine["primary_ip"], "running"), ("net1", "10.77.0.9", "running")]
    mac = rows[1]["mac"]

    updated = sdc(cloud, "vm", "nic", "update", uuid, mac, "--allow-dhcp-spoofing",
                  "--allowed-ip", "10.77.0.100", "--wait")
    assert updated.returncode == 0, updated.stderr
    got = json.loads(sdc(cloud, "--json", "vm", "nic", "get", uuid, mac).stdout)
    assert got["allow_dhcp_spoofing"] is True and got["allowed_ips"] == ["10.77.0.100"]
    assert "dhcp,+10.77.0.100" in sdc(cloud, "vm", "nic", "list", uuid).stdout
    nothing = sdc(cloud, "vm", "nic", "update", uuid, mac)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr

    busy_primary = sdc(cloud, "vm", "nic", "remove", uuid, rows[0]["mac"])
    assert busy_primary.returncode == 1 and "PrimaryNic" in busy_primary.stderr
    removed = sdc(cloud, "vm", "nic", "remove", uuid, mac.replace(":", ""), "--wait")
    assert removed.returncode == 0, removed.stderr
    assert [r["mac"] for r in cloud.api.get(f"/ops/machines/{uuid}/nics")] == [
        rows[0]["mac"]]
    assert "10.77.0.9" not in in_use(cloud, "back")
