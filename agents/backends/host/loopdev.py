"""``truncate``/``losetup``/``mount``/``umount``: a pool on a loop file (development, tests)."""

from __future__ import annotations

from pathlib import Path

from agents.backends.host.cmd import run


def attach(image: Path) -> str:
    """Attach ``image`` to a free loop device; returns the device (/dev/loopN)."""
    return run(["losetup", "--find", "--show", str(image)]).strip()


def devices_of(image: Path) -> list[str]:
    """Loop devices backed by ``image`` (``losetup -j``: "/dev/loop0: []: (/path)")."""
    out = run(["losetup", "--associated", str(image)])
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def detach(device: str) -> None:
    run(["losetup", "--detach", device])


def mount(device: str, mountpoint: Path) -> None:
    run(["mount", device, str(mountpoint)])


def umount(mountpoint: Path) -> None:
    # retried: a container that just exited may hold the filesystem busy for a moment
    run(["umount", str(mountpoint)], retries=10, retry_delay=0.3)
