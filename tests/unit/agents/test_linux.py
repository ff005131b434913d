"""The linux backend for real: runc containers on a btrfs pool on a loop device.

What the kernel enforces is read back from the kernel (cgroup files of the container's
process, btrfs qgroups), not from the backend's own records.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents import pool
from agents.backends.base import BackendError
from agents.backends.host import btrfs, loopdev, runc
from agents.backends.host.cmd import HostCommandError
from agents.backends.linux import LinuxBackend
from agents.backends.linux.storage import BtrfsStorage
from agents.config import load_settings
from agents.runner import make_backend
from schemas.agent import MachineMetadataUpdateSchema, MachineUpdateSchema
from tests.support.agent_images import FileServer
from tests.support.btrfs import LoopPool, missing_host
from tests.support.wait import wait_until
from tests.unit.agents.conftest import make_linux, served_image

SpecFactory = Callable[..., dict[str, Any]]
MIB = 1024 * 1024
pytestmark = pytest.mark.skipif(missing_host() is not None, reason=str(missing_host()))


@pytest.fixture
def spec(machine_spec: SpecFactory, busybox_image: dict[str, Any]) -> SpecFactory:
    def build(**kw: Any) -> dict[str, Any]:
        return machine_spec(image_uuid=busybox_image["uuid"], **kw)

    return build


def inside(node: LinuxBackend, machine_uuid: str, *argv: str) -> str:
    return runc.exec_(node.runc_root, machine_uuid, list(argv))


def cgroup_file(node: LinuxBackend, machine_uuid: str, controller: str, name: str) -> str:
    """A cgroup v1 file of the container's init process, read on the host."""
    state = runc.state(node.runc_root, machine_uuid)
    assert state is not None
    for line in Path(f"/proc/{state['pid']}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path(f"/sys/fs/cgroup/{controller}{path}/{name}").read_text().strip()
    raise AssertionError(f"no {controller} cgroup for {machine_uuid}")


def qgroup_of(pool: LoopPool, relpath: str) -> btrfs.Qgroup | None:
    groups = btrfs.qgroup_show(pool.mount, sync=True)
    return next((g for g in groups if g.path == relpath), None)


def test_machine_runs_with_its_hostname_and_limits(node: LinuxBackend, spec: SpecFactory,
                                                   btrfs_pool: LoopPool) -> None:
    machine = node.machine_create(spec(alias="web0", ram_mb=192, disk_mb=64, cpu_cap=50,
                                       max_lwps=321))
    assert machine["state"] == "running"
    assert inside(node, machine["uuid"], "hostname").strip() == "web0"
    assert int(cgroup_file(node, machine["uuid"], "memory", "memory.limit_in_bytes")) == 192 * MIB
    assert cgroup_file(node, machine["uuid"], "pids", "pids.max") == "321"
    assert cgroup_file(node, machine["uuid"], "cpu", "cpu.cfs_quota_us") == "50000"
    group = qgroup_of(btrfs_pool, f"zones/{machine['uuid']}")
    assert group is not None and group.max_referenced == 64 * MIB


def test_writing_past_the_quota_fails(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec(disk_mb=24))
    with pytest.raises(HostCommandError) as exc:
        inside(node, machine["uuid"], "dd", "if=/dev/zero", "of=/tmp/big", "bs=1M", "count=64")
    assert "Disk quota exceeded" in exc.value.stderr
    inside(node, machine["uuid"], "rm", "/tmp/big")


def test_snapshot_rollback_restores_a_file(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec())
    inside(node, machine["uuid"], "sh", "-c", "echo before > /root/note")
    node.snapshot_create(machine["uuid"], "before")
    inside(node, machine["uuid"], "sh", "-c", "echo after > /root/note; touch /root/new")
    rolled = node.snapshot_rollback(machine["uuid"], "before")
    assert rolled["state"] == "running"
    assert inside(node, machine["uuid"], "cat", "/root/note").strip() == "before"
    assert "new" not in inside(node, machine["uuid"], "ls", "/root").split()


def test_resize_changes_memory_and_disk_limits(node: LinuxBackend, spec: SpecFactory,
                                               btrfs_pool: LoopPool) -> None:
    machine = node.machine_create(spec(ram_mb=256, disk_mb=64))
    for ram, disk in ((384, 96), (128, 48)):  # grow, then shrink
        node.machine_update(MachineUpdateSchema().load(
            {"uuid": machine["uuid"], "ram_mb": ram, "disk_mb": disk}))
        limit = cgroup_file(node, machine["uuid"], "memory", "memory.limit_in_bytes")
        assert int(limit) == ram * MIB
        group = qgroup_of(btrfs_pool, f"zones/{machine['uuid']}")
        assert group is not None and group.max_referenced == disk * MIB
    node.machine_update(MachineUpdateSchema().load(
        {"uuid": machine["uuid"], "cpu_cap": 150, "max_lwps": 77}))
    assert cgroup_file(node, machine["uuid"], "cpu", "cpu.cfs_quota_us") == "150000"
    assert cgroup_file(node, machine["uuid"], "pids", "pids.max") == "77"
    node.machine_update(MachineUpdateSchema().load({"uuid": machine["uuid"], "cpu_cap": 0}))
    assert cgroup_file(node, machine["uuid"], "cpu", "cpu.cfs_quota_us") == "-1"
    # the limits survive a reboot: the bundle was rewritten
    node.machine_reboot(machine["uuid"])
    assert cgroup_file(node, machine["uuid"], "pids", "pids.max") == "77"
    assert int(cgroup_file(node, machine["uuid"], "memory", "memory.limit_in_bytes")) == 128 * MIB


def test_a_machine_that_cannot_boot_fails_and_is_removable(
    linux_backend: LinuxBackend, image_server: FileServer, machine_spec: SpecFactory,
    btrfs_pool: LoopPool,
) -> None:
    image = served_image(image_server, "no-shell.tar", "none", applets=(), name="no-shell")
    linux_backend.image_ensure_present(image)
    spec = machine_spec(image_uuid=image["uuid"])
    with pytest.raises(HostCommandError) as exc:
        linux_backend.machine_create(spec)
    assert "/bin/sh" in exc.value.message  # runc's own words reach the head node
    assert linux_backend.machine_load(spec["uuid"])["state"] == "failed"
    assert linux_backend.machine_destroy(spec["uuid"])["state"] == "destroyed"
    assert not (btrfs_pool.mount / "zones" / spec["uuid"]).exists()


def test_rename_applies_at_the_next_boot(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec(alias="old"))
    node.machine_update(MachineUpdateSchema().load({"uuid": machine["uuid"], "alias": "new"}))
    assert node.machine_load(machine["uuid"])["alias"] == "new"
    node.machine_reboot(machine["uuid"])
    assert inside(node, machine["uuid"], "hostname").strip() == "new"


def test_tags_and_metadata_live_in_a_file_beside_the_bundle(node: LinuxBackend,
                                                          spec: SpecFactory) -> None:
    machine = node.machine_create(spec(tags={"role": "web"}, metadata={"motd": "hi"}))
    beside = node.machines_dir / machine["uuid"]
    assert (beside / "config.json").exists()
    assert json.loads((beside / "metadata.json").read_text()) == {
        "tags": {"role": "web"}, "customer_metadata": {"motd": "hi"}, "serial": 0}
    node.machine_update_metadata(MachineMetadataUpdateSchema().load(
        {"uuid": machine["uuid"], "set_customer_metadata": {"user-script": "true"},
         "remove_tags": ["role"]}))
    assert json.loads((beside / "metadata.json").read_text()) == {
        "tags": {}, "customer_metadata": {"motd": "hi", "user-script": "true"}, "serial": 1}
    # a restarted agent reads it back
    again = LinuxBackend(node.server_uuid, "again", node.storage, runc_root=node.runc_root)
    assert again.machine_update_metadata(MachineMetadataUpdateSchema().load(
        {"uuid": machine["uuid"]}))["customer_metadata"] == {"motd": "hi", "user-script": "true"}


def test_destroy_leaves_nothing_behind(node: LinuxBackend, spec: SpecFactory,
                                       btrfs_pool: LoopPool) -> None:
    machine = node.machine_create(spec())
    node.snapshot_create(machine["uuid"], "s1")
    node.machine_destroy(machine["uuid"])
    assert not list((btrfs_pool.mount / "zones").glob(f"{machine['uuid']}*"))
    paths = [g.path for g in btrfs.qgroup_show(btrfs_pool.mount, sync=True)]
    assert not [p for p in paths if machine["uuid"] in p or p == "<stale>"]
    assert runc.state(node.runc_root, machine["uuid"]) is None
    assert not (node.machines_dir / machine["uuid"]).exists()


def test_two_machines_share_the_image_blocks(node: LinuxBackend, spec: SpecFactory,
                                             btrfs_pool: LoopPool,
                                             busybox_image: dict[str, Any]) -> None:
    first = node.machine_create(spec())
    second = node.machine_create(spec(alias="web1"))
    image = qgroup_of(btrfs_pool, f"images/{busybox_image['uuid']}@final")
    assert image is not None and image.referenced > MIB  # busybox itself is ~2 MiB
    for machine in (first, second):
        group = qgroup_of(btrfs_pool, f"zones/{machine['uuid']}")
        assert group is not None
        assert group.referenced >= image.referenced - 64 * 1024  # sees the whole image...
        assert group.exclusive < 256 * 1024  # ...but owns almost none of it


def test_a_corrupt_image_leaves_nothing_in_the_pool(linux_backend: LinuxBackend,
                                                    busybox_image: dict[str, Any],
                                                    btrfs_pool: LoopPool) -> None:
    bad = {**busybox_image, "files": [{**busybox_image["files"][0], "sha256": "0" * 64}]}
    with pytest.raises(BackendError) as exc:
        linux_backend.image_ensure_present(bad)
    assert exc.value.code == "ImageChecksumMismatch"
    assert not list((btrfs_pool.mount / "images").glob(f"*{bad['uuid']}*"))
    assert not [g for g in btrfs.qgroup_show(btrfs_pool.mount, sync=True) if bad["uuid"] in g.path]
    assert not list(linux_backend.tmp_dir.iterdir())
    assert bad["uuid"] not in linux_backend.status()["images"]


def test_two_requests_import_an_image_once(linux_backend: LinuxBackend,
                                           busybox_image: dict[str, Any],
                                           image_server: FileServer) -> None:
    before = len(image_server.requests)
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(
        linux_backend.image_ensure_present(busybox_image))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and {r["uuid"] for r in results} == {busybox_image["uuid"]}
    assert len(image_server.requests) - before == 1


def test_a_restarted_agent_finds_its_machines_and_their_true_states(
    node: LinuxBackend, spec: SpecFactory, btrfs_pool: LoopPool
) -> None:
    running = node.machine_create(spec(alias="a"))
    stopped = node.machine_create(spec(alias="b"))
    died = node.machine_create(spec(alias="c"))
    node.machine_stop(stopped["uuid"])
    state = runc.state(node.runc_root, died["uuid"])
    assert state is not None
    os.kill(state["pid"], 9)  # the container's init dies behind the agent's back
    # kill() only queues the signal: on a loaded machine runc can still see the process
    # alive for a moment. The restart is what is tested, so wait for the death first.
    wait_until(lambda: (runc.state(node.runc_root, died["uuid"]) or {}).get("status") == "stopped",
               message="the killed container to stop")

    restarted = make_linux(btrfs_pool)
    states = {m["alias"]: m["state"] for m in restarted.list_machines()}
    assert states == {"a": "running", "b": "stopped", "c": "stopped"}
    assert restarted.machine_start(died["uuid"])["state"] == "running"
    assert restarted.machine_load(running["uuid"])["boot_time"] == running["boot_time"]


def test_status_reports_disk_usage(node: LinuxBackend, spec: SpecFactory,
                                   btrfs_pool: LoopPool) -> None:
    machine = node.machine_create(spec(disk_mb=64))
    inside(node, machine["uuid"], "dd", "if=/dev/urandom", "of=/root/data", "bs=1M", "count=8")
    inside(node, machine["uuid"], "sync")
    btrfs.qgroup_show(btrfs_pool.mount, sync=True)
    node._invalidate_usage()  # status caches usage for a few seconds
    reported = next(m for m in node.status()["machines"] if m["uuid"] == machine["uuid"])
    assert reported["disk_used_mb"] >= 8


def test_an_image_without_a_file_is_refused(linux_backend: LinuxBackend) -> None:
    with pytest.raises(BackendError) as exc:
        linux_backend.image_ensure_present({"uuid": str(uuid.uuid4()), "name": "x",
                                            "files": [], "source": None})
    assert exc.value.code == "ImageFileMissing"


def test_stop_kills_a_machine_that_ignores_sigterm(btrfs_pool: LoopPool, spec: SpecFactory,
                                                   busybox_image: dict[str, Any],
                                                   image_store_url: str) -> None:
    impatient = LinuxBackend(str(uuid.uuid4()), "linux-test", BtrfsStorage(btrfs_pool.mount),
                             runc_root=btrfs_pool.runc_root, stop_timeout=0.5,
                             image_store_url=image_store_url)
    impatient.image_ensure_present(busybox_image)
    machine = impatient.machine_create(spec())
    try:
        state = runc.state(impatient.runc_root, machine["uuid"])
        assert state is not None
        os.kill(state["pid"], signal.SIGSTOP)  # a stopped init cannot act on SIGTERM
        started = time.monotonic()
        assert impatient.machine_stop(machine["uuid"])["state"] == "stopped"
        assert time.monotonic() - started >= 0.5
        assert runc.state(impatient.runc_root, machine["uuid"]) is None
    finally:
        impatient.machine_destroy(machine["uuid"])


@pytest.mark.parametrize("compression", ["bzip2", "xz", "none"])
def test_images_in_every_compression(linux_backend: LinuxBackend, image_server: FileServer,
                                     machine_spec: SpecFactory, compression: str) -> None:
    image = served_image(image_server, f"busybox-{compression}.tar", compression)
    linux_backend.image_ensure_present(image)
    machine = linux_backend.machine_create(machine_spec(image_uuid=image["uuid"]))
    assert inside(linux_backend, machine["uuid"], "echo", "hello").strip() == "hello"


def test_an_interrupted_rollback_is_finished_at_start(node: LinuxBackend, spec: SpecFactory,
                                                      btrfs_pool: LoopPool) -> None:
    machine = node.machine_create(spec())
    node.machine_stop(machine["uuid"])
    zones = btrfs_pool.mount / "zones"
    # the agent died between moving the dataset aside and putting the snapshot in its place
    os.rename(zones / machine["uuid"], zones / f"{machine['uuid']}.rollback")
    restarted = make_linux(btrfs_pool)
    assert (zones / machine["uuid"]).is_dir()
    assert not (zones / f"{machine['uuid']}.rollback").exists()
    assert restarted.machine_start(machine["uuid"])["state"] == "running"


def test_the_runner_builds_a_linux_backend(btrfs_pool: LoopPool, tmp_path: Path) -> None:
    settings = load_settings(backend="linux", pool=str(btrfs_pool.mount), data_dir=tmp_path,
                             runc_root=btrfs_pool.runc_root)
    backend = make_backend(settings)
    assert isinstance(backend, LinuxBackend)
    assert backend.sysinfo()["backend"] == "linux"


def test_status_sees_a_dead_container_at_once(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec())
    assert {m["uuid"]: m["state"] for m in node.status()["machines"]}[machine["uuid"]] == \
        "running"
    state = runc.state(node.runc_root, machine["uuid"])
    assert state is not None
    os.kill(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the kernel reaps it asynchronously
        states = {m["uuid"]: m["state"] for m in node.status()["machines"]}
        if states[machine["uuid"]] == "stopped":
            break
        time.sleep(0.05)
    assert states[machine["uuid"]] == "stopped"
    assert time.monotonic() < deadline - 4  # well within the cache's lifetime


def test_a_pool_without_quotas_gets_them(tmp_path: Path) -> None:
    image, mount = tmp_path / "pool.img", tmp_path / "mnt"
    with open(image, "wb") as fh:
        fh.truncate(256 << 20)
    device = loopdev.attach(image)
    try:
        btrfs.mkfs(device)
        mount.mkdir()
        loopdev.mount(device, mount)
        LinuxBackend(str(uuid.uuid4()), "q", BtrfsStorage(mount), runc_root=tmp_path / "runc")
        assert [g.path for g in btrfs.qgroup_show(mount)] == ["<toplevel>"]
    finally:
        pool.destroy(image, mount)
