"""``sdc server setup --key FILE``: log in to a node once with the operator's own key and add
the head node's public key to the authorized_keys of the user we log in as, so that the
setup job (and every later one) logs in with the head node's key. The operator's private
key never leaves this command: it goes through no API and no job.

Which file to add to is the one the node's sshd reads for that user: its
``AuthorizedKeysFile`` (sshd may run with a config of its own, ``-f``), found on the node by
a small script (standard library only: the node has no agent yet)."""

from __future__ import annotations

from pathlib import Path

import paramiko

from headnode.ssh.client import Access, Target, connect
from headnode.ssh.errors import AuthenticationFailed, SshError
from headnode.ssh.keys import head_key, public_line
from headnode.ssh.known_hosts import KnownHosts

TIMEOUT = 60.0

#: Run on the node as ``python3 - LINE`` (this text on stdin): adds LINE to the user's
#: authorized_keys if no line there has its key yet; prints the file's path.
ADD_KEY_SCRIPT = r'''
import os, pwd, sys

line = sys.argv[1]
key = line.split()[1]


def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def sshd_config():
    """The -f config of the sshd this session came through, else the system's."""
    pid = os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                # sshd rewrites its title ("sshd: /usr/sbin/sshd -D -f FILE [listener]"):
                # its arguments may be one string
                words = cmdline.read().replace(b"\0", b" ").decode(errors="replace").split()
            nxt = parent(pid)
        except OSError:
            break
        if any(os.path.basename(w).startswith("sshd") for w in words[:1]) \
                and "-f" in words[:-1]:
            return words[words.index("-f") + 1]
        pid = nxt
    return "/etc/ssh/sshd_config"


def keys_file(config, user):
    names = [".ssh/authorized_keys"]
    try:
        with open(config) as text:
            for raw in text:
                words = raw.split()
                if len(words) > 1 and words[0].lower() == "authorizedkeysfile":
                    names = words[1:]
                    break
    except OSError:
        pass
    path = names[0].replace("%%", "\0").replace("%h", user.pw_dir) \
        .replace("%u", user.pw_name).replace("%U", str(user.pw_uid)).replace("\0", "%")
    return path if path.startswith("/") else os.path.join(user.pw_dir, path)


user = pwd.getpwuid(os.getuid())
path = keys_file(sshd_config(), user)
os.umask(0o077)
os.makedirs(os.path.dirname(path), exist_ok=True)
try:
    with open(path) as existing:
        known = any(key in entry.split() for entry in existing)
except FileNotFoundError:
    known = False
if not known:
    with open(path, "a") as out:
        out.write(line + "\n")
print(path)
'''


class KeyInstallError(Exception):
    """Said to the operator as it is (no secret in it)."""


def load_operator_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise KeyInstallError(f"{path} is encrypted with a passphrase: give a key without "
                              "one, or add the head node's key to the node yourself (`sdc "
                              "server ssh-key` prints it)") from None
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise KeyInstallError(f"{path}: not a private key paramiko can read "
                              f"({type(exc).__name__})") from None


def install_head_key(target: Target, key_file: Path, data_dir: Path,
                     accept_new: bool) -> str:
    """Add the head node's public key for ``target.user`` on the node, logging in with the
    operator's key at ``key_file``; the authorized_keys path it is in."""
    line = public_line(head_key(data_dir))
    access = Access(load_operator_key(key_file), KnownHosts.of(data_dir), accept_new)
    try:
        with connect(target, access, TIMEOUT) as conn:
            out = conn.run(["python3", "-", line], TIMEOUT, input=ADD_KEY_SCRIPT.encode())
    except AuthenticationFailed:
        raise KeyInstallError(f"{target.user}@{target.host}:{target.port} refused the key "
                              f"{key_file} (authentication failed)") from None
    except SshError as exc:
        raise KeyInstallError(str(exc)) from None
    if out.exit_code != 0:
        raise KeyInstallError(f"{target.host}: adding the head node's key failed (exit "
                              f"{out.exit_code}): {out.stderr[-500:]}")
    return out.stdout.strip()
