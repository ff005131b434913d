"""iproute2 (``ip``, ``bridge``) and persistent network namespaces.

Every function takes ``netns``: the path of a network namespace to run in (through
``nsenter --net=``; iproute2 6.1's own ``-n`` only knows /run/netns names), or None for the
agent's own. Changes go in batches (``ip -batch -``), one process for many changes: a
batch stops at its first failing line, and the error names that line (``Command failed -:N``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import HostCommandError, run

IP = "ip"
BRIDGE = "bridge"
NSENTER = "nsenter"
UNSHARE = "unshare"
UMOUNT = "umount"


def in_netns(netns: Path | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``netns`` (None: as it is)."""
    return list(argv) if netns is None else [NSENTER, f"--net={netns}", *argv]


def batch_argv(netns: Path | None, tool: str = IP) -> list[str]:
    return in_netns(netns, [tool, "-batch", "-"])


def batch(lines: Sequence[str], netns: Path | None = None) -> None:
    """Run ``ip`` commands, one a line, in one process; nothing to do for no lines."""
    if lines:
        run(batch_argv(netns), input="".join(f"{line}\n" for line in lines))


def bridge_batch(lines: Sequence[str], netns: Path | None = None) -> None:
    """Run ``bridge`` commands (fdb entries), one a line, in one process."""
    if lines:
        run(batch_argv(netns, BRIDGE), input="".join(f"{line}\n" for line in lines))


def probe_batch(lines: Sequence[str], netns: Path | None = None) -> set[int]:
    """Run ``ip -force -batch`` (every line, whatever fails) and return the numbers of the
    lines that failed (from 1): a way to ask the kernel what it supports. A failure that
    names no line (no ``ip``, no namespace) counts as every line failing."""
    try:
        run(in_netns(netns, [IP, "-force", "-batch", "-"]),
            input="".join(f"{line}\n" for line in lines))
    except HostCommandError as exc:
        return failed_lines(exc.stderr) or set(range(1, len(lines) + 1))
    return set()


def failed_lines(stderr: str) -> set[int]:
    """The line numbers of ``Command failed -:N`` in a batch's complaints."""
    failed = set()
    for line in stderr.splitlines():
        head, _, number = line.rpartition("-:")
        if head.startswith("Command failed") and number.strip().isdigit():
            failed.add(int(number))
    return failed


def links(netns: Path | None = None) -> list[dict[str, Any]]:
    """``ip -j link show``: [{ifname, mtu, master?, address, ...}]."""
    parsed: list[dict[str, Any]] = json.loads(run(in_netns(netns, [IP, "-j", "link", "show"]))
                                              or "[]")
    return parsed


def ipv4_addresses(netns: Path | None = None) -> dict[str, list[str]]:
    """{link: [IPv4 address, ...]} in the order the kernel lists them."""
    out = run(in_netns(netns, [IP, "-j", "-4", "addr", "show"]))
    return parse_ipv4_addresses(out)


def parse_ipv4_addresses(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for link in json.loads(out or "[]"):
        found[link["ifname"]] = [a["local"] for a in link.get("addr_info", [])
                                 if a.get("family") == "inet" and "local" in a]
    return found


def fdb(netns: Path | None = None) -> list[dict[str, Any]]:
    """``bridge -j fdb show``: [{mac, ifname, dst?, flags, state?, ...}]."""
    parsed: list[dict[str, Any]] = json.loads(run(in_netns(netns, [BRIDGE, "-j", "fdb", "show"]))
                                              or "[]")
    return parsed


def netns_create(path: Path, lines: Sequence[str] = ()) -> None:
    """A new network namespace kept alive by a bind mount on ``path`` (no process needed),
    with the ``ip`` commands of ``lines`` run inside it in the same process start (unshare
    mounts the namespace before it runs them: it is there even when they fail)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    if lines:
        run([UNSHARE, f"--net={path}", IP, "-batch", "-"],
            input="".join(f"{line}\n" for line in lines))
    else:
        run([UNSHARE, f"--net={path}", "true"])


def netns_delete(path: Path) -> None:
    """Unmount and remove a namespace's file; the namespace goes with its last user."""
    if is_netns(path):
        run([UMOUNT, str(path)])
    path.unlink(missing_ok=True)


def is_netns(path: Path) -> bool:
    """True when ``path`` holds a namespace (a bind mount: not the device of its directory)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False
