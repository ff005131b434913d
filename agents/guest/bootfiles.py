"""What ``sdc-init`` writes into a guest's root at boot, from its metadata: pure functions of
the metadata and the files already there, and the writer. Standard library only (python3-minimal:
no dataclasses), as :mod:`agents.guest.sdc_init`.

``plan_files``: ``sdc:hostname`` -> /etc/hostname and /etc/hosts; ``root_authorized_keys`` ->
the default user's ``~/.ssh/authorized_keys``; ``user-data`` -> /var/db/mdata-user-data;
``user-script`` -> /var/svc/mdata-user-script. A key that is absent writes nothing.
"""

from __future__ import annotations

import os
from typing import NamedTuple

USER_DATA = "var/db/mdata-user-data"
USER_SCRIPT = "var/svc/mdata-user-script"
USER_SCRIPT_LOG = "var/svc/log/mdata-user-script.log"


class User(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


class GuestFile(NamedTuple):
    """A file (``content`` bytes) or directory (``content`` None) to put at ``path``,
    relative to the guest's root."""

    path: str
    content: bytes | None
    mode: int
    uid: int = 0
    gid: int = 0


def guest_path(root: str, relative: str) -> str:
    return os.path.join(root, relative.lstrip("/"))


def find_user(passwd: str, name: str) -> User | None:
    """The entry of ``name`` in the text of an /etc/passwd."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name and fields[2].isdigit() and fields[3].isdigit():
            return User(name, int(fields[2]), int(fields[3]), fields[5])
    return None


def valid_hostname(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels)


def hosts_content(existing: str, hostname: str) -> str:
    """/etc/hosts with the hostname on 127.0.1.1 (Debian's way), other lines kept."""
    kept = [line for line in existing.splitlines()
            if not line.split() or line.split()[0] != "127.0.1.1"]
    if not any(line.split()[:1] == ["127.0.0.1"] for line in kept):
        kept.insert(0, "127.0.0.1\tlocalhost")
    names = hostname if "." not in hostname else f"{hostname} {hostname.split('.')[0]}"
    return "\n".join([*kept, f"127.0.1.1\t{names}"]) + "\n"


def plan_files(metadata: dict[str, str], user: User | None, hosts: str) -> list[GuestFile]:
    """What to write for ``metadata`` (the keys present), ``user`` the default user and
    ``hosts`` the current /etc/hosts; directories before their files."""
    files: list[GuestFile] = []
    hostname = metadata.get("sdc:hostname", "").strip()
    if valid_hostname(hostname):
        files.append(GuestFile("etc/hostname", f"{hostname}\n".encode(), 0o644))
        files.append(GuestFile("etc/hosts", hosts_content(hosts, hostname).encode(), 0o644))
    keys = metadata.get("root_authorized_keys")
    if keys is not None and user is not None:
        ssh = os.path.join(user.home.lstrip("/"), ".ssh")
        text = keys if keys.endswith("\n") or not keys else keys + "\n"
        files.append(GuestFile(ssh, None, 0o700, user.uid, user.gid))
        files.append(GuestFile(os.path.join(ssh, "authorized_keys"), text.encode(), 0o600,
                               user.uid, user.gid))
    if "user-data" in metadata:
        files.append(GuestFile("var/db", None, 0o755))
        files.append(GuestFile(USER_DATA, metadata["user-data"].encode(), 0o600))
    if "user-script" in metadata:
        files.append(GuestFile("var/svc/log", None, 0o755))
        files.append(GuestFile(USER_SCRIPT, metadata["user-script"].encode(), 0o700))
    return files


def write_files(root: str, files: list[GuestFile]) -> list[str]:
    """Each file replaced whole (a new inode renamed over it, so a link the guest's user put
    there is replaced, never followed), each directory made or fixed, with owner and mode.
    One that fails does not stop the others; the failures, one line each."""
    failures = []
    for item in files:
        try:
            write_one(guest_path(root, item.path), item)
        except OSError as e:
            failures.append(f"/{item.path}: {e}")
    return failures


def write_one(path: str, item: GuestFile) -> None:
    if item.content is None:
        if os.path.islink(path):
            os.unlink(path)
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        temp = f"{path}.sdc-init"
        if os.path.lexists(temp):
            os.unlink(temp)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(item.content)
        os.rename(temp, path)
    os.chown(path, item.uid, item.gid, follow_symlinks=False)
    os.chmod(path, item.mode)
