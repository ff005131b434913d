"""The floor of a Linux provision: what the kernel must do anyway for one machine.

One round = a writable btrfs snapshot of the image's ``@final`` + ``runc run --detach`` of a
bundle on it (the same config the linux backend writes), timed from before the snapshot to
``runc run`` returning with the container running. With ``node_netns`` the round also gives
the machine one NIC by hand, as few processes as it takes: a persistent network namespace
(``unshare --net=FILE``), a veth pair made in the node's namespace with its peer put straight
into the machine's and its host end on a bridge (one ``ip -batch``), the address, loopback
and default route inside (one ``ip -batch``), one nft chain of the anti-spoofing rules and its
map element (one ``nft -f``). Nothing else: no API, job, queue or agent.
bench/linux_provision.py imports :func:`measure_floor` to print it beside the end-to-end
figure; run alone, this script makes its own loop-device pool and busybox image and also
times ``LinuxBackend.machine_create`` (the agent's own work on top of the floor).

    .venv/bin/python bench/linux_floor.py [--rounds 20]       (as root)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import pool as loop_pool  # noqa: E402
from agents.backends import oci  # noqa: E402
from agents.backends.host import btrfs, runc  # noqa: E402
from agents.backends.host.cmd import HostCommandError, run  # noqa: E402
from agents.backends.linux import LinuxBackend  # noqa: E402
from agents.backends.linux.storage import BtrfsStorage  # noqa: E402

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "hostname", "cat", "echo")


def image_final_path(pool: Path, image_uuid: str) -> Path:
    """Where the linux backend (btrfs driver) keeps an imported image's read-only snapshot."""
    return pool / "images" / f"{image_uuid}@final"


FLOOR_BRIDGE = "floorbr0"
FLOOR_TABLE = "bridge sdcfloor"


def _in(netns: Path | None, argv: list[str]) -> list[str]:
    return argv if netns is None else ["nsenter", f"--net={netns}", *argv]


def _batch(netns: Path | None, tool: str, lines: list[str]) -> None:
    run(_in(netns, [tool, "-batch" if tool != "nft" else "-f", "-"]),
        input="".join(f"{line}\n" for line in lines))


def _floor_network(node_netns: Path) -> None:
    """The bridge and the filter table the rounds' NICs use (made once, not timed)."""
    _batch(node_netns, "ip", [f"link add {FLOOR_BRIDGE} type bridge",
                              f"link set {FLOOR_BRIDGE} up"])
    _batch(node_netns, "nft", [
        f"add table {FLOOR_TABLE}", f"add map {FLOOR_TABLE} nics {{ type ifname : verdict; }}",
        f"add chain {FLOOR_TABLE} forward {{ type filter hook forward priority -200; }}",
        f"add rule {FLOOR_TABLE} forward iifname vmap @nics"])


def _remove_floor_network(node_netns: Path) -> None:
    with contextlib.suppress(HostCommandError):
        run(_in(node_netns, ["ip", "link", "del", FLOOR_BRIDGE]))
    with contextlib.suppress(HostCommandError):
        run(_in(node_netns, ["nft", "delete", "table", *FLOOR_TABLE.split()]))


def _nic_by_hand(node_netns: Path, netns: Path, i: int) -> None:
    """One NIC, the way the agent's plug does it, in four processes."""
    host = i + 10  # clear of the subnet's own address
    mac, veth = f"02:00:00:00:{host >> 8:02x}:{host & 0xff:02x}", f"vfloor{i}"
    address = f"10.250.{host >> 8}.{host & 0xff}"
    netns.touch()
    run(["unshare", f"--net={netns}", "true"])
    _batch(node_netns, "ip", [
        f"link add {veth} type veth peer name net0 address {mac} netns {netns}",
        f"link set {veth} master {FLOOR_BRIDGE} up"])
    _batch(netns, "ip", ["link set lo up", "link set net0 up",
                         f"addr add {address}/16 dev net0", "route add default via 10.250.255.254"])
    chain = f"nic_{i}"
    _batch(node_netns, "nft", [
        f"add chain {FLOOR_TABLE} {chain}",
        f"add rule {FLOOR_TABLE} {chain} ether saddr != {mac} drop",
        f"add rule {FLOOR_TABLE} {chain} arp saddr ip != {address} drop",
        f"add rule {FLOOR_TABLE} {chain} ip saddr != {address} drop",
        f'add element {FLOOR_TABLE} nics {{ "{veth}" : jump {chain} }}'])


def _remove_nic_by_hand(node_netns: Path, netns: Path, i: int) -> None:
    with contextlib.suppress(HostCommandError):
        run(["umount", str(netns)])
    netns.unlink(missing_ok=True)
    with contextlib.suppress(HostCommandError):
        run(_in(node_netns, ["ip", "link", "del", f"vfloor{i}"]))


def measure_floor(pool: Path, image_final: Path, runc_root: Path, rounds: int = 20,
                  ram_mb: int = 256, disk_mb: int = 1024,
                  node_netns: Path | None = None, init: dict[str, Any] | None = None,
                  after_run: Callable[[], None] | None = None) -> list[float]:
    """Seconds per round (snapshot + runc run --detach, and with ``node_netns`` one NIC by
    hand); everything made is removed after. ``init``: the image's (None: the node's
    default); ``after_run``: called after each round's ``runc run``, untimed, while the
    container still runs (bench/linux_ssh.py awaits its sshd there)."""
    work = pool / ".sdc" / "floor"
    work.mkdir(parents=True, exist_ok=True)
    samples, made = [], []
    if node_netns is not None:
        _floor_network(node_netns)
    try:
        # all rounds first, cleanup after: as when a node takes many machines, and a
        # deletion's transaction commit does not land inside the next round's timing
        for i in range(rounds):
            name = f"floor-{uuid.uuid4()}"
            root, bundle = pool / "zones" / name, work / name
            netns = work / f"{name}.netns" if node_netns is not None else None
            bundle.mkdir()
            made.append((i, name, root, bundle, netns))
            record = {"alias": "floor", "ram_mb": ram_mb, "disk_mb": disk_mb, "cpu_cap": 0,
                      "max_lwps": 4000, "init": init}
            (bundle / "config.json").write_text(json.dumps(oci.config(record, root,
                                                                      netns=netns)))
            started = time.perf_counter()
            btrfs.subvolume_snapshot(image_final, root)
            btrfs.qgroup_limit(root, disk_mb << 20)
            if node_netns is not None and netns is not None:
                _nic_by_hand(node_netns, netns, i)
            runc.run_detached(runc_root, bundle, name, bundle / "console.log")
            samples.append(time.perf_counter() - started)
            if after_run is not None:
                after_run()
    finally:
        for i, name, root, bundle, netns in made:
            with contextlib.suppress(HostCommandError):
                runc.delete(runc_root, name, force=True)
            if node_netns is not None and netns is not None:
                _remove_nic_by_hand(node_netns, netns, i)
            if root.exists():
                btrfs.subvolume_delete(root)
            shutil.rmtree(bundle, ignore_errors=True)
        if node_netns is not None:
            _remove_floor_network(node_netns)
    return samples


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(samples), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1)}


def _busybox_image(pool: Path, image_uuid: str) -> Path:
    """An image made in place, the way image_ensure_present leaves one."""
    (pool / "images").mkdir(exist_ok=True)
    (pool / "zones").mkdir(exist_ok=True)
    origin = pool / "images" / image_uuid
    btrfs.subvolume_create(origin)
    for name in ("bin", "dev", "etc", "proc", "sys", "tmp", "root"):
        (origin / name).mkdir()
    shutil.copy2(BUSYBOX, origin / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", origin / "bin" / applet)
    final = image_final_path(pool, image_uuid)
    btrfs.subvolume_snapshot(origin, final, readonly=True)
    return final


def _backend_create(pool: Path, runc_root: Path, image_uuid: str, rounds: int) -> list[float]:
    backend = LinuxBackend(str(uuid.uuid4()), "bench", BtrfsStorage(pool), runc_root=runc_root)
    samples = []
    try:
        for _ in range(rounds):
            spec = {"uuid": str(uuid.uuid4()), "alias": "bench", "owner_uuid": str(uuid.uuid4()),
                    "image_uuid": image_uuid, "ram_mb": 256, "disk_mb": 1024, "cpu_cap": 0,
                    "vcpus": 1, "max_lwps": 4000}
            started = time.perf_counter()
            backend.machine_create(spec)
            samples.append(time.perf_counter() - started)
    finally:
        for machine in backend.list_machines():
            backend.machine_destroy(machine["uuid"])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("linux_floor: needs root (loop device, btrfs, runc)")
    workdir = Path(tempfile.mkdtemp(prefix="sdc-floor-", dir="/var/tmp"))
    image, mount, runc_root = workdir / "pool.img", workdir / "mnt", workdir / "runc"
    try:
        loop_pool.create(image, 2 << 30, mount)
        image_uuid = str(uuid.uuid4())
        final = _busybox_image(mount, image_uuid)
        measure_floor(mount, final, runc_root, rounds=2)  # warm caches
        floor = summary(measure_floor(mount, final, runc_root, args.rounds))
        agent = summary(_backend_create(mount, runc_root, image_uuid, args.rounds))
        print(f"floor (btrfs snapshot + runc run --detach): p50 {floor['p50_ms']} ms, "
              f"p99 {floor['p99_ms']} ms over {floor['n']}")
        print(f"LinuxBackend.machine_create:               p50 {agent['p50_ms']} ms, "
              f"p99 {agent['p99_ms']} ms over {agent['n']}  "
              f"(x{agent['p50_ms'] / floor['p50_ms']:.2f} of the floor)")
    finally:
        loop_pool.destroy(image, mount, runc_root)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
