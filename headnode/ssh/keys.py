"""The head node's own SSH key (ed25519): SDC_DATA_DIR/ssh/id_ed25519, made 0600 on first
use; its public line is what a node's authorized_keys needs."""

from __future__ import annotations

import socket
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from headnode.ssh.errors import SshError
from sdccommon import private_files

KEY_NAME = "id_ed25519"
# Group or others able to read or write the key (OpenSSH refuses such a key too).
TOO_OPEN = 0o077


def ssh_dir(data_dir: Path) -> Path:
    """SDC_DATA_DIR/ssh, made 0700 on first use."""
    path = Path(data_dir) / "ssh"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def head_key_path(data_dir: Path) -> Path:
    return ssh_dir(data_dir) / KEY_NAME


def head_key(data_dir: Path) -> paramiko.Ed25519Key:
    """The head node's private key, made on first use."""
    path = head_key_path(data_dir)
    if not path.exists():
        _write_new_key(path)
    mode = path.stat().st_mode & 0o777
    if mode & TOO_OPEN:
        raise SshError(f"{path} has mode {mode:04o}: others may read it; "
                       f"`chmod 600 {path}` before using it")
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def public_line(key: paramiko.PKey) -> str:
    """The key as one authorized_keys line, named after this head node."""
    return f"{key.get_name()} {key.get_base64()} sdc-headnode@{socket.gethostname()}"


def fingerprint(key: paramiko.PKey) -> str:
    """As OpenSSH shows it: the key type and its SHA256 fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"


def _write_new_key(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())
    # two commands starting at once agree on the first key linked
    private_files.create_once(path, pem)
