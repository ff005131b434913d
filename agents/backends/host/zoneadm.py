"""illumos ``zoneadm`` for what vmadm leaves to it (the SmartOS backend's destroy)."""

from __future__ import annotations

from agents.backends.host.cmd import HostCommandError, run

ZONEADM = "zoneadm"


def unmount(uuid: str) -> str | None:
    """``zoneadm -z UUID unmount``: vmadm delete fails on a zone left mounted (by an
    interrupted image or admin operation). Most zones are not mounted, and then zoneadm
    fails; that is expected, so the failure comes back as its message instead of an error
    (sdc-cn-agent's machine_destroy logs it and deletes all the same)."""
    try:
        run([ZONEADM, "-z", uuid, "unmount"])
    except HostCommandError as exc:
        return exc.stderr or str(exc)
    return None
