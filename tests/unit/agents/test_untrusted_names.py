"""Issue 14, item 5: a task's uuids and names become paths, datasets and arguments on a node
(``rmtree(<machines_dir>/<uuid>)``, ``zones/<uuid>@*``), so an agent takes only canonical UUIDs
and strict names, on every backend, and refuses anything else before it touches anything.

The task layer refuses through the wire schemas (``InvalidParams`` naming the field); the
linux backend's path builders refuse again (``InvalidArgument``) for a caller that skipped
them. Real nodes: sim, linux on the session's btrfs pool, smartos on the fake global zone.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from agents import tasks
from agents.backends.base import BackendError, NodeBackend
from agents.backends.linux import LinuxBackend
from schemas.agent import AGENT_TASKS
from tests.support.btrfs import missing_host
from tests.unit.agents.conftest import hosting

OWNER = "9a1e3c44-0000-4000-8000-00000000000a"
MAC = "90:b8:d0:00:00:01"
#: machine uuids that would name something outside the node's directories, or not the machine
HOSTILE_UUIDS = ("../canary", "../../etc", "x/..", "*", "9A1E3C44-0000-4000-8000-00000000000B")
#: more that are no canonical UUID
#: (fixed values: parallel test workers must collect the same test ids)
NOT_UUIDS = ("..", ".", "", "a" * 36, "172e6e23-cce6-4260-ad7f-de6e45412292\n", "/etc", "-rf",
             "192e3c6accf24801aa8160905a7e1584", "{e0d41eb6-cb23-41f8-b5e0-20b2e587d80f}")
NIC = {"mac": MAC, "interface": "net0", "nic_tag": "admin", "ips": ["10.88.0.10/24"]}
MIGRATION = "9a1e3c44-0000-4000-8000-00000000000c"
STREAM = {"migration_uuid": MIGRATION, "token": "t" * 32, "snapshot": "migration-1",
          "parent": None}


def machine_op_params(machine: str, image: str) -> dict[str, dict[str, Any]]:
    """Valid params of every op that names a machine, for ``machine``."""
    snapshot = {"uuid": machine, "name": "s1"}
    return {
        "machine_create": {"uuid": machine, "alias": "web0", "owner_uuid": OWNER,
                           "image_uuid": image, "ram_mb": 64, "disk_mb": 64},
        "machine_start": {"uuid": machine},
        "machine_stop": {"uuid": machine},
        "machine_reboot": {"uuid": machine},
        "machine_destroy": {"uuid": machine},
        "machine_load": {"uuid": machine},
        "machine_update": {"uuid": machine, "ram_mb": 128},
        "machine_update_metadata": {"uuid": machine, "set_tags": {"role": "web"}},
        "snapshot_create": snapshot,
        "snapshot_list": {"uuid": machine},
        "snapshot_rollback": snapshot,
        "snapshot_delete": snapshot,
        "image_create_from_machine": {"uuid": machine,
                                      "image": {"uuid": str(uuid.uuid4()), "name": "golden"},
                                      "upload": {"url": "http://127.0.0.1:1/images/x/file"}},
        "machine_add_nics": {"uuid": machine, "nics": [NIC]},
        "machine_remove_nics": {"uuid": machine, "macs": [MAC]},
        "machine_update_nics": {"uuid": machine, "nics": [{"mac": MAC}]},
        "migration_receive": {"uuid": machine, **STREAM},
        "migration_send": {"uuid": machine, **STREAM,
                           "url": "http://127.0.0.1:1/migrations/" + "a" * 32},
        "migration_activate": {"uuid": machine, "migration_uuid": MIGRATION,
                               "snapshot": "migration-1"},
        "migration_hide": {"uuid": machine, "hidden": True},
        "migration_cleanup": {"uuid": machine, "migration_uuid": MIGRATION, "keep": None},
    }


#: every op of the wire contract that names a machine (machine_op_params must know each)
MACHINE_OPS = sorted(op for op, schema in AGENT_TASKS.items() if "uuid" in schema().fields)


@pytest.fixture
def hosted_node(backend: NodeBackend) -> Any:
    """``backend`` (each kind) served by the task registry."""
    with hosting(backend):
        yield backend


def canary_of(node: NodeBackend, tmp_path: Path) -> Path:
    """A directory beside the linux node's machines (``<machines_dir>/../canary``), which a
    machine uuid ``../canary`` would name; elsewhere one in the test's own directory."""
    parent = node.machines_dir.parent if isinstance(node, LinuxBackend) else tmp_path
    canary = parent / "canary"
    canary.mkdir(exist_ok=True)
    (canary / "keep").write_text("still here")
    return canary


def assert_refused(outcome: dict[str, Any], field: str) -> None:
    assert not outcome["ok"], outcome
    assert outcome["error"]["code"] == "InvalidParams"
    assert f"'{field}'" in outcome["error"]["message"]


@pytest.mark.parametrize("op", MACHINE_OPS)
def test_a_machine_uuid_that_is_no_uuid_is_refused_and_touches_nothing(
        hosted_node: NodeBackend, image_spec: dict[str, Any], tmp_path: Path, op: str) -> None:
    canary = canary_of(hosted_node, tmp_path)
    before = hosted_node.status()
    for machine in HOSTILE_UUIDS:
        params = machine_op_params(machine, image_spec["uuid"])[op]
        assert_refused(tasks.run_op(op, hosted_node.server_uuid, params), "uuid")
    assert (canary / "keep").read_text() == "still here"
    after = hosted_node.status()
    assert (after["machines"], after["images"]) == (before["machines"], before["images"])


def test_a_migration_copy_of_a_machine_uuid_that_is_no_uuid_is_refused(
        hosted_node: NodeBackend, image_spec: dict[str, Any], tmp_path: Path) -> None:
    canary = canary_of(hosted_node, tmp_path)
    for machine in HOSTILE_UUIDS:
        spec = machine_op_params(machine, image_spec["uuid"])["machine_create"]
        outcome = tasks.run_op("migration_target_prepare", hosted_node.server_uuid,
                               {"migration_uuid": MIGRATION, "spec": spec})
        assert_refused(outcome, "spec")
        assert "uuid" in outcome["error"]["message"]
    assert (canary / "keep").read_text() == "still here"
    assert hosted_node.list_machines() == []


@pytest.mark.parametrize("machine", NOT_UUIDS)
def test_only_a_canonical_uuid_names_a_machine(hosted: NodeBackend, machine: str) -> None:
    assert_refused(tasks.run_op("machine_destroy", hosted.server_uuid, {"uuid": machine}),
                   "uuid")


@pytest.mark.parametrize("image", ["../images", "x/..", "*", ".."])
def test_an_image_uuid_that_is_no_uuid_is_refused(
        hosted_node: NodeBackend, image_spec: dict[str, Any], image: str) -> None:
    images = hosted_node.status()["images"]
    outcome = tasks.run_op("image_ensure_present", hosted_node.server_uuid,
                           {"image": {**image_spec, "uuid": image}})
    assert_refused(outcome, "image")
    assert "uuid" in outcome["error"]["message"]
    spec = machine_op_params(str(uuid.uuid4()), image)["machine_create"]
    assert_refused(tasks.run_op("machine_create", hosted_node.server_uuid, spec), "image_uuid")
    assert hosted_node.status()["images"] == images


def test_a_snapshot_name_is_one_plain_name(hosted: NodeBackend) -> None:
    machine = str(uuid.uuid4())
    for name in ("../s1", "s/1", "..", ".s1", "-s1", "s1\n", "s@1", "*"):
        for op in ("snapshot_create", "snapshot_rollback", "snapshot_delete"):
            outcome = tasks.run_op(op, hosted.server_uuid, {"uuid": machine, "name": name})
            assert_refused(outcome, "name")


def test_an_image_file_names_a_compression_the_node_knows(hosted: NodeBackend,
                                                         image_spec: dict[str, Any]) -> None:
    file = {"sha256": "0" * 64, "size": 1, "compression": "--use-compress-program=sh"}
    outcome = tasks.run_op("image_ensure_present", hosted.server_uuid,
                           {"image": {**image_spec, "files": [file]}})
    assert_refused(outcome, "image")
    assert "compression" in outcome["error"]["message"]
    assert image_spec["uuid"] not in hosted.status()["images"]


@pytest.mark.parametrize("field, value", [("mac", MAC + "\n"), ("interface", "net0\n"),
                                          ("nic_tag", "admin\n")])
def test_nic_names_end_where_they_seem_to(hosted: NodeBackend, field: str, value: str) -> None:
    outcome = tasks.run_op("machine_add_nics", hosted.server_uuid,
                           {"uuid": str(uuid.uuid4()), "nics": [{**NIC, field: value}]})
    assert_refused(outcome, "nics")
    assert field in outcome["error"]["message"]


@pytest.mark.parametrize("peers", [{"external": ["10.0.0.2 dev lo"]}, {"external": ["-h"]},
                                   {"external\n": ["10.0.0.2"]}, {"../x": []}])
def test_overlay_peers_are_nic_tags_and_addresses(hosted_node: NodeBackend,
                                                  peers: dict[str, list[str]]) -> None:
    version = hosted_node.status()["overlay_version"]
    outcome = tasks.run_op("node_set_overlay_peers", hosted_node.server_uuid,
                           {"peers": peers, "version": "f00d"})
    assert_refused(outcome, "peers")
    assert hosted_node.status()["overlay_version"] == version


# -- the linux backend's own guard, for a caller that skipped the schemas ---------------------

linux_only = pytest.mark.skipif(missing_host() is not None, reason=str(missing_host()))


@linux_only
@pytest.mark.parametrize("machine", ["../canary", "x/..", "..", "*", "-rf", "a/b"])
def test_the_linux_node_refuses_a_path_as_a_machine_uuid(
        linux_backend: LinuxBackend, tmp_path: Path, machine: str) -> None:
    canary = canary_of(linux_backend, tmp_path)
    for call in (linux_backend.machine_destroy, linux_backend.machine_stop,
                 linux_backend.snapshot_list):
        with pytest.raises(BackendError) as exc:
            call(machine)
        assert exc.value.code == "InvalidArgument" and "machine uuid" in exc.value.message
    assert (canary / "keep").read_text() == "still here"


@linux_only
def test_a_glob_is_no_machine_of_the_pool(node: LinuxBackend, busybox_image: dict[str, Any],
                                          machine_spec: Any) -> None:
    """``zones/<uuid>@*`` with uuid ``*`` would be every machine's snapshots."""
    machine = node.machine_create(machine_spec(image_uuid=busybox_image["uuid"]))["uuid"]
    node.snapshot_create(machine, "s1")
    for call in (lambda: node.storage.machine_destroy("*"),
                 lambda: node.storage.snapshot_delete(machine, "*"),
                 lambda: node.storage.snapshot_create(machine, "../escape")):
        with pytest.raises(BackendError) as exc:
            call()
        assert exc.value.code == "InvalidArgument"
    assert [s["name"] for s in node.snapshot_list(machine)] == ["s1"]
    assert not (node.storage.state_dir.parent / "escape").exists()


@linux_only
@pytest.mark.parametrize("image", ["../zones", "x/..", ".."])
def test_the_linux_node_refuses_a_path_as_an_image_uuid(
        linux_backend: LinuxBackend, busybox_image: dict[str, Any], image_server: Any,
        image: str) -> None:
    images, requests = linux_backend.storage.image_ids(), len(image_server.requests)
    with pytest.raises(BackendError) as exc:
        linux_backend.image_ensure_present({**busybox_image, "uuid": image})
    assert exc.value.code == "InvalidArgument" and "image uuid" in exc.value.message
    assert linux_backend.storage.image_ids() == images
    assert len(image_server.requests) == requests  # nothing fetched
    assert not list(linux_backend.tmp_dir.iterdir())
