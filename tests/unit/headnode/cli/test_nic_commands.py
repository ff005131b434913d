"""``sdc vm nic ...`` and ``sdc network create --mtu --route`` against a canned operator API:
the paths and bodies they send, and what they refuse before sending anything."""

from __future__ import annotations

from typing import Any

from .conftest import FakeApi
from .test_main import sdc

MACHINE = "99999999-0000-0000-0000-000000000001"
MAC = "90:b8:d0:aa:bb:cc"
NIC: dict[str, Any] = {"mac": MAC, "ip": "10.77.0.9", "interface": "net1", "state": "running",
                       "network_uuid": "n-1", "nic_tag": "external", "vlan_id": 77,
                       "primary": False, "allow_ip_spoofing": True,
                       "allow_dhcp_spoofing": False, "allowed_ips": ["10.9.0.0/16"]}
JOB = {"machine_uuid": MACHINE, "job_uuid": "j-1", "nic": NIC}


def test_list_shows_interface_and_lifted_rules(fake_api: FakeApi) -> None:
    fake_api.route("GET", f"/ops/machines/{MACHINE}/nics", (200, [NIC]))
    result = sdc(fake_api, "vm", "nic", "list", MACHINE)
    assert result.exit_code == 0, result.output
    assert "net1" in result.output and MAC in result.output
    assert "ip,+10.9.0.0/16" in result.output


def test_add_sends_network_and_ip(fake_api: FakeApi) -> None:
    fake_api.route("POST", f"/ops/machines/{MACHINE}/nics", (202, JOB))
    result = sdc(fake_api, "vm", "nic", "add", MACHINE, "back", "--ip", "10.77.0.9")
    assert result.exit_code == 0, result.output
    assert f"NIC {MAC} added on {MACHINE}: job j-1" in result.output
    (sent,) = fake_api.sent("POST", f"/ops/machines/{MACHINE}/nics")
    assert sent.body == {"network": "back", "ip": "10.77.0.9"}


def test_update_sends_only_what_is_given(fake_api: FakeApi) -> None:
    path = f"/ops/machines/{MACHINE}/nics/{MAC}"
    fake_api.route("PUT", path, (202, JOB))
    result = sdc(fake_api, "vm", "nic", "update", MACHINE, MAC, "--no-allow-ip-spoofing",
                 "--allow-restricted-traffic", "--allowed-ip", "10.1.0.0/24",
                 "--allowed-ip", "10.2.0.1")
    assert result.exit_code == 0, result.output
    result = sdc(fake_api, "vm", "nic", "update", MACHINE, MAC, "--clear-allowed-ips")
    assert result.exit_code == 0, result.output
    assert [r.body for r in fake_api.sent("PUT", path)] == [
        {"allow_ip_spoofing": False, "allow_restricted_traffic": True,
         "allowed_ips": ["10.1.0.0/24", "10.2.0.1"]},
        {"allowed_ips": []}]


def test_update_refuses_nothing_or_both_before_sending(fake_api: FakeApi) -> None:
    nothing = sdc(fake_api, "vm", "nic", "update", MACHINE, MAC)
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    both = sdc(fake_api, "vm", "nic", "update", MACHINE, MAC, "--allowed-ip", "10.1.0.1",
               "--clear-allowed-ips")
    assert both.exit_code == 2 and "exclude each other" in both.output
    assert fake_api.requests == []


def test_remove_keeps_the_mac_as_given(fake_api: FakeApi) -> None:
    fake_api.route("DELETE", f"/ops/machines/{MACHINE}/nics/90b8d0aabbcc", (202, JOB))
    result = sdc(fake_api, "vm", "nic", "remove", MACHINE, "90b8d0aabbcc")
    assert result.exit_code == 0, result.output
    assert "NIC 90b8d0aabbcc removed" in result.output


def test_network_create_mtu_and_routes(fake_api: FakeApi) -> None:
    fake_api.route("POST", "/ops/networks", (201, {"name": "front"}))
    result = sdc(fake_api, "network", "create", "front", "--subnet", "10.88.0.0/24",
                 "--mtu", "9000", "--route", "10.20.0.0/16=10.88.0.3",
                 "--route", " 10.30.0.5 = 10.88.0.4 ")
    assert result.exit_code == 0, result.output
    (sent,) = fake_api.sent("POST", "/ops/networks")
    assert sent.body["mtu"] == 9000
    assert sent.body["routes"] == {"10.20.0.0/16": "10.88.0.3", "10.30.0.5": "10.88.0.4"}
    bad = sdc(fake_api, "network", "create", "x", "--subnet", "10.1.0.0/24",
              "--route", "10.20.0.0/16=")
    assert bad.exit_code == 2 and "DEST=GATEWAY" in bad.output
    assert len(fake_api.sent("POST", "/ops/networks")) == 1
