"""The SmartOS backend's zone runtime against what VM.js does (smartos-live commit 009dfe43,
vmadm.js a0cbdd2c; sdc-cn-agent's machine_destroy cd1421bc): rollback-snapshot boots the
zone, start/stop repeat harmlessly, a provision in progress is waited for before a delete,
the timeouts are ordered, and ``vmadm list`` is not run at every status check."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.host import vmadm
from agents.backends.host.cmd import Completed, use_runner
from agents.backends.smartos import SmartOSBackend
from agents.backends.vmadm_payloads import create_payload
from tests.unit.agents.recorded import RecordedHost
from tests.unit.agents.smartos_host import FakeSmartOS, recorded
from tests.unit.agents.test_smartos import LIST_ARGV, VM1, spec, with_image
from workflows import machines as workflow_machines

SNAPSHOTS_ARGV = ("zfs", "list", "-Hp", "-t", "snapshot", "-o", "name,used", "-d", "1",
                  f"zones/{VM1}")


@pytest.fixture
def node(smartos_host: FakeSmartOS, tmp_path: Path) -> SmartOSBackend:
    with_image(smartos_host)
    backend = SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path)
    backend.provisions.poll = 0.02
    return backend


def changes(host: FakeSmartOS) -> list[tuple[str, ...]]:
    """The commands that change something (not vmadm's reads)."""
    return [argv for argv, _ in host.calls
            if argv[0] in ("vmadm", "zfs", "zoneadm")
            and argv[1] not in ("list", "get", "lookup")]


# -- rollback ---------------------------------------------------------------------------------


def test_vmadm_rollback_snapshot_boots_a_stopped_zone(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    """The fake as VM.js: the CLI never passes do_not_start."""
    vm = node.machine_create(spec())["uuid"]
    node.snapshot_create(vm, "s1")
    node.machine_stop(vm)
    vmadm.rollback_snapshot(vm, "s1")
    assert smartos_host.vms[vm]["state"] == "running"


def test_rollback_of_a_stopped_zone_is_zfs_rollback_and_boots_nothing(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    vm = node.machine_create(spec())["uuid"]
    for name in ("s1", "s2"):
        node.snapshot_create(vm, name)
    node.machine_stop(vm)
    smartos_host.calls.clear()
    rolled = node.snapshot_rollback(vm, "s1")
    assert rolled["state"] == "stopped" and rolled["boot_time"] is None
    assert changes(smartos_host) == [("zfs", "rollback", "-r", f"zones/{vm}@vmsnap-s1")]
    assert [s["name"] for s in node.snapshot_list(vm)] == ["s1"]


def test_rollback_of_a_running_zone_is_vmadms_and_boots_it_again(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    machine = node.machine_create(spec())
    vm = machine["uuid"]
    for name in ("s1", "s2"):
        node.snapshot_create(vm, name)
    smartos_host.calls.clear()
    rolled = node.snapshot_rollback(vm, "s1")
    assert changes(smartos_host) == [("vmadm", "rollback-snapshot", vm, "s1")]
    assert rolled["state"] == "running" and rolled["boot_time"] > machine["boot_time"]
    assert [s["name"] for s in node.snapshot_list(vm)] == ["s1"]


# -- start and stop repeated ------------------------------------------------------------------


def test_start_of_a_running_zone_and_stop_of_a_stopped_one_exit_0_and_change_nothing(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    """vmadm.js turns VM.js's EALREADYRUNNING and ENOTRUNNING into exit 0, with VM.js's
    message on stderr."""
    vm = node.machine_create(spec())["uuid"]
    booted = smartos_host.vms[vm]["boot_timestamp"]
    again = smartos_host(("vmadm", "start", vm), None, 10.0, None)
    assert (again.returncode, smartos_host.vms[vm]["boot_timestamp"]) == (0, booted)
    assert "already running" in again.stderr
    node.machine_stop(vm)
    stopped = smartos_host(("vmadm", "stop", vm), None, 10.0, None)
    assert (stopped.returncode, smartos_host.vms[vm]["state"]) == (0, "stopped")
    assert "already not 'running'" in stopped.stderr


# -- snapshots and boot times as vmadm prints them --------------------------------------------


def test_snapshot_sizes_come_from_vmadm_get(tmp_path: Path) -> None:
    """vmadm get carries each snapshot's size (ZFS 'written', bytes), newest first: no zfs
    list, and the answer oldest first."""
    host = RecordedHost({("vmadm", "get", VM1): recorded("vmadm-get.json")})
    with use_runner(host):
        snapshots = SmartOSBackend("s", tmp_path).snapshot_list(VM1)
    assert snapshots == [
        {"name": "before-upgrade", "created_at": 1732176000.0, "size_mb": 2},
        {"name": "after-upgrade", "created_at": 1732181400.0, "size_mb": 1},
    ]
    assert host.calls == [("vmadm", "get", VM1)]


def test_snapshot_sizes_of_an_older_platform_come_from_zfs(tmp_path: Path) -> None:
    vm = json.loads(recorded("vmadm-get.json"))
    vm["snapshots"] = [{k: v for k, v in s.items() if k != "size"} for s in vm["snapshots"]]
    host = RecordedHost({("vmadm", "get", VM1): json.dumps(vm),
                         SNAPSHOTS_ARGV: recorded("zfs-list-snapshots.txt")})
    with use_runner(host):
        snapshots = SmartOSBackend("s", tmp_path).snapshot_list(VM1)
    assert [s["size_mb"] for s in snapshots] == [2, 1]


def test_boot_timestamps_are_whole_seconds(node: SmartOSBackend) -> None:
    machine = node.machine_create(spec())
    assert machine["boot_time"] == int(machine["boot_time"])
    # a reboot moves it on, even within the same second
    assert node.machine_reboot(machine["uuid"])["boot_time"] > machine["boot_time"]


# -- a provision in progress, and the timeouts around it ----------------------------------------


def test_timeouts_are_ordered_vmjs_then_agent_then_workflow() -> None:
    """VM.js gives up on a provision first, then the agent on vmadm create, then the head node
    on the step: a step that times out never has its clean-up delete a zone being made."""
    assert vmadm.PROVISION_TIMEOUT < vmadm.CREATE_TIMEOUT < workflow_machines.CREATE_TIMEOUT
    # a destroy may first wait for a provision to end
    assert workflow_machines.DESTROY_TIMEOUT > vmadm.CREATE_TIMEOUT


def test_destroy_waits_for_a_provision_left_in_progress(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    wanted = spec()
    smartos_host.provisioning(create_payload(wanted, "joyent-minimal"), 0.3)
    started = time.monotonic()
    assert node.status()["machines"][0]["state"] == "provisioning"
    assert node.machine_destroy(wanted["uuid"])["state"] == "destroyed"
    assert time.monotonic() - started >= 0.3
    assert wanted["uuid"] not in smartos_host.vms
    assert changes(smartos_host)[-2:] == [("zoneadm", "-z", wanted["uuid"], "unmount"),
                                          ("vmadm", "delete", wanted["uuid"])]


def test_destroy_waits_for_a_create_this_agent_is_running(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    smartos_host.create_seconds = 0.4
    wanted = spec()
    created: list[dict[str, Any]] = []
    creating = threading.Thread(target=lambda: created.append(node.machine_create(wanted)))
    creating.start()
    while wanted["uuid"] not in smartos_host.vms:
        time.sleep(0.01)
    destroyed = node.machine_destroy(wanted["uuid"])
    creating.join()
    assert created[0]["state"] == "running" and destroyed["state"] == "destroyed"
    assert [argv[:2] for argv in changes(smartos_host)] == [
        ("vmadm", "create"), ("zoneadm", "-z"), ("vmadm", "delete")]


def test_destroy_unmounts_a_zone_left_mounted(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    vm = node.machine_create(spec())["uuid"]
    smartos_host.vms[vm]["mounted"] = True
    assert node.machine_destroy(vm)["state"] == "destroyed"
    assert vm not in smartos_host.vms


def test_a_repeated_create_answers_once_the_provision_ended(
    node: SmartOSBackend, smartos_host: FakeSmartOS
) -> None:
    wanted = spec()
    smartos_host.provisioning(create_payload(wanted, "joyent-minimal"), 0.2)
    assert node.machine_create(wanted)["state"] == "running"
    assert not [argv for argv in smartos_host.argvs("vmadm") if argv[1] == "create"]


# -- vmadm list, not at every status check ------------------------------------------------------


def zone_lists(host: FakeSmartOS) -> int:
    return sum(1 for argv, _ in host.calls if argv == LIST_ARGV)


def test_status_checks_list_zones_once_until_an_operation(
    smartos_host: FakeSmartOS, tmp_path: Path
) -> None:
    with_image(smartos_host)
    node = SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path, usage_ttl=60)
    vm = node.machine_create(spec())["uuid"]
    smartos_host.calls.clear()
    for _ in range(20):
        assert node.status()["machines"][0]["state"] == "running"
    assert zone_lists(smartos_host) == 1
    node.machine_stop(vm)
    assert node.status()["machines"][0]["state"] == "stopped"
    assert zone_lists(smartos_host) == 2
    # an operation that fails forgets the list too
    with pytest.raises(BackendError):
        node.snapshot_rollback(vm, "nonexistent")
    node.status()
    assert zone_lists(smartos_host) == 3


def test_a_list_taken_while_an_operation_ran_is_not_kept(
    smartos_host: FakeSmartOS, tmp_path: Path
) -> None:
    """The status check lists zones, an operation ends meanwhile: that list is stale and the
    next check lists again."""
    with_image(smartos_host)
    node = SmartOSBackend("44454c4c-4800-1034-804a-b2c04f354d32", tmp_path, usage_ttl=60)
    vm = node.machine_create(spec())["uuid"]

    def stop_during_the_list(argv: Sequence[str], data: bytes | None, timeout: float,
                             output: Path | None) -> Completed:
        done = smartos_host(argv, data, timeout, output)
        if tuple(argv) == LIST_ARGV and smartos_host.vms[vm]["state"] == "running":
            with use_runner(smartos_host):
                node.machine_stop(vm)
        return done

    with use_runner(stop_during_the_list):
        assert node.status()["machines"][0]["state"] == "running"
    assert node.status()["machines"][0]["state"] == "stopped"

