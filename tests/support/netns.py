"""Network namespaces for tests: make them, join two with a veth link, run a command inside.

Everything lives under :data:`NETNS_DIR` in a directory named after the owning pytest pid
(``<pid>-<name>``), so what a run killed with SIGKILL left is found and removed by
:func:`reap_stale` at the start of the next one. Nothing is made in the host's own namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.procs import pid_alive

NETNS_DIR = Path("/run/sdc-test-netns")
TOOLS = ("ip", "bridge", "nft", "nsenter", "unshare", "umount")
BUSYBOX = "/bin/busybox"
_counter = itertools.count()


def missing_host() -> str | None:
    """Why this machine cannot run the namespace tests, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, nftables)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make deps installs iproute2, nftables, util-linux)"
    if not Path(BUSYBOX).exists():
        return f"{BUSYBOX} is missing (busybox-static)"
    return None


def workdir(name: str) -> Path:
    """A fresh directory of this process for namespace files (and anything beside them)."""
    reap_stale()
    path = NETNS_DIR / f"{os.getpid()}-{name}-{next(_counter)}"
    path.mkdir(parents=True)
    return path


def create(path: Path) -> Path:
    """A network namespace kept at ``path`` (a bind mount), with loopback up."""
    path.touch()
    subprocess.run(["unshare", f"--net={path}", "true"], check=True)
    run_in(path, ["ip", "link", "set", "lo", "up"])
    return path


def delete(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)
    path.unlink(missing_ok=True)


def remove_workdir(path: Path) -> None:
    """Delete every namespace under ``path`` (their links go with them) and the directory."""
    for entry in sorted(path.rglob("*"), reverse=True):
        if entry.is_dir() and not entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.rmdir()
        else:
            delete(entry)
    shutil.rmtree(path, ignore_errors=True)


def run_in(netns: Path, argv: Sequence[str], *, check: bool = True, timeout: float = 10,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns``; ``check``: fail with the command's output."""
    done = subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True, text=True,
                          timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {netns}: exit {done.returncode}: "
                             f"{done.stdout}{done.stderr}")
    return done


def link(a: Path, name_a: str, addr_a: str, b: Path, name_b: str, addr_b: str, *,
         mtu: int = 1500) -> None:
    """A veth link from ``a`` to ``b``, up, with an address (CIDR) at each end."""
    run_in(a, ["ip", "link", "add", name_a, "mtu", str(mtu), "type", "veth", "peer", "name",
               name_b, "mtu", str(mtu), "netns", str(b)])
    for netns, name, addr in ((a, name_a, addr_a), (b, name_b, addr_b)):
        run_in(netns, ["ip", "addr", "add", addr, "dev", name])
        run_in(netns, ["ip", "link", "set", name, "up"])


def pings(netns: Path, address: str, *, source: str | None = None, size: int | None = None,
          tries: int = 1) -> bool:
    """True when ``address`` answers one ping from inside ``netns`` (busybox, 1 s wait).
    ``tries`` > 1 for the first packet over a fresh path (neighbour discovery on each hop)."""
    argv = [BUSYBOX, "ping", "-c1", "-W1"]
    if source is not None:
        argv += ["-I", source]
    if size is not None:
        argv += ["-s", str(size)]
    return any(run_in(netns, [*argv, address], check=False).returncode == 0
               for _ in range(tries))


def reap_stale() -> None:
    """Remove the namespaces of pytest processes that are gone."""
    if not NETNS_DIR.exists():
        return
    for path in NETNS_DIR.iterdir():
        pid = path.name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            remove_workdir(path)


