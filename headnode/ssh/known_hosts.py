"""The node host keys the head node trusts: SDC_DATA_DIR/ssh/known_hosts (OpenSSH's format,
0600). A key is added only on an explicit first contact; a host that has keys there must
offer one of them."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import paramiko

from headnode.ssh.errors import HostKeyChanged, HostKeyUnknown
from headnode.ssh.keys import fingerprint, ssh_dir

KNOWN_HOSTS = "known_hosts"


def host_entry_name(host: str, port: int) -> str:
    """How known_hosts names host:port (OpenSSH's form: bare on port 22, else [host]:port)."""
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    """The known_hosts file; safe to share between the threads of one command (adds are
    serialised) and between processes (each add appends one line under a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, data_dir: Path) -> KnownHosts:
        return cls(ssh_dir(data_dir) / KNOWN_HOSTS)

    def keys_for(self, host: str, port: int) -> list[paramiko.PKey]:
        if not self.path.exists():
            return []
        found = paramiko.HostKeys(str(self.path)).lookup(host_entry_name(host, port))
        return list(found.values()) if found else []

    def check(self, host: str, port: int, offered: paramiko.PKey, accept_new: bool) -> None:
        """Return if ``offered`` is a key known for host:port, or (with ``accept_new``) the
        host has none yet and it is now recorded; raise otherwise."""
        name = host_entry_name(host, port)
        with self._lock:
            known = self.keys_for(host, port)
            if any(k.asbytes() == offered.asbytes() for k in known):
                return
            if known:
                raise HostKeyChanged(
                    f"host key of {name} changed: known_hosts has "
                    f"{', '.join(fingerprint(k) for k in known)}, the host offered "
                    f"{fingerprint(offered)}; if the node was reinstalled, remove its line "
                    f"from {self.path} and run again with --accept-new-host-key")
            if not accept_new:
                raise HostKeyUnknown(
                    f"{name} is not in {self.path} (it offered {fingerprint(offered)}): check "
                    "the fingerprint on the node, then run again with --accept-new-host-key")
            self._append(name, offered)

    def _append(self, name: str, key: paramiko.PKey) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a file made by hand with a looser mode is tightened
        with os.fdopen(fd, "a") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            out.write(f"{name} {key.get_name()} {key.get_base64()}\n")
