"""What every NodeBackend does, whatever drives the machines (sim, linux, smartos).

Shapes are checked with the wire schemas, so a backend that passes here can be served by the
agent tasks unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agents.backends.base import BackendError, ImageNotFound, MachineNotFound, NodeBackend
from schemas.agent import (
    NODE_MACHINE_STATES,
    MachineMetadataUpdateSchema,
    MachineStatusSchema,
    MachineUpdateSchema,
    ServerStatusSchema,
    SnapshotSchema,
    SysinfoSchema,
)
from schemas.nics import NicFlagsSchema, NicSpecSchema
from tests.support.agent_images import FileServer
from tests.unit.agents.conftest import IMAGE_TOKEN

SpecFactory = Callable[..., dict[str, Any]]


def valid_machine(machine: dict[str, Any]) -> dict[str, Any]:
    assert MachineStatusSchema().validate(machine) == {}, machine
    return machine


def wait_running(backend: NodeBackend, machine_uuid: str, timeout: float = 60) -> dict[str, Any]:
    """A backend may answer machine_create while still provisioning; it must get there."""
    deadline = time.monotonic() + timeout
    while True:
        machine = backend.machine_load(machine_uuid)
        if machine["state"] != "provisioning" or time.monotonic() > deadline:
            return machine
        time.sleep(0.1)


def create_running(
    backend: NodeBackend, image_spec: dict[str, Any], machine_spec: SpecFactory, **kw: Any
) -> dict[str, Any]:
    backend.image_ensure_present(image_spec)
    spec = machine_spec(**kw)
    created = valid_machine(backend.machine_create(spec))
    assert created["uuid"] == spec["uuid"]
    assert created["state"] in ("provisioning", "running")
    machine = wait_running(backend, spec["uuid"])
    assert machine["state"] == "running"
    return machine


def test_sysinfo_has_the_wire_shape(backend: NodeBackend) -> None:
    sysinfo = backend.sysinfo()
    wire = SysinfoSchema().dump(sysinfo)
    assert SysinfoSchema().validate(wire) == {}
    assert wire["UUID"] == backend.server_uuid
    assert wire["CPU Total Cores"] >= 1 and wire["MiB of Memory"] >= 1
    # every nic tag the node provides says which link carries it (None: host-local)
    assert wire["NIC Names"] and set(wire["SDC NIC Tags"]) == set(wire["NIC Names"])


def test_status_of_an_empty_node(backend: NodeBackend) -> None:
    status = backend.status()
    assert ServerStatusSchema().validate(status) == {}
    assert status["server_uuid"] == backend.server_uuid
    assert status["machines"] == []
    assert 0 <= status["ram_free_mb"] <= status["ram_mb"]
    assert 0 <= status["pool_used_mb"] <= status["pool_size_mb"]


def test_image_ensure_present_is_idempotent(backend: NodeBackend, image_spec: dict) -> None:
    first = backend.image_ensure_present(image_spec)
    used = backend.status()["pool_used_mb"]
    second = backend.image_ensure_present(image_spec)
    assert first["uuid"] == second["uuid"] == image_spec["uuid"]
    assert backend.status()["pool_used_mb"] == used
    assert image_spec["uuid"] in backend.status()["images"]


def test_create_runs_the_machine(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, ram_mb=512, disk_mb=2048)
    assert machine["ram_mb"] == 512 and machine["disk_mb"] == 2048
    assert machine["image_uuid"] == image_spec["uuid"]
    assert machine["boot_time"] is not None
    assert [m["uuid"] for m in backend.list_machines()] == [machine["uuid"]]
    status = backend.status()
    assert ServerStatusSchema().validate(status) == {}
    assert [m["uuid"] for m in status["machines"]] == [machine["uuid"]]
    assert status["ram_free_mb"] <= status["ram_mb"] - 512


def test_create_again_returns_the_existing_machine(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    backend.image_ensure_present(image_spec)
    spec = machine_spec()
    backend.machine_create(spec)
    wait_running(backend, spec["uuid"])
    before = backend.status()
    again = valid_machine(backend.machine_create(spec))
    assert again["state"] == "running"
    after = backend.status()
    assert len(after["machines"]) == 1
    assert after["pool_used_mb"] == before["pool_used_mb"]
    assert after["ram_free_mb"] == before["ram_free_mb"]


def test_create_without_the_image_is_refused(
    backend: NodeBackend, machine_spec: SpecFactory
) -> None:
    with pytest.raises(ImageNotFound) as exc:
        backend.machine_create(machine_spec(image_uuid=str(uuid.uuid4())))
    assert exc.value.code == "ImageNotFound"
    assert backend.list_machines() == []


def test_stop_start_and_their_repeats(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    assert valid_machine(backend.machine_stop(machine["uuid"]))["state"] == "stopped"
    assert backend.machine_stop(machine["uuid"])["state"] == "stopped"
    assert backend.machine_load(machine["uuid"])["state"] == "stopped"
    assert valid_machine(backend.machine_start(machine["uuid"]))["state"] == "running"
    assert backend.machine_start(machine["uuid"])["state"] == "running"
    assert backend.machine_load(machine["uuid"])["state"] == "running"


def test_reboot_changes_boot_time(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    rebooted = valid_machine(backend.machine_reboot(machine["uuid"]))
    assert rebooted["state"] == "running"
    assert rebooted["boot_time"] > machine["boot_time"]


def test_reboot_of_a_stopped_machine_boots_it(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    backend.machine_stop(machine["uuid"])
    assert backend.machine_reboot(machine["uuid"])["state"] == "running"


def test_destroy_frees_the_node_and_repeats_harmlessly(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    backend.image_ensure_present(image_spec)
    empty = backend.status()
    machine = create_running(backend, image_spec, machine_spec)
    gone = valid_machine(backend.machine_destroy(machine["uuid"]))
    assert gone == {**gone, "uuid": machine["uuid"], "state": "destroyed"}
    assert valid_machine(backend.machine_destroy(machine["uuid"]))["state"] == "destroyed"
    assert backend.list_machines() == []
    after = backend.status()
    assert after["pool_used_mb"] == empty["pool_used_mb"]
    assert after["ram_free_mb"] == empty["ram_free_mb"]
    with pytest.raises(MachineNotFound):
        backend.machine_load(machine["uuid"])


def test_destroy_of_an_unknown_machine_is_destroyed(backend: NodeBackend) -> None:
    machine_uuid = str(uuid.uuid4())
    assert valid_machine(backend.machine_destroy(machine_uuid)) == {
        **backend.machine_destroy(machine_uuid), "uuid": machine_uuid, "state": "destroyed"
    }


@pytest.mark.parametrize(
    "op", ["machine_load", "machine_start", "machine_stop", "machine_reboot"]
)
def test_unknown_machine_is_not_found(backend: NodeBackend, op: str) -> None:
    with pytest.raises(MachineNotFound) as exc:
        getattr(backend, op)(str(uuid.uuid4()))
    assert exc.value.code == "MachineNotFound"


def test_machines_report_node_states_only(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    create_running(backend, image_spec, machine_spec)
    stopped = create_running(backend, image_spec, machine_spec, alias="db0")
    backend.machine_stop(stopped["uuid"])
    states = {m["alias"]: m["state"] for m in backend.list_machines()}
    assert states == {"web0": "running", "db0": "stopped"}
    assert all(m["state"] in NODE_MACHINE_STATES for m in backend.status()["machines"])


# -- resize, rename, snapshots, images from machines --------------------------------------------


def test_update_resizes_and_renames(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    # whole GiB: SmartOS quotas are in GiB
    machine = create_running(backend, image_spec, machine_spec, ram_mb=256, disk_mb=1024)
    params = MachineUpdateSchema().load(
        {"uuid": machine["uuid"], "alias": "web1", "ram_mb": 512, "disk_mb": 2048}
    )
    updated = valid_machine(backend.machine_update(params))
    assert (updated["alias"], updated["ram_mb"], updated["disk_mb"]) == ("web1", 512, 2048)
    assert updated["state"] == "running"
    assert backend.machine_load(machine["uuid"]) == {**backend.machine_load(machine["uuid"]),
                                                      "alias": "web1", "ram_mb": 512,
                                                      "disk_mb": 2048}


def update_metadata(backend: NodeBackend, **change: Any) -> dict[str, Any]:
    """The maps of the answer; the ``serial`` only some nodes keep is tested with them
    (test_linux_mdata_events.py)."""
    answer = backend.machine_update_metadata(MachineMetadataUpdateSchema().load(change))
    return {kind: maps for kind, maps in answer.items() if kind != "serial"}


def test_metadata_update_sets_removes_and_repeats(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, tags={"role": "web"},
                             metadata={"motd": "hi"})
    uuid_ = machine["uuid"]
    assert update_metadata(backend, uuid=uuid_) == {"tags": {"role": "web"},
                                                    "customer_metadata": {"motd": "hi"}}
    change = {"uuid": uuid_, "set_tags": {"env": "prod", "tier": 2, "on": True},
              "remove_tags": ["role"], "set_customer_metadata": {"user-script": "#!/bin/sh"},
              "remove_customer_metadata": ["motd"]}
    wanted = {"tags": {"env": "prod", "tier": 2, "on": True},
              "customer_metadata": {"user-script": "#!/bin/sh"}}
    assert update_metadata(backend, **change) == wanted
    assert update_metadata(backend, **change) == wanted  # a redelivered task is harmless
    assert update_metadata(backend, uuid=uuid_) == wanted
    # removing what is not there is no error; the machine itself is untouched
    assert update_metadata(backend, uuid=uuid_, remove_tags=["nope", "env"])["tags"] == \
        {"tier": 2, "on": True}
    assert backend.machine_load(uuid_)["state"] == "running"


def test_metadata_update_of_an_unknown_machine_is_not_found(backend: NodeBackend) -> None:
    with pytest.raises(MachineNotFound):
        update_metadata(backend, uuid=str(uuid.uuid4()), set_tags={"a": "b"})


def test_update_of_an_unknown_machine_is_not_found(backend: NodeBackend) -> None:
    with pytest.raises(MachineNotFound):
        backend.machine_update(MachineUpdateSchema().load({"uuid": str(uuid.uuid4()),
                                                           "alias": "x"}))


def test_snapshots_create_list_delete_and_repeats(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    first = backend.snapshot_create(machine["uuid"], "s1")
    assert SnapshotSchema().validate(first) == {} and first["name"] == "s1"
    assert backend.snapshot_create(machine["uuid"], "s1")["name"] == "s1"
    backend.snapshot_create(machine["uuid"], "s2")
    listed = backend.snapshot_list(machine["uuid"])
    assert [s["name"] for s in listed] == ["s1", "s2"]
    assert all(SnapshotSchema().validate(s) == {} for s in listed)
    assert listed[0]["created_at"] <= listed[1]["created_at"]
    assert backend.snapshot_delete(machine["uuid"], "s1") == "s1"
    assert backend.snapshot_delete(machine["uuid"], "s1") == "s1"
    assert [s["name"] for s in backend.snapshot_list(machine["uuid"])] == ["s2"]


def test_rollback_keeps_the_machine_running_and_drops_newer_snapshots(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    for name in ("s1", "s2", "s3"):
        backend.snapshot_create(machine["uuid"], name)
    rolled = valid_machine(backend.snapshot_rollback(machine["uuid"], "s2"))
    assert rolled["state"] == "running"
    assert [s["name"] for s in backend.snapshot_list(machine["uuid"])] == ["s1", "s2"]
    with pytest.raises(BackendError) as exc:
        backend.snapshot_rollback(machine["uuid"], "s3")
    assert exc.value.code == "SnapshotNotFound"


def test_rollback_of_a_stopped_machine_leaves_it_stopped(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    backend.snapshot_create(machine["uuid"], "s1")
    backend.machine_stop(machine["uuid"])
    assert backend.snapshot_rollback(machine["uuid"], "s1")["state"] == "stopped"


def test_destroy_takes_the_snapshots_with_it(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    backend.snapshot_create(machine["uuid"], "s1")
    backend.machine_destroy(machine["uuid"])
    with pytest.raises(MachineNotFound):
        backend.snapshot_list(machine["uuid"])


def test_image_from_a_machine_is_uploaded(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory, image_server: FileServer
) -> None:
    machine = create_running(backend, image_spec, machine_spec)
    new_image = {"uuid": str(uuid.uuid4()), "name": "from-web0", "version": "1"}
    upload = {"url": image_server.url(f"images/{new_image['uuid']}/file"),
              "headers": dict(IMAGE_TOKEN)}
    result = backend.image_create_from_machine(machine["uuid"], new_image, upload)
    sent = image_server.uploads[f"images/{new_image['uuid']}/file"]
    # the format the node's own images have: a ZFS send stream on SmartOS, else a tarball
    made_format = "zfs" if backend.sysinfo()["backend"] == "smartos" else "tar"
    assert result == {"uuid": new_image["uuid"], "size": len(sent),
                      "sha256": hashlib.sha256(sent).hexdigest(), "compression": "gzip",
                      "format": made_format}
    assert gzip.decompress(sent)  # a real gzip stream
    assert [s["name"] for s in backend.snapshot_list(machine["uuid"])] == []


# -- NICs and the overlay directory ----------------------------------------------------------

#: a nic tag every backend's test node provides
NIC_TAG = "admin"


def nic(index: int, **fields: Any) -> dict[str, Any]:
    """netINDEX on NIC_TAG with 10.88.0.(10 + INDEX)/24; the first one is the primary."""
    loaded: dict[str, Any] = NicSpecSchema().load({
        "mac": f"90:b8:d0:00:00:{index:02x}", "interface": f"net{index}", "nic_tag": NIC_TAG,
        "ips": [f"10.88.0.{10 + index}/24"], "primary": index == 0,
        "gateways": ["10.88.0.1"] if index == 0 else [], **fields})
    return loaded


def nics_of(machine: dict[str, Any]) -> list[tuple[str, str]]:
    return [(n["mac"], n["interface"]) for n in valid_machine(machine)["nics"]]


def test_a_machine_has_the_nics_it_was_created_with(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, nics=[nic(0), nic(1)])
    wanted = [(nic(0)["mac"], "net0"), (nic(1)["mac"], "net1")]
    assert nics_of(backend.machine_load(machine["uuid"])) == wanted
    assert [nics_of(m) for m in backend.status()["machines"]] == [wanted]


def test_nics_are_added_and_removed_and_repeats_are_harmless(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, nics=[nic(0)])
    uuid_ = machine["uuid"]
    both = [(nic(0)["mac"], "net0"), (nic(1)["mac"], "net1")]
    assert nics_of(backend.machine_add_nics(uuid_, [nic(1)])) == both
    assert nics_of(backend.machine_add_nics(uuid_, [nic(0), nic(1)])) == both  # redelivered
    assert backend.machine_load(uuid_)["state"] == "running"
    absent = "90:b8:d0:ff:ff:ff"
    assert nics_of(backend.machine_remove_nics(uuid_, [nic(1)["mac"], absent])) == both[:1]
    assert nics_of(backend.machine_remove_nics(uuid_, [nic(1)["mac"]])) == both[:1]
    assert backend.machine_load(uuid_)["state"] == "running"


def test_nics_of_a_stopped_machine_change_too(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, nics=[nic(0)])
    backend.machine_stop(machine["uuid"])
    added = backend.machine_add_nics(machine["uuid"], [nic(1)])
    assert added["state"] == "stopped" and len(added["nics"]) == 2
    assert nics_of(backend.machine_start(machine["uuid"]))[1] == (nic(1)["mac"], "net1")


def test_nic_flags_change_on_a_running_machine(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, nics=[nic(0)])
    change = NicFlagsSchema().load({"mac": nic(0)["mac"], "allow_ip_spoofing": True,
                                    "allowed_ips": ["10.88.0.200/30"]})
    updated = valid_machine(backend.machine_update_nics(machine["uuid"], [change]))
    assert updated["state"] == "running" and nics_of(updated) == [(nic(0)["mac"], "net0")]
    again = valid_machine(backend.machine_update_nics(machine["uuid"], [change]))
    assert again["nics"] == updated["nics"]


def test_nic_update_of_a_mac_the_machine_lacks_is_nic_not_found(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, nics=[nic(0)])
    with pytest.raises(BackendError) as exc:
        backend.machine_update_nics(machine["uuid"], [NicFlagsSchema().load(
            {"mac": "90:b8:d0:ff:ff:ff", "allow_ip_spoofing": True})])
    assert exc.value.code == "NicNotFound"


@pytest.mark.parametrize("op", ["machine_add_nics", "machine_remove_nics",
                                "machine_update_nics"])
def test_nic_ops_on_an_unknown_machine_are_not_found(backend: NodeBackend, op: str) -> None:
    argument = {"machine_add_nics": [nic(0)], "machine_remove_nics": [nic(0)["mac"]],
                "machine_update_nics": [NicFlagsSchema().load({"mac": nic(0)["mac"]})]}[op]
    with pytest.raises(MachineNotFound):
        getattr(backend, op)(str(uuid.uuid4()), argument)


def test_overlay_peers_version_is_reported_and_repeats_are_harmless(
    backend: NodeBackend,
) -> None:
    assert backend.status()["overlay_version"] == ""
    peers = {NIC_TAG: ["198.18.0.7", "198.18.3.9"]}
    assert backend.set_overlay_peers(peers, "0123456789abcdef") == {"version": "0123456789abcdef"}
    assert backend.set_overlay_peers(peers, "0123456789abcdef") == {"version": "0123456789abcdef"}
    status = backend.status()
    assert ServerStatusSchema().validate(status) == {}
    assert status["overlay_version"] == "0123456789abcdef"
    assert backend.set_overlay_peers({}, "fedcba9876543210") == {"version": "fedcba9876543210"}
    assert backend.status()["overlay_version"] == "fedcba9876543210"


def test_destroy_leaves_nothing_of_its_nics(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    machine = create_running(backend, image_spec, machine_spec, nics=[nic(0), nic(1)])
    backend.machine_destroy(machine["uuid"])
    assert backend.status()["leftovers"] == []


# -- migration: what one node does (two nodes moving a machine: test_sim_migration.py,
# test_smartos_migration.py, test_linux_migration.py) -------------------------------------------


def migrating(backend: NodeBackend) -> NodeBackend:
    if not hasattr(type(backend), "migration_target_prepare"):
        pytest.skip(f"{type(backend).__name__} does not migrate machines yet")
    return backend


def test_a_migration_target_copy_is_hidden_and_stopped(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    node = migrating(backend)
    node.image_ensure_present(image_spec)
    spec = machine_spec(nics=[nic(0)])
    migration_uuid = str(uuid.uuid4())
    copy = valid_machine(node.migration_target_prepare(migration_uuid, spec))
    assert (copy["uuid"], copy["state"]) == (spec["uuid"], "stopped")
    # not reported (the head node still has the machine on its source), but there
    assert node.list_machines() == [] and node.status()["machines"] == []
    assert node.machine_load(spec["uuid"])["state"] == "stopped"
    again = node.migration_target_prepare(migration_uuid, spec)
    assert (again["uuid"], again["state"]) == (spec["uuid"], "stopped")
    # an aborted migration destroys it
    assert node.machine_destroy(spec["uuid"])["state"] == "destroyed"
    with pytest.raises(MachineNotFound):
        node.machine_load(spec["uuid"])
    assert node.migration_cleanup(spec["uuid"], migration_uuid, None) == []


def test_a_hidden_machine_is_not_reported_until_shown(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    node = migrating(backend)
    machine = create_running(node, image_spec, machine_spec)
    # two running copies of one machine (its IPs) must never be: stop, then hide
    with pytest.raises(BackendError) as exc:
        node.migration_hide(machine["uuid"], True)
    assert exc.value.code == "InvalidState"
    node.machine_stop(machine["uuid"])
    hidden = valid_machine(node.migration_hide(machine["uuid"], True))
    assert hidden["uuid"] == machine["uuid"]
    assert node.list_machines() == [] and node.status()["machines"] == []
    assert node.machine_load(machine["uuid"])["state"] == "stopped"
    for op in (node.machine_start, node.machine_reboot):
        with pytest.raises(BackendError) as exc:
            op(machine["uuid"])
        assert exc.value.code == "InvalidState"
    assert node.machine_load(machine["uuid"])["state"] == "stopped"
    valid_machine(node.migration_hide(machine["uuid"], False))
    assert [m["uuid"] for m in node.list_machines()] == [machine["uuid"]]
    assert node.migration_cleanup(machine["uuid"], str(uuid.uuid4()), None) == []


def test_a_stream_never_goes_into_a_machine_in_use(
    backend: NodeBackend, image_spec: dict, machine_spec: SpecFactory
) -> None:
    node = migrating(backend)
    machine = create_running(node, image_spec, machine_spec)
    params = {"uuid": machine["uuid"], "migration_uuid": str(uuid.uuid4()),
              "token": "t" * 32, "snapshot": "migration-1", "parent": None}
    with pytest.raises(BackendError):
        node.migration_receive(params)
    assert node.machine_load(machine["uuid"])["state"] == "running"
    with pytest.raises(MachineNotFound):
        node.migration_hide(str(uuid.uuid4()), True)
