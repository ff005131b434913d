"""What only the sim backend does: capacity bookkeeping, fault injection, latency, persistence."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError, InjectedFault, InsufficientResources
from agents.backends.sim import DEFAULT_IMAGE_SIZE_MB, SimBackend, from_settings
from agents.backends.simnet import SIM_UNDERLAY_NET, sim_underlay
from agents.config import AgentSettings
from schemas.agent import ServerStatusSchema, SysinfoSchema
from schemas.nics import NicSpecSchema
from schemas.settings import load

SpecFactory = Callable[..., dict[str, Any]]


def small_node(tmp_path: Path | None = None, **kw: Any) -> SimBackend:
    options: dict[str, Any] = {"ram_mb": 1024, "cpus": 2, "pool_size_mb": 5000}
    options.update(kw)
    state_path = tmp_path / "state.json" if tmp_path is not None else None
    return SimBackend("11111111-2222-3333-4444-555555555555", "sim0", state_path=state_path,
                      **options)


@pytest.fixture
def node(tmp_path: Path, image_spec: dict[str, Any]) -> SimBackend:
    backend = small_node(tmp_path)
    backend.image_ensure_present(image_spec)
    return backend


def test_sysinfo_says_virtual_sim(node: SimBackend) -> None:
    info = node.sysinfo()
    assert (info["backend"], info["system_type"]) == ("sim", "Virtual")
    assert (info["cpus"], info["ram_mb"], info["pool_size_mb"]) == (2, 1024, 5000)


def test_images_take_pool_space(tmp_path: Path, image_spec: dict[str, Any]) -> None:
    backend = small_node(tmp_path)
    backend.image_ensure_present(image_spec)
    backend.image_ensure_present({**image_spec, "uuid": str(uuid.uuid4()), "size_mb": 0})
    assert backend.status()["pool_used_mb"] == image_spec["size_mb"] + DEFAULT_IMAGE_SIZE_MB


def test_image_larger_than_the_pool_is_refused(node: SimBackend, image_spec: dict) -> None:
    with pytest.raises(InsufficientResources):
        node.image_ensure_present({**image_spec, "uuid": str(uuid.uuid4()), "size_mb": 10_000})


def test_machine_larger_than_memory_is_refused(node: SimBackend, machine_spec: SpecFactory) -> None:
    node.machine_create(machine_spec(ram_mb=768))
    with pytest.raises(InsufficientResources, match="memory") as exc:
        node.machine_create(machine_spec(ram_mb=512))
    assert exc.value.code == "InsufficientResources"
    assert len(node.list_machines()) == 1


def test_machine_larger_than_the_pool_is_refused(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    with pytest.raises(InsufficientResources, match="disk"):
        node.machine_create(machine_spec(disk_mb=4900))


def test_stopped_machines_keep_their_memory_reserved(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    first = node.machine_create(machine_spec(ram_mb=768))
    node.machine_stop(first["uuid"])
    assert node.status()["ram_free_mb"] == 1024
    with pytest.raises(InsufficientResources):
        node.machine_create(machine_spec(ram_mb=512))


def test_destroy_returns_the_capacity(node: SimBackend, machine_spec: SpecFactory) -> None:
    first = node.machine_create(machine_spec(ram_mb=768))
    node.machine_destroy(first["uuid"])
    assert node.machine_create(machine_spec(ram_mb=768))["state"] == "running"


def test_concurrent_creates_never_overcommit(node: SimBackend, machine_spec: SpecFactory) -> None:
    node.configure_faults(latency_ms={"machine_create": 20})
    outcomes: list[str] = []

    def create() -> None:
        try:
            node.machine_create(machine_spec(ram_mb=100, disk_mb=10))
            outcomes.append("ok")
        except InsufficientResources:
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 10
    assert node.status()["ram_free_mb"] == 24


def test_injected_fault_fails_only_its_op(node: SimBackend, machine_spec: SpecFactory) -> None:
    assert node.configure_faults(fail={"machine_create": "disk on fire"}) == {
        "fail": {"machine_create": "disk on fire"}, "latency_ms": {}
    }
    with pytest.raises(InjectedFault, match="disk on fire") as exc:
        node.machine_create(machine_spec())
    assert exc.value.code == "InjectedFault"
    assert node.list_machines() == []
    node.configure_faults()
    assert node.machine_create(machine_spec())["state"] == "running"


def test_latency_per_op_and_for_the_node(tmp_path: Path, image_spec: dict) -> None:
    backend = small_node(tmp_path, latency_ms=100)
    started = time.monotonic()
    backend.image_ensure_present(image_spec)
    assert time.monotonic() - started >= 0.1
    backend.configure_faults(latency_ms={"machine_load": 0, "image_ensure_present": 250})
    started = time.monotonic()
    backend.image_ensure_present(image_spec)
    assert time.monotonic() - started >= 0.25
    with pytest.raises(BackendError):
        started = time.monotonic()
        backend.machine_load(str(uuid.uuid4()))
    assert time.monotonic() - started < 0.1


def test_machine_is_provisioning_while_create_takes_time(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    node.configure_faults(latency_ms={"machine_create": 300})
    spec = machine_spec()
    creator = threading.Thread(target=node.machine_create, args=(spec,))
    creator.start()
    try:
        time.sleep(0.1)
        assert node.machine_load(spec["uuid"])["state"] == "provisioning"
        assert node.machine_create(spec)["state"] == "provisioning"
    finally:
        creator.join()
    assert node.machine_load(spec["uuid"])["state"] == "running"


def test_state_survives_a_new_instance(tmp_path: Path, node: SimBackend,
                                       image_spec: dict, machine_spec: SpecFactory) -> None:
    running = node.machine_create(machine_spec(alias="a", tags={"role": "web"}))
    stopped = node.machine_create(machine_spec(alias="b"))
    node.machine_stop(stopped["uuid"])
    node.machine_update_metadata({"uuid": running["uuid"], "set_customer_metadata": {"a": "1"}})
    before = node.status()

    again = small_node(tmp_path)
    after = again.status()
    assert after["images"] == [image_spec["uuid"]]
    assert after["pool_used_mb"] == before["pool_used_mb"]
    assert {m["uuid"]: m["state"] for m in after["machines"]} == {
        running["uuid"]: "running", stopped["uuid"]: "stopped"
    }
    assert again.machine_update_metadata({"uuid": running["uuid"]}) == {
        "tags": {"role": "web"}, "customer_metadata": {"a": "1"}}
    assert list(tmp_path.glob("*.tmp")) == []


def test_no_state_file_without_a_path(image_spec: dict, tmp_path: Path) -> None:
    small_node(None).image_ensure_present(image_spec)
    assert list(tmp_path.iterdir()) == []


def test_from_settings_sizes_the_node_and_places_its_state(tmp_path: Path) -> None:
    settings = load(AgentSettings, environ={}, data_dir=tmp_path, sim_ram_mb=2048,
                    sim_cpus=8, sim_disk_gb=2, sim_traits='{"ssd": true}', hostname="n1")
    backend = from_settings(settings, "6b0e4f4a-1111-4222-8333-944444444444")
    info = backend.sysinfo()
    assert (info["ram_mb"], info["cpus"], info["pool_size_mb"]) == (2048, 8, 2048)
    assert info["traits"] == {"ssd": True} and info["hostname"] == "n1"
    backend.image_ensure_present({"uuid": "img", "name": "img"})
    assert (tmp_path / "sim" / "6b0e4f4a-1111-4222-8333-944444444444.json").exists()


# -- networking -------------------------------------------------------------------------------


def nic(index: int, **fields: Any) -> dict[str, Any]:
    """A loaded NicSpecSchema dict: netINDEX on external, MAC ending in INDEX."""
    raw = {"mac": f"90:b8:d0:00:00:{index:02x}", "interface": f"net{index}",
           "nic_tag": "external", "ips": [f"10.88.0.{10 + index}/24"], **fields}
    loaded: dict[str, Any] = NicSpecSchema().load(raw)
    return loaded


def test_create_keeps_the_nics_in_interface_order(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    first, second = nic(0, primary=True, gateways=["10.88.0.1"]), nic(1, nic_tag="admin")
    created = node.machine_create(machine_spec(nics=[second, first]))
    assert created["nics"] == [{"mac": first["mac"], "interface": "net0"},
                               {"mac": second["mac"], "interface": "net1"}]
    assert node.machine_nics(created["uuid"]) == [first, second]


def test_nics_come_and_go_on_a_running_machine(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    uuid_ = node.machine_create(machine_spec(nics=[nic(0)]))["uuid"]
    added = node.machine_add_nics(uuid_, [nic(2), nic(1)])
    assert [n["interface"] for n in added["nics"]] == ["net0", "net1", "net2"]
    assert added["state"] == "running"
    removed = node.machine_remove_nics(uuid_, [nic(1)["mac"], "90:b8:d0:ff:ff:ff"])
    assert removed["nics"] == [{"mac": nic(0)["mac"], "interface": "net0"},
                               {"mac": nic(2)["mac"], "interface": "net2"}]
    assert node.machine_load(uuid_)["nics"] == removed["nics"]


def test_adding_a_nic_twice_keeps_the_first(node: SimBackend, machine_spec: SpecFactory) -> None:
    uuid_ = node.machine_create(machine_spec(nics=[nic(0)]))["uuid"]
    node.machine_add_nics(uuid_, [nic(0, mtu=9000)])
    assert [n["mtu"] for n in node.machine_nics(uuid_)] == [1500]


def test_a_nic_the_node_cannot_carry_is_refused(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    with pytest.raises(BackendError, match="nic tag internal") as exc:
        node.machine_create(machine_spec(nics=[nic(0, nic_tag="internal")]))
    assert exc.value.code == "NicTagNotFound"
    assert node.list_machines() == []
    uuid_ = node.machine_create(machine_spec(nics=[nic(0)]))["uuid"]
    with pytest.raises(BackendError, match="net0") as exc:
        node.machine_add_nics(uuid_, [{**nic(1), "interface": "net0"}])
    assert exc.value.code == "InvalidNic"
    assert len(node.machine_nics(uuid_)) == 1


def test_update_nics_changes_only_the_fields_given(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    uuid_ = node.machine_create(machine_spec(nics=[nic(0), nic(1)]))["uuid"]
    node.machine_update_nics(uuid_, [{"mac": nic(1)["mac"], "allow_ip_spoofing": True,
                                      "allow_mac_spoofing": None,
                                      "allowed_ips": ["10.88.0.200/30"]}])
    first, second = node.machine_nics(uuid_)
    assert first == nic(0)
    assert second == {**nic(1), "allow_ip_spoofing": True, "allowed_ips": ["10.88.0.200/30"]}


def test_update_of_a_nic_the_machine_lacks_changes_nothing(
    node: SimBackend, machine_spec: SpecFactory
) -> None:
    uuid_ = node.machine_create(machine_spec(nics=[nic(0)]))["uuid"]
    with pytest.raises(BackendError, match="90:b8:d0:00:00:07") as exc:
        node.machine_update_nics(uuid_, [{"mac": nic(0)["mac"], "allow_ip_spoofing": True},
                                         {"mac": "90:b8:d0:00:00:07", "allow_ip_spoofing": True}])
    assert exc.value.code == "NicNotFound"
    assert node.machine_nics(uuid_) == [nic(0)]


def test_overlay_peers_are_kept_and_their_version_reported(
    node: SimBackend, tmp_path: Path
) -> None:
    assert node.status()["overlay_version"] == ""
    peers = {"external": ["198.18.0.7", "198.18.3.9"]}
    assert node.set_overlay_peers(peers, "0123456789abcdef") == {"version": "0123456789abcdef"}
    status = ServerStatusSchema().load(node.status())
    assert (status["overlay_version"], status["leftovers"]) == ("0123456789abcdef", [])
    again = small_node(tmp_path)
    assert again.status()["overlay_version"] == "0123456789abcdef"
    assert again.overlay_peers() == peers


def test_nics_survive_a_new_instance(tmp_path: Path, node: SimBackend,
                                     machine_spec: SpecFactory) -> None:
    uuid_ = node.machine_create(machine_spec(nics=[nic(0)]))["uuid"]
    node.machine_add_nics(uuid_, [nic(1, allow_dhcp_spoofing=True)])
    again = small_node(tmp_path)
    assert again.machine_nics(uuid_) == [nic(0), nic(1, allow_dhcp_spoofing=True)]
    assert again.machine_load(uuid_)["nics"] == node.machine_load(uuid_)["nics"]
    node.machine_destroy(uuid_)
    assert json.loads((tmp_path / "state.json").read_text())["nics"] == {}


def test_sysinfo_nic_tags_default_to_two_host_local_tags(node: SimBackend) -> None:
    wire = SysinfoSchema().dump(node.sysinfo())
    assert wire["NIC Names"] == ["admin", "external"]
    assert wire["SDC NIC Tags"] == {"admin": {"link": None, "underlay": None},
                                    "external": {"link": None, "underlay": None}}


def test_sysinfo_nic_tags_from_settings_with_made_up_underlays(tmp_path: Path) -> None:
    settings = load(AgentSettings, environ={}, data_dir=tmp_path,
                    nic_tags="admin,external:eth1,internal:eth2")
    server = "6b0e4f4a-1111-4222-8333-944444444444"
    info = from_settings(settings, server).sysinfo()
    assert info["nic_tags"] == ["admin", "external", "internal"]
    uplinks = info["nic_tag_uplinks"]
    assert uplinks["admin"] == {"link": None, "underlay": None}
    assert uplinks["external"] == {"link": "eth1", "underlay": sim_underlay(server, "eth1")}
    underlays = {uplinks[tag]["underlay"] for tag in ("external", "internal")}
    assert len(underlays) == 2
    assert all(ipaddress.IPv4Address(a) in SIM_UNDERLAY_NET for a in underlays)
    # the same node and link draw the same address after a restart
    assert from_settings(settings, server).sysinfo()["nic_tag_uplinks"] == uplinks
