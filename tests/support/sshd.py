"""A real OpenSSH server (Debian's openssh-server) standing for a compute node: its own
config directory, generated host key and authorized keys, on a free port of 127.0.0.1."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.net import free_port, port_open
from tests.support.procs import Proc, ProcessGroup

SSHD = Path("/usr/sbin/sshd")
#: sshd run as root insists on its privilege-separation directory (the package's service
#: makes it at boot; a container never booted that way)
PRIVSEP_DIR = Path("/run/sshd")


@dataclass
class Sshd:
    name: str
    port: int
    root: Path
    user: str
    proc: Proc
    key_type: str = "ed25519"

    @property
    def host_key_path(self) -> Path:
        return host_key_path(self.root, self.key_type)

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"


def require_sshd() -> None:
    if not os.access(SSHD, os.X_OK):
        pytest.fail(f"{SSHD} is missing: install Debian's openssh-server (`make deps` does)")


def host_key_path(root: Path, key_type: str) -> Path:
    return root / f"ssh_host_{key_type}_key"


def start_sshd(procs: ProcessGroup, workdir: Path, name: str, authorized: list[str],
               key_type: str = "ed25519") -> Sshd:
    """sshd in the foreground (-D, log to stderr -e), listening on 127.0.0.1 only, letting
    in the keys of ``authorized`` (authorized_keys lines) as the user running the tests;
    its one host key is ``key_type`` (ed25519 or rsa)."""
    require_sshd()
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    root = workdir / name
    root.mkdir(parents=True)
    port = free_port()
    user = getpass.getuser()
    write_host_key(host_key_path(root, key_type), key_type)
    (root / "authorized_keys").write_text("".join(f"{line}\n" for line in authorized))
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key_path(root, key_type)}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"AllowUsers {user}",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "LogLevel VERBOSE",
        # uploads (setting a node up) go over SFTP; in sshd itself: no helper binary's path
        "Subsystem sftp internal-sftp",
        "",
    ]))
    proc = procs.spawn(name, [str(SSHD), "-D", "-e", "-f", str(config)],
                       ready=lambda: port_open(port), timeout=15)
    return Sshd(name, port, root, user, proc, key_type)


def restart_with_new_host_key(procs: ProcessGroup, sshd: Sshd) -> Sshd:
    """The node reinstalled: same address, another host key."""
    procs.stop(sshd.name)
    write_host_key(sshd.host_key_path, sshd.key_type)
    sshd.proc = procs.restart(sshd.name)
    return sshd


def write_host_key(path: Path, key_type: str = "ed25519") -> None:
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
           if key_type == "rsa" else Ed25519PrivateKey.generate())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def operator_key(path: Path, comment: str = "operator@test") -> str:
    """An operator's own key at ``path`` (0600, unencrypted, as `sdc server setup --key`
    takes it); its public authorized_keys line."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"
