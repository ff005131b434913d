"""End to end on a real Linux compute node: the head node's processes, and `sdc agent run
--backend linux` on a btrfs pool on a loop device, driving real runc containers.

What the kernel enforces is read back from the kernel (the container's cgroup files, btrfs
qgroups, runc's own state), never from the head node's or the agent's records. The image is
the real busybox image `sdc image build-busybox` makes, imported with `sdc image import` and
fetched by the node over its signed URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headnode.imagebuild import build_busybox_image
from tests.support.btrfs import LoopPool, missing_host

MISSING = missing_host()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

# Imported after the skip decision: these drive btrfs and runc on the host.
from agents.backends.host import btrfs  # noqa: E402
from agents.backends.host.cmd import HostCommandError  # noqa: E402
from tests.support.linux_cloud import LinuxCloud, LinuxNode, start_cloud  # noqa: E402

MIB = 1024 * 1024
SMALL: dict[str, Any] = {"name": "lx-small", "memory": 128, "disk": 48}
LARGE: dict[str, Any] = {"name": "lx-large", "memory": 192, "disk": 96}


class OneNodeCloud(LinuxCloud):
    """The cloud with its one node, and what that node's kernel and pool say."""

    @property
    def node(self) -> LinuxNode:
        return self.nodes[0]

    @property
    def server(self) -> str:
        return self.node.server

    @property
    def pool(self) -> LoopPool:
        return self.node.pool

    def provision(self, alias: str, package: str = SMALL["name"], image: str = "busybox",
                  **extra: Any) -> dict[str, Any]:
        return super().provision(alias, package, image, **extra)

    def memory_limit(self, machine_uuid: str) -> int:
        state = self.runc_state(machine_uuid)
        assert state is not None and state["status"] == "running"
        for line in Path(f"/proc/{state['pid']}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return int(Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
                           .read_text())
            if controllers == "":  # cgroup v2
                return int(Path(f"/sys/fs/cgroup{path}/memory.max").read_text())
        raise AssertionError(f"no memory cgroup for {machine_uuid}")

    def qgroup(self, relpath: str) -> btrfs.Qgroup | None:
        groups = btrfs.qgroup_show(self.pool.mount, sync=True)
        return next((g for g in groups if g.path == relpath), None)

    def pool_entries(self, name: str) -> list[str]:
        found = [str(p.relative_to(self.pool.mount)) for sub in ("images", "zones")
                 for p in (self.pool.mount / sub).glob(f"{name}*")]
        return sorted(found)


@pytest.fixture(scope="module")
def cloud(postgres_server: Any, redis_server: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneNodeCloud]:
    workdir = tmp_path_factory.mktemp("linux-cloud")
    c = start_cloud(postgres_server, redis_server, workdir, OneNodeCloud)
    try:
        c.add_node("linux")
        c.seed([SMALL, LARGE])
        yield c
    except BaseException:
        print(c.procs.tails())
        raise
    finally:
        c.stop()


# -- the tests, in the order a machine lives --------------------------------------------------


@pytest.fixture(scope="module")
def web(cloud: OneNodeCloud) -> dict[str, Any]:
    return cloud.provision("web0")


def test_provision_gives_a_container_with_its_hostname_and_memory(
        cloud: OneNodeCloud, web: dict[str, Any]) -> None:
    assert web["state"] == "running" and web["server_uuid"] == cloud.server
    assert cloud.inside(web["uuid"], "hostname").strip() == "web0"
    assert cloud.memory_limit(web["uuid"]) == SMALL["memory"] * MIB
    group = cloud.qgroup(f"zones/{web['uuid']}")
    assert group is not None and group.max_referenced == SMALL["disk"] * MIB
    server = cloud.api.get(f"/ops/servers/{cloud.server}")
    assert (server["ram_committed_mb"], server["disk_committed_mb"]) == (
        SMALL["memory"], SMALL["disk"])


def test_writing_past_the_quota_fails(cloud: OneNodeCloud, web: dict[str, Any]) -> None:
    with pytest.raises(HostCommandError) as exc:
        cloud.inside(web["uuid"], "dd", "if=/dev/zero", "of=/root/big", "bs=1M",
                     f"count={SMALL['disk'] * 2}")
    assert "Disk quota exceeded" in exc.value.stderr
    cloud.inside(web["uuid"], "rm", "-f", "/root/big")


def test_stop_start_reboot(cloud: OneNodeCloud, web: dict[str, Any]) -> None:
    cloud.act(web["uuid"], action="stop")
    assert cloud.api.get(f"/ops/machines/{web['uuid']}")["state"] == "stopped"
    state = cloud.runc_state(web["uuid"])
    assert state is None or state["status"] == "stopped"
    cloud.act(web["uuid"], action="start")
    assert cloud.api.get(f"/ops/machines/{web['uuid']}")["state"] == "running"
    before = cloud.runc_state(web["uuid"])
    assert before is not None and before["status"] == "running"
    cloud.act(web["uuid"], action="reboot")
    after = cloud.runc_state(web["uuid"])
    assert after is not None and after["status"] == "running"
    assert after["pid"] != before["pid"]
    assert cloud.inside(web["uuid"], "hostname").strip() == "web0"


def test_snapshot_then_rollback_restores_a_file(cloud: OneNodeCloud,
                                                web: dict[str, Any]) -> None:
    base = f"/ops/machines/{web['uuid']}/snapshots"
    cloud.inside(web["uuid"], "sh", "-c", "echo before > /root/note")
    made = cloud.api.post(base, {"name": "before"})
    cloud.succeed(made)
    assert cloud.api.get(f"{base}/before")["state"] == "created"
    assert cloud.pool_entries(web["uuid"]) == [f"zones/{web['uuid']}",
                                               f"zones/{web['uuid']}@before"]
    cloud.inside(web["uuid"], "sh", "-c", "echo after > /root/note; touch /root/new")
    cloud.succeed(cloud.api.post(f"{base}/before"))
    assert cloud.inside(web["uuid"], "cat", "/root/note").strip() == "before"
    assert "new" not in cloud.inside(web["uuid"], "ls", "/root").split()
    assert cloud.api.get(f"/ops/machines/{web['uuid']}")["state"] == "running"


def test_resize_changes_both_limits_and_the_servers_usage(cloud: OneNodeCloud,
                                                          web: dict[str, Any]) -> None:
    cloud.act(web["uuid"], action="resize", package=LARGE["name"])
    assert cloud.memory_limit(web["uuid"]) == LARGE["memory"] * MIB
    group = cloud.qgroup(f"zones/{web['uuid']}")
    assert group is not None and group.max_referenced == LARGE["disk"] * MIB
    machine = cloud.api.get(f"/ops/machines/{web['uuid']}")
    assert (machine["ram_mb"], machine["disk_mb"]) == (LARGE["memory"], LARGE["disk"])
    server = cloud.api.get(f"/ops/servers/{cloud.server}")
    assert (server["ram_committed_mb"], server["disk_committed_mb"]) == (
        LARGE["memory"], LARGE["disk"])
    assert (server["ram_inflight_mb"], server["disk_inflight_mb"]) == (0, 0)


def test_rename_shows_at_the_next_boot(cloud: OneNodeCloud, web: dict[str, Any]) -> None:
    cloud.act(web["uuid"], action="rename", alias="web0-renamed")
    cloud.act(web["uuid"], action="reboot")
    assert cloud.inside(web["uuid"], "hostname").strip() == "web0-renamed"
    assert cloud.api.get(f"/ops/machines/{web['uuid']}")["alias"] == "web0-renamed"


def test_image_from_the_machine_carries_its_files(cloud: OneNodeCloud,
                                                  web: dict[str, Any]) -> None:
    cloud.inside(web["uuid"], "sh", "-c", "echo golden > /root/marker")
    made = cloud.api.post("/ops/images/from-machine",
                          {"machine": web["uuid"], "name": "web-golden", "version": "1"})
    cloud.succeed(made)
    image = cloud.api.get(f"/ops/images/{made['image']['uuid']}")
    assert image["state"] == "active" and image["files"][0]["size"] > 0
    stored = cloud.data_dir / "images" / image["uuid"]
    assert stored.stat().st_size == image["files"][0]["size"]
    clone = cloud.provision("from-golden", image=image["uuid"])
    assert cloud.inside(clone["uuid"], "cat", "/root/marker").strip() == "golden"
    cloud.succeed(cloud.api.delete(f"/ops/machines/{clone['uuid']}"))


def test_destroy_leaves_nothing_behind(cloud: OneNodeCloud, web: dict[str, Any]) -> None:
    cloud.succeed(cloud.api.delete(f"/ops/machines/{web['uuid']}"))
    assert cloud.pool_entries(web["uuid"]) == []
    paths = [g.path for g in btrfs.qgroup_show(cloud.pool.mount, sync=True)]
    assert not [p for p in paths if web["uuid"] in p]
    assert cloud.runc_state(web["uuid"]) is None
    server = cloud.api.get(f"/ops/servers/{cloud.server}")
    assert (server["ram_committed_mb"], server["disk_committed_mb"]) == (0, 0)


def test_two_machines_from_one_image_share_its_blocks(cloud: OneNodeCloud) -> None:
    first, second = cloud.provision("cow0"), cloud.provision("cow1")
    image = cloud.qgroup(f"images/{first['image_uuid']}@final")
    assert image is not None and image.referenced > MIB  # busybox alone is ~2 MiB
    for machine in (first, second):
        group = cloud.qgroup(f"zones/{machine['uuid']}")
        assert group is not None
        assert group.referenced >= image.referenced - 64 * 1024  # each sees the image...
        assert group.exclusive < 256 * 1024  # ...and owns almost none of it
    for machine in (first, second):
        cloud.succeed(cloud.api.delete(f"/ops/machines/{machine['uuid']}"))


def test_a_corrupt_image_file_fails_its_job_and_leaves_nothing(cloud: OneNodeCloud) -> None:
    # A good image whose stored file later rots: the node's own check must catch it.
    built = build_busybox_image(cloud.workdir / "rotten", name="rotten")
    imported = cloud.sdc("--json", "image", "import", str(built.manifest_path),
                         str(built.file_path))
    assert imported.returncode == 0, imported.stderr
    image_uuid = built.manifest["uuid"]
    stored = cloud.data_dir / "images" / image_uuid
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    machine = cloud.api.post("/ops/machines", {"owner": "alice", "package": SMALL["name"],
                                               "image": image_uuid, "alias": "rotten0"})
    job = cloud.wait_job(machine["job_uuid"])
    assert job["execution"] == "failed"
    assert job["error"]["step"] == "ensure_image"
    assert job["error"]["code"] == "ImageChecksumMismatch", job["error"]
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "failed"
    assert cloud.pool_entries(image_uuid) == []
    assert cloud.pool_entries(machine["uuid"]) == []
    assert cloud.runc_state(machine["uuid"]) is None
    server = cloud.api.get(f"/ops/servers/{cloud.server}")
    assert (server["ram_inflight_mb"], server["disk_inflight_mb"]) == (0, 0)
