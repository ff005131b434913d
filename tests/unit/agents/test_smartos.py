"""The SmartOS backend by contract: exact vmadm/imgadm/zfs argument lists, and the recorded
outputs of those tools (data/smartos/, in the formats of smartos-live's man pages) parsed into
the wire shapes. Nothing here runs on SmartOS; the conformance test runs the same backend
against a fake global zone (smartos_host.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError, ImageNotFound
from agents.backends.host import vmadm
from agents.backends.host.cmd import use_runner
from agents.backends.smartos import LIST_FIELDS, SmartOSBackend
from schemas.agent import (
    MachineMetadataUpdateSchema,
    MachineSpecSchema,
    MachineStatusSchema,
    MachineUpdateSchema,
    ServerStatusSchema,
    SysinfoSchema,
)
from schemas.nics import NicFlagsSchema, NicSpecSchema
from tests.support.agent_images import FileServer
from tests.unit.agents.conftest import IMAGE_TOKEN
from tests.unit.agents.recorded import RecordedHost
from tests.unit.agents.smartos_host import FakeSmartOS, recorded

VM1 = "1a2b3c4d-0000-4000-8000-000000000001"
IMAGE = "e75c9d82-3156-11e5-9d5e-1b5d6c1a9e4f"
LIST_ARGV = ("vmadm", "list", "-p", "-o", ",".join(LIST_FIELDS))
CHILDREN_ARGV = ("zfs", "list", "-Hp", "-t", "filesystem", "-o", "name,used", "-r", "-d", "1",
                 "zones")
POOL_ARGV = ("zfs", "list", "-Hp", "-t", "filesystem", "-o", "name,used,available", "zones")
NICS_ARGV = ("vmadm", "lookup", "-j", "-o", "uuid,nics")


def backend(tmp_path: Path) -> SmartOSBackend:
    return SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path)


def test_vmadm_list_p_parses_every_row() -> None:
    rows = vmadm.parse_list(recorded("vmadm-list-p.txt"), LIST_FIELDS)
    assert [r["state"] for r in rows] == ["running", "stopped", "provisioning", "failed",
                                          "stopped"]
    # a migration's hidden copy says so; the others leave the boolean unset
    assert [r["do_not_inventory"] for r in rows] == ["", "", "", "", "true"]
    # the timestamp's own colons stay in the last field
    assert rows[0]["boot_timestamp"] == "2024-11-20T10:11:12.000Z"
    assert rows[1]["boot_timestamp"] == ""


def test_status_from_recorded_outputs(tmp_path: Path) -> None:
    host = RecordedHost({
        ("sysinfo",): recorded("sysinfo.json"),
        LIST_ARGV: recorded("vmadm-list-p.txt"),
        CHILDREN_ARGV: recorded("zfs-list-children.txt"),
        POOL_ARGV: recorded("zfs-list-pool.txt"),
        ("imgadm", "list", "-j"): recorded("imgadm-list-j.json"),
        NICS_ARGV: recorded("vmadm-lookup-nics.json"),
    })
    with use_runner(host):
        status = backend(tmp_path).status()
    assert ServerStatusSchema().validate(status) == {}
    machines = {m["alias"]: m for m in status["machines"]}
    assert all(MachineStatusSchema().validate(m) == {} for m in machines.values())
    assert machines["web0"] == {
        "uuid": VM1, "alias": "web0", "state": "running", "image_uuid": IMAGE,
        "ram_mb": 1024, "disk_mb": 25 * 1024, "disk_used_mb": 1300,
        "boot_time": 1732097472.0,
        "nics": [{"mac": "90:b8:d0:c0:ff:01", "interface": "net0"},
                 {"mac": "90:b8:d0:c0:ff:02", "interface": "net1"}],
    }
    # web9, a migration's hidden copy (do_not_inventory), is no machine of this node's
    assert {a: m["state"] for a, m in machines.items()} == {
        "web0": "running", "db0": "stopped", "build": "provisioning", "old": "failed"}
    assert machines["db0"]["boot_time"] is None and machines["db0"]["disk_used_mb"] == 50
    # a zone without NICs, and one whose lookup object has no nics at all
    assert machines["build"]["nics"] == machines["old"]["nics"] == []
    assert (status["overlay_version"], status["leftovers"]) == ("", [])
    assert status["images"] == [IMAGE]
    assert status["pool_size_mb"] == (85899345920 + 3752005959680) // 2**20
    assert status["pool_used_mb"] == 85899345920 // 2**20
    # memory promised to running and provisioning zones (1024 + 512)
    assert status["ram_free_mb"] == 196514 - 1536


def test_sysinfo_from_the_recorded_sysinfo(tmp_path: Path) -> None:
    with use_runner(RecordedHost({("sysinfo",): recorded("sysinfo.json")})):
        info = backend(tmp_path).sysinfo()
    assert SysinfoSchema().validate(SysinfoSchema().dump(info)) == {}
    assert info == {**info, "backend": "smartos", "hostname": "cn07", "cpus": 32,
                    "ram_mb": 196514, "pool_size_mb": 3575 * 1024, "boot_time": 1732012345.0,
                    "nic_tags": ["admin", "external", "internal", "sdc_overlay", "sdc_underlay"],
                    "kernel": "20240919T005514Z", "system_type": "SunOS"}
    # each tag's link; the address is the link's own ("" in sysinfo: none), the overlay tag's
    # is the underlay VNIC's
    assert info["nic_tag_uplinks"] == {
        "admin": {"link": "ixgbe0", "underlay": "10.99.99.37"},
        "external": {"link": "ixgbe1", "underlay": None},
        "internal": {"link": "ixgbe1", "underlay": None},
        "sdc_underlay": {"link": "ixgbe1", "underlay": None},
        "sdc_overlay": {"link": "sdc_underlay0", "underlay": "172.24.1.37"},
    }


def test_snapshots_from_vmadm_get_and_zfs(tmp_path: Path) -> None:
    host = RecordedHost({
        ("vmadm", "get", VM1): recorded("vmadm-get.json"),
        ("zfs", "list", "-Hp", "-t", "snapshot", "-o", "name,used", "-d", "1", f"zones/{VM1}"):
            recorded("zfs-list-snapshots.txt"),
    })
    with use_runner(host):
        snapshots = backend(tmp_path).snapshot_list(VM1)
    assert snapshots == [
        {"name": "before-upgrade", "created_at": 1732176000.0, "size_mb": 2},
        {"name": "after-upgrade", "created_at": 1732181400.0, "size_mb": 1},
    ]


def test_an_unknown_zone_is_not_found(tmp_path: Path) -> None:
    host = RecordedHost({(*LIST_ARGV, f"uuid={VM1}"): ""})
    with use_runner(host), pytest.raises(BackendError) as exc:
        backend(tmp_path).machine_start(VM1)
    assert exc.value.code == "MachineNotFound"
    assert host.calls == [(*LIST_ARGV, f"uuid={VM1}")]


# -- argument lists, through the fake global zone --------------------------------------------


@pytest.fixture
def node(smartos_host: FakeSmartOS, tmp_path: Path, image_store_url: str) -> SmartOSBackend:
    return SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path,
                          image_store_url=image_store_url)


def spec(**kw: Any) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "alias": "web0", "owner_uuid": str(uuid.uuid4()),
            "image_uuid": IMAGE, "ram_mb": 1024, "disk_mb": 10240, "cpu_cap": 200,
            "vcpus": 2, "max_lwps": 2000, "tags": {"role": "web"}, "metadata": {"a": 1}, **kw}


def test_create_sends_the_payload_on_stdin(node: SmartOSBackend, smartos_host: FakeSmartOS
                                           ) -> None:
    smartos_host.images[IMAGE] = json.loads(recorded("imgadm-get.json"))["manifest"]
    wanted = spec(disk_mb=10000)
    node.machine_create(wanted)
    create = [(argv, data) for argv, data in smartos_host.calls if argv[:2] == ("vmadm", "create")]
    assert [argv for argv, _ in create] == [("vmadm", "create")]
    assert json.loads(create[0][1] or b"") == {
        "uuid": wanted["uuid"], "alias": "web0", "hostname": "web0", "brand": "joyent-minimal",
        "image_uuid": IMAGE, "owner_uuid": wanted["owner_uuid"], "max_physical_memory": 1024,
        "max_locked_memory": 1024, "max_swap": 1024, "quota": 10, "max_lwps": 2000,
        "autoboot": True, "tags": {"role": "web"}, "customer_metadata": {"a": "1"},
        "cpu_cap": 200,
    }
    assert ("imgadm", "get", IMAGE) in smartos_host.argvs("imgadm")


def test_create_without_the_image_does_not_call_vmadm_create(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with pytest.raises(ImageNotFound):
        node.machine_create(spec())
    assert not [a for a in smartos_host.argvs("vmadm") if a[1] == "create"]


def test_update_stop_start_reboot_and_snapshot_commands(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    smartos_host.images[IMAGE] = json.loads(recorded("imgadm-get.json"))["manifest"]
    machine = node.machine_create(spec())
    vm = machine["uuid"]
    smartos_host.calls.clear()
    node.machine_update(MachineUpdateSchema().load({"uuid": vm, "alias": "web1", "ram_mb": 2048,
                                                    "disk_mb": 20480, "cpu_cap": 400}))
    node.machine_stop(vm)
    node.machine_start(vm)
    node.machine_reboot(vm)
    node.snapshot_create(vm, "s1")
    node.snapshot_rollback(vm, "s1")
    node.snapshot_delete(vm, "s1")
    node.machine_destroy(vm)
    changes = [a for a in smartos_host.argvs("vmadm") if a[1] not in ("list", "get")]
    assert changes == [
        ("vmadm", "update", vm), ("vmadm", "stop", vm), ("vmadm", "start", vm),
        ("vmadm", "reboot", vm), ("vmadm", "create-snapshot", vm, "s1"),
        ("vmadm", "rollback-snapshot", vm, "s1"), ("vmadm", "delete-snapshot", vm, "s1"),
        ("vmadm", "delete", vm),
    ]
    update_stdin = next(data for argv, data in smartos_host.calls if argv[1] == "update")
    assert json.loads(update_stdin or b"") == {
        "alias": "web1", "max_physical_memory": 2048, "max_locked_memory": 2048,
        "max_swap": 2048, "quota": 20, "cpu_cap": 400}


def test_metadata_update_is_one_vmadm_update_with_the_change(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    smartos_host.images[IMAGE] = json.loads(recorded("imgadm-get.json"))["manifest"]
    vm = node.machine_create(spec(metadata={"a": "1", "old": "x"}))["uuid"]
    smartos_host.calls.clear()
    after = node.machine_update_metadata(MachineMetadataUpdateSchema().load({
        "uuid": vm, "set_customer_metadata": {"motd": "hello"},
        "remove_customer_metadata": ["old"], "set_tags": {"env": "prod", "tier": 2},
        "remove_tags": ["role"]}))
    assert smartos_host.argvs("vmadm") == [(*LIST_ARGV, f"uuid={vm}"), ("vmadm", "update", vm),
                                           ("vmadm", "get", vm)]
    update_stdin = next(data for argv, data in smartos_host.calls if argv[1] == "update")
    assert json.loads(update_stdin or b"") == {
        "set_customer_metadata": {"motd": "hello"}, "remove_customer_metadata": ["old"],
        "set_tags": {"env": "prod", "tier": 2}, "remove_tags": ["role"]}
    assert after == {"tags": {"env": "prod", "tier": 2},
                     "customer_metadata": {"a": "1", "motd": "hello"}}
    # only what changes is sent; nothing to change sends no update at all
    smartos_host.calls.clear()
    node.machine_update_metadata(MachineMetadataUpdateSchema().load(
        {"uuid": vm, "remove_tags": ["env"]}))
    update_stdin = next(data for argv, data in smartos_host.calls if argv[1] == "update")
    assert json.loads(update_stdin or b"") == {"remove_tags": ["env"]}
    smartos_host.calls.clear()
    node.machine_update_metadata(MachineMetadataUpdateSchema().load({"uuid": vm}))
    assert smartos_host.argvs("vmadm") == [(*LIST_ARGV, f"uuid={vm}"), ("vmadm", "get", vm)]


def test_image_install_checks_the_file_before_imgadm(
    node: SmartOSBackend, smartos_host: FakeSmartOS, zfs_stream_image: dict[str, Any]
) -> None:
    image = zfs_stream_image
    bad = {**image, "files": [{**image["files"][0], "sha256": "0" * 64}]}
    with pytest.raises(BackendError) as exc:
        node.image_ensure_present(bad)
    assert exc.value.code == "ImageChecksumMismatch"
    assert not [a for a in smartos_host.argvs("imgadm") if a[1] == "install"]
    assert not [p for p in node.work_dir.iterdir() if not p.name.startswith(".")]

    record = node.image_ensure_present(image)
    installs = [a for a in smartos_host.argvs("imgadm") if a[1] == "install"]
    assert installs == [("imgadm", "install", "-m", str(node.work_dir / f"{record['uuid']}.json"),
                         "-f", str(node.work_dir / f"{record['uuid']}.file"))]
    manifest = smartos_host.images[record["uuid"]]
    assert manifest["files"][0]["size"] == image["files"][0]["size"]
    assert record["name"] == "busybox"


def test_image_from_a_zone_is_a_zfs_send_stream(
    node: SmartOSBackend, smartos_host: FakeSmartOS, image_server: FileServer
) -> None:
    smartos_host.images[IMAGE] = json.loads(recorded("imgadm-get.json"))["manifest"]
    vm = node.machine_create(spec())["uuid"]
    new = str(uuid.uuid4())
    node.image_create_from_machine(vm, {"uuid": new, "name": "x"},
                                   {"url": image_server.url(f"up-{new}"),
                                    "headers": dict(IMAGE_TOKEN)})
    assert f"up-{new}" in image_server.uploads
    snapshot = f"zones/{vm}@image-{new}"
    assert smartos_host.argvs("zfs")[-3:] == [("zfs", "snapshot", snapshot),
                                             ("zfs", "send", snapshot),
                                             ("zfs", "destroy", snapshot)]


# -- NICs --------------------------------------------------------------------------------------


def nic(index: int, **fields: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = NicSpecSchema().load({
        "mac": f"90:b8:d0:00:00:{index:02x}", "interface": f"net{index}", "nic_tag": "external",
        "ips": [f"10.88.0.{10 + index}/24"], **fields})
    return loaded


def stdin_of(host: FakeSmartOS, *argv: str) -> Any:
    return [json.loads(data or b"") for call, data in host.calls if call == argv]


def with_image(host: FakeSmartOS) -> None:
    host.images[IMAGE] = json.loads(recorded("imgadm-get.json"))["manifest"]


def test_create_payload_carries_the_nics_resolvers_and_routes(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with_image(smartos_host)
    wanted = MachineSpecSchema().load({
        **spec(), "resolvers": ["10.88.0.2", "8.8.8.8"], "routes": {"10.99.0.0/16": "10.88.0.1"},
        "nics": [nic(0, primary=True, gateways=["10.88.0.1"], vlan_id=42, mtu=9000,
                     network_uuid="7d0b0a08-2b8e-4c5a-9f1e-2f6f2a1c0b01"),
                 nic(1, nic_tag="internal", allow_ip_spoofing=True, allow_dhcp_spoofing=True,
                     allowed_ips=["10.88.0.200/30"])]})
    created = node.machine_create(wanted)
    payload = stdin_of(smartos_host, "vmadm", "create")[0]
    assert payload["nics"] == [
        {"mac": "90:b8:d0:00:00:00", "interface": "net0", "nic_tag": "external", "vlan_id": 42,
         "ips": ["10.88.0.10/24"], "mtu": 9000, "gateways": ["10.88.0.1"], "primary": True,
         "network_uuid": "7d0b0a08-2b8e-4c5a-9f1e-2f6f2a1c0b01"},
        {"mac": "90:b8:d0:00:00:01", "interface": "net1", "nic_tag": "internal", "vlan_id": 0,
         "ips": ["10.88.0.11/24"], "mtu": 1500, "allow_ip_spoofing": True,
         "allow_dhcp_spoofing": True, "allowed_ips": ["10.88.0.200/30"]},
    ]
    assert (payload["resolvers"], payload["routes"]) == (["10.88.0.2", "8.8.8.8"],
                                                         {"10.99.0.0/16": "10.88.0.1"})
    assert created["nics"] == [{"mac": "90:b8:d0:00:00:00", "interface": "net0"},
                               {"mac": "90:b8:d0:00:00:01", "interface": "net1"}]
    assert NICS_ARGV in smartos_host.argvs("vmadm")


def test_adding_nics_to_a_running_zone_updates_then_reboots_it(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with_image(smartos_host)
    vm = node.machine_create(MachineSpecSchema().load({**spec(), "nics": [nic(0)]}))["uuid"]
    smartos_host.calls.clear()
    added = node.machine_add_nics(vm, [nic(0), nic(1), nic(1)])
    changes = [a for a in smartos_host.argvs("vmadm") if a[1] not in ("list", "get", "lookup")]
    assert changes == [("vmadm", "update", vm), ("vmadm", "reboot", vm)]
    assert stdin_of(smartos_host, "vmadm", "update", vm) == [{"add_nics": [
        {"mac": "90:b8:d0:00:00:01", "interface": "net1", "nic_tag": "external", "vlan_id": 0,
         "ips": ["10.88.0.11/24"], "mtu": 1500}]}]
    assert [n["interface"] for n in added["nics"]] == ["net0", "net1"]
    # a redelivered add changes nothing and reboots nothing
    smartos_host.calls.clear()
    assert node.machine_add_nics(vm, [nic(1)])["nics"] == added["nics"]
    assert [a[1] for a in smartos_host.argvs("vmadm")] == ["get", "list"]


def test_routes_that_come_with_a_new_nic_are_set_in_the_same_update(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with_image(smartos_host)
    vm = node.machine_create(MachineSpecSchema().load({**spec(), "nics": [nic(0)]}))["uuid"]
    smartos_host.calls.clear()
    node.machine_add_nics(vm, [nic(1)], {"10.99.0.0/16": "10.88.0.1"})
    [payload] = stdin_of(smartos_host, "vmadm", "update", vm)
    assert payload["set_routes"] == {"10.99.0.0/16": "10.88.0.1"}
    assert smartos_host.vms[vm]["routes"] == {"10.99.0.0/16": "10.88.0.1"}


def test_removing_nics_sends_only_the_macs_the_zone_has(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with_image(smartos_host)
    vm = node.machine_create(MachineSpecSchema().load({**spec(), "nics": [nic(0), nic(1)]}))
    node.machine_stop(vm["uuid"])
    smartos_host.calls.clear()
    left = node.machine_remove_nics(vm["uuid"], [nic(1)["mac"], "90:b8:d0:ff:ff:ff"])
    # stopped: the zone gets its NICs at its next boot, no reboot
    changes = [a for a in smartos_host.argvs("vmadm") if a[1] not in ("list", "get", "lookup")]
    assert changes == [("vmadm", "update", vm["uuid"])]
    assert stdin_of(smartos_host, "vmadm", "update", vm["uuid"]) == [
        {"remove_nics": ["90:b8:d0:00:00:01"]}]
    assert left["nics"] == [{"mac": "90:b8:d0:00:00:00", "interface": "net0"}]
    assert left["state"] == "stopped"


def test_update_nics_sends_the_changed_fields_live(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with_image(smartos_host)
    vm = node.machine_create(MachineSpecSchema().load({**spec(), "nics": [nic(0), nic(1)]}))
    smartos_host.calls.clear()
    change = NicFlagsSchema().load({"mac": nic(1)["mac"], "allow_ip_spoofing": True,
                                    "allowed_ips": []})
    untouched = NicFlagsSchema().load({"mac": nic(0)["mac"]})
    node.machine_update_nics(vm["uuid"], [change, untouched])
    changes = [a for a in smartos_host.argvs("vmadm") if a[1] not in ("list", "get", "lookup")]
    assert changes == [("vmadm", "update", vm["uuid"])]
    assert stdin_of(smartos_host, "vmadm", "update", vm["uuid"]) == [{"update_nics": [
        {"mac": "90:b8:d0:00:00:01", "allow_ip_spoofing": True, "allowed_ips": []}]}]
    assert smartos_host.vms[vm["uuid"]]["nics"][1]["allow_ip_spoofing"] is True


def test_update_of_a_mac_the_zone_lacks_sends_nothing(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    with_image(smartos_host)
    vm = node.machine_create(MachineSpecSchema().load({**spec(), "nics": [nic(0)]}))["uuid"]
    smartos_host.calls.clear()
    with pytest.raises(BackendError) as exc:
        node.machine_update_nics(vm, [NicFlagsSchema().load(
            {"mac": "90:b8:d0:ff:ff:ff", "allow_mac_spoofing": True})])
    assert exc.value.code == "NicNotFound"
    assert smartos_host.argvs("vmadm") == [("vmadm", "get", vm)]


def test_overlay_peers_are_recorded_without_a_host_command(
    smartos_host: FakeSmartOS, tmp_path: Path
) -> None:
    peers = {"sdc_overlay": ["172.24.1.14", "172.24.1.15"]}
    assert backend(tmp_path).set_overlay_peers(peers, "0123456789abcdef") == {
        "version": "0123456789abcdef"}
    assert smartos_host.calls == []
    # an agent restart still knows which directory it has
    assert backend(tmp_path).status()["overlay_version"] == "0123456789abcdef"
    assert json.loads((tmp_path / "overlay.json").read_text())["peers"] == peers
