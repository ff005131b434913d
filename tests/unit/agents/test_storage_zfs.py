"""The OpenZFS storage driver of the linux backend, by contract: this machine has no ZFS, so
the tests check the zfs argument lists it sends and parse recorded ``zfs list -Hp`` outputs
(data/zfs/). Layout as on SmartOS: <pool>/<image>@final, one clone per machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.backends.host.cmd import use_runner
from agents.backends.linux import make_storage
from agents.backends.linux.storage import Snapshot, ZfsStorage
from agents.config import load_settings
from tests.unit.agents.recorded import RecordedHost

DATA = Path(__file__).parent / "data" / "zfs"
POOL = "tank/sdc"
IMAGE = "7b1a5c6e-0000-4000-8000-00000000000a"
VM = "3c4d5e6f-0000-4000-8000-000000000001"
LIST = ("zfs", "list", "-Hp")


def data(name: str) -> str:
    return (DATA / name).read_text()


def storage(tmp_path: Path) -> ZfsStorage:
    return ZfsStorage(POOL, tmp_path / "state")


def test_settings_select_the_zfs_driver(tmp_path: Path) -> None:
    settings = load_settings(backend="linux", storage="zfs", pool=POOL, data_dir=tmp_path)
    driver = make_storage(settings)
    assert isinstance(driver, ZfsStorage) and driver.dataset == POOL


def test_image_ids_are_the_datasets_with_a_final_snapshot(tmp_path: Path) -> None:
    # the machine VM (a clone of IMAGE@final) has a snapshot its user named "final": it is
    # still a machine, not an image
    host = RecordedHost({(*LIST, "-t", "filesystem,snapshot", "-o", "name,origin", "-r", "-d",
                          "2", POOL): data("list-images-r-d2.txt")})
    with use_runner(host):
        assert storage(tmp_path).image_ids() == [IMAGE, "9f0e2d1c-0000-4000-8000-00000000000b"]


def test_clone_with_quota_then_snapshots_rollback_destroy(tmp_path: Path) -> None:
    machine = f"{POOL}/{VM}"
    host = RecordedHost({
        (*LIST, "-t", "all", "-o", "name", machine): (1, f"cannot open '{machine}': "
                                                          "dataset does not exist"),
        ("zfs", "clone", "-o", "quota=1073741824", f"{POOL}/{IMAGE}@final", machine): "",
        (*LIST, "-t", "filesystem", "-o", "name,mountpoint", machine): data("list-mountpoint.txt"),
        ("zfs", "set", "quota=2147483648", machine): "",
        ("zfs", "snapshot", f"{machine}@before"): "",
        ("zfs", "rollback", "-r", f"{machine}@before"): "",
        ("zfs", "destroy", f"{machine}@before"): "",
    })
    driver = storage(tmp_path)
    with use_runner(host):
        root = driver.machine_clone(IMAGE, VM, 1 << 30)
        driver.set_quota(VM, 2 << 30)
        driver.snapshot_create(VM, "before")
        driver.snapshot_rollback(VM, "before", 2 << 30)
        driver.snapshot_delete(VM, "before")
    assert root == Path(f"/tank/sdc/{VM}")
    assert [c[1] for c in host.calls] == ["list", "clone", "list", "set", "snapshot",
                                          "rollback", "destroy"]


def test_image_import_creates_then_seals(tmp_path: Path) -> None:
    image = f"{POOL}/{IMAGE}"
    host = RecordedHost({
        (*LIST, "-t", "all", "-o", "name", image): (1, f"cannot open '{image}': dataset does "
                                                        "not exist"),
        ("zfs", "create", image): "",
        (*LIST, "-t", "filesystem", "-o", "name,mountpoint", image): f"{image}\t/{image}\n",
        ("zfs", "snapshot", f"{image}@final"): "",
    })
    driver = storage(tmp_path)
    with use_runner(host):
        assert driver.image_begin(IMAGE) == Path(f"/{image}")
        driver.image_seal(IMAGE)
    assert host.calls[-1] == ("zfs", "snapshot", f"{image}@final")


def test_snapshot_list_usage_and_pool_figures(tmp_path: Path) -> None:
    host = RecordedHost({
        (*LIST, "-t", "snapshot", "-o", "name,creation,used,createtxg", "-d", "1",
         f"{POOL}/{VM}"): data("list-machine-snapshots.txt"),
        (*LIST, "-t", "filesystem", "-o", "name,used", "-r", "-d", "1", POOL):
            data("list-children.txt"),
        (*LIST, "-t", "filesystem", "-o", "name,used,available", POOL): data("list-pool.txt"),
    })
    driver = storage(tmp_path)
    with use_runner(host):
        assert driver.snapshot_list(VM) == [
            Snapshot("before", 1732176000.0, 2097152, 1041),
            Snapshot("after", 1732181400.0, 65536, 1107),
        ]
        assert driver.usage() == {VM: 73400320, IMAGE: 381681664}
        assert driver.pool_usage() == (5368709120 + 102005473280, 5368709120)


def test_a_failing_zfs_command_carries_its_stderr(tmp_path: Path) -> None:
    from agents.backends.host.cmd import HostCommandError

    host = RecordedHost({("zfs", "set", "quota=1024", f"{POOL}/{VM}"):
                         (1, "cannot set property: size is less than current used")})
    with use_runner(host), pytest.raises(HostCommandError) as exc:
        storage(tmp_path).set_quota(VM, 1024)
    assert exc.value.code == "HostCommandFailed"
    assert "size is less than current used" in exc.value.message
