"""A btrfs pool in a loop file, for development nodes and tests (``sdc agent pool``).

A production node gives the agent a real device's filesystem as SDC_POOL; this makes one out
of a sparse file: truncate, attach a loop device, mkfs.btrfs, mount, enable quotas (qgroups
are what enforce the machines' disk quotas).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from agents.backends.host import btrfs, ip, loopdev, runc
from agents.backends.host.cmd import HostCommandError
from agents.backends.linux.runtime import netns_dir


def create(image: Path, size_bytes: int, mountpoint: Path) -> str:
    """Make the pool; returns the loop device. The file must not exist yet."""
    if image.exists():
        raise FileExistsError(f"{image} exists already (sdc agent pool destroy removes it)")
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "xb") as fh:
        fh.truncate(size_bytes)
    device = ""
    try:
        device = loopdev.attach(image)
        btrfs.mkfs(device)
        mountpoint.mkdir(parents=True, exist_ok=True)
        loopdev.mount(device, mountpoint)
        btrfs.quota_enable(mountpoint)
    except BaseException:
        destroy(image, mountpoint)
        raise
    return device


def destroy(image: Path, mountpoint: Path | None, runc_root: Path | None = None) -> None:
    """Undo :func:`create`: remove the containers of ``runc_root`` (their root filesystems are
    in the pool) and their network namespaces (bind mounts beside it), unmount, detach every
    loop device of ``image`` and delete it."""
    if runc_root is not None and runc_root.exists():
        for container in runc.list_containers(runc_root):
            with contextlib.suppress(HostCommandError):
                runc.delete(runc_root, container["id"], force=True)
    if runc_root is not None and netns_dir(runc_root).is_dir():
        for space in netns_dir(runc_root).iterdir():
            with contextlib.suppress(HostCommandError):
                ip.netns_delete(space)
    if mountpoint is not None and os.path.ismount(mountpoint):
        loopdev.umount(mountpoint)
    if image.exists():
        for device in loopdev.devices_of(image):
            loopdev.detach(device)
        image.unlink()


def parse_size(text: str) -> int:
    """"20G", "512M", "2048" (bytes) -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
