"""``sdc-init``: pid 1 of a machine of an OS image (runc container), at every boot.

From the metadata socket: ``sdc:hostname`` -> the hostname, /etc/hostname and /etc/hosts;
``root_authorized_keys`` -> the default user's ``~/.ssh/authorized_keys``; ``user-data`` ->
/var/db/mdata-user-data; ``user-script`` -> /var/svc/mdata-user-script, run after sshd starts
(output and exit status in /var/svc/log/mdata-user-script.log). A key that is absent skips
its step; a socket that is absent skips them all. Then host keys made if missing, ``sshd -D
-e`` supervised (restarted if it dies), zombies reaped; on SIGTERM (the image's stop signal)
every process gets SIGTERM, then SIGKILL after a grace period, ``sync``, exit 0.

The host gives the machine its NICs and a read-only /etc/resolv.conf: networking is not ours.
Only python3-minimal is in the image (no json, shlex, shutil or dataclasses there). Messages
go to stderr, the machine's console log. For tests on the host the paths come from the
environment: ``SDC_GUEST_ROOT`` (the guest's root directory), ``MDATA_SOCKET``,
``SDC_INIT_SERVICE`` (the supervised command, split on spaces; empty for none).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time

from agents.backends.linux.mdata_client import MetadataClient, ProtocolError, socket_path
from agents.guest.bootfiles import (
    USER_SCRIPT,
    USER_SCRIPT_LOG,
    find_user,
    guest_path,
    plan_files,
    valid_hostname,
    write_files,
)

DEFAULT_USER = "debian"
SERVICE = "/usr/sbin/sshd -D -e"
KEYS = ("sdc:hostname", "root_authorized_keys", "user-data", "user-script")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGPWR)
STOP_GRACE_S = 10.0
RESTART_MAX_S = 30.0
METADATA_TIMEOUT_S = 10.0


def log(message: str) -> None:
    print(f"sdc-init: {message}", file=sys.stderr, flush=True)


def describe_exit(code: int) -> str:
    """Of os.waitstatus_to_exitcode's answer: negative for a signal."""
    return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"


def fetch_metadata(socket_path: str, keys: tuple[str, ...] = KEYS) -> dict[str, str] | None:
    """The values of ``keys`` that the host has; None when there is no metadata service."""
    if not os.path.exists(socket_path):
        log(f"no metadata socket at {socket_path}: metadata steps skipped")
        return None
    try:
        with MetadataClient(socket_path, METADATA_TIMEOUT_S) as client:
            try:
                client.negotiate()
                get = client.get
            except ProtocolError:
                get = client.get_v1  # a host that only speaks V1
            values = {key: get(key) for key in keys}
    except (OSError, ProtocolError) as e:
        log(f"metadata from {socket_path} failed: {e}: metadata steps skipped")
        return None
    return {key: value for key, value in values.items() if value is not None}


def hostkeys_argv(root: str) -> list[str]:
    return ["ssh-keygen", "-A"] + ([] if root == "/" else ["-f", root])


def needs_hostkeys(root: str) -> bool:
    ssh = guest_path(root, "etc/ssh")
    return os.path.isdir(ssh) and not any(n.startswith("ssh_host_") for n in os.listdir(ssh))


class Init:
    """The supervisor: the service (restarted with a growing delay when it dies), the
    user-script (its exit status logged), every other child reaped."""

    def __init__(self, root: str, service: list[str]) -> None:
        self.root = root
        self.service = service
        self.service_pid: int | None = None
        self.restart_at: float | None = None
        self.restart_delay = 1.0
        self.script_pid: int | None = None
        self.children: set[int] = set()
        self.stopping = False
        self.env = {**os.environ, "PATH": os.environ.get("PATH", PATH),
                    "HOME": os.environ.get("HOME", "/root")}

    def spawn(self, argv: list[str], output: str | None = None) -> int | None:
        actions = [] if output is None else [
            (os.POSIX_SPAWN_OPEN, 1, output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2)]
        try:
            pid = os.posix_spawnp(argv[0], argv, self.env, file_actions=actions, setsid=True,
                                  setsigdef=STOP_SIGNALS + (signal.SIGCHLD,))
        except OSError as e:
            log(f"cannot run {argv[0]}: {e}")
            return None
        self.children.add(pid)
        return pid

    def start_service(self) -> None:
        self.restart_at = None
        if self.service:
            self.service_pid = self.spawn(self.service)
            if self.service_pid is None:
                self.schedule_restart()

    def schedule_restart(self) -> None:
        self.restart_at = time.monotonic() + self.restart_delay
        self.restart_delay = min(self.restart_delay * 2, RESTART_MAX_S)

    def run_user_script(self) -> None:
        script = guest_path(self.root, USER_SCRIPT)
        with open(script, "rb") as fh:
            shebang = fh.read(2) == b"#!"
        self.script_pid = self.spawn([script] if shebang else ["/bin/sh", script],
                                     guest_path(self.root, USER_SCRIPT_LOG))
        if self.script_pid is not None:
            log(f"user-script started (pid {self.script_pid})")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if pid == self.script_pid:
                self.script_pid = None
                self.note_script_exit(code)
            elif pid == self.service_pid:
                self.service_pid = None
                if not self.stopping:
                    log(f"{self.service[0]} {describe_exit(code)}: restarting")
                    self.schedule_restart()

    def note_script_exit(self, code: int) -> None:
        message = f"user-script {describe_exit(code)}"
        log(message)
        try:
            with open(guest_path(self.root, USER_SCRIPT_LOG), "a") as out:
                out.write(f"sdc-init: {message}\n")
        except OSError as e:
            log(f"cannot append to the user-script log: {e}")

    def loop(self, wakeup: int) -> None:
        """Until a stop signal: reap at every SIGCHLD, restart the service when due."""
        while not self.stopping:
            timeout = None if self.restart_at is None else max(
                0.0, self.restart_at - time.monotonic())
            if select.select([wakeup], [], [], timeout)[0]:
                signums = os.read(wakeup, 512)
                self.stopping = any(s in signums for s in STOP_SIGNALS)
            self.reap()
            if not self.stopping and self.restart_at and time.monotonic() >= self.restart_at:
                self.start_service()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to every process (as pid 1, every one in the machine; else our children's
        sessions), SIGKILL to what is left after ``grace``, then sync."""
        log("stopping")
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
        if self.alive():
            self.signal_all(signal.SIGKILL)
            while self.alive():
                time.sleep(0.05)
                self.reap()
        os.sync()

    def alive(self) -> bool:
        """Any child left (as pid 1, every orphan of the machine is one)."""
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def signal_all(self, signum: int) -> None:
        if os.getpid() == 1:
            os.kill(-1, signum)
            return
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)


def set_hostname(root: str, metadata: dict[str, str]) -> None:
    """The kernel's hostname, only when the guest root is the running system's."""
    name = metadata.get("sdc:hostname", "").strip()
    if root == "/" and valid_hostname(name) and socket.gethostname() != name:
        try:
            socket.sethostname(name)
        except OSError as e:  # without CAP_SYS_ADMIN: runc set it from the alias already
            log(f"sethostname {name}: {e}")


def read_text(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def boot(root: str, socket_path: str, user_name: str) -> dict[str, str] | None:
    """The boot steps before any process starts; the metadata fetched, None without it."""
    metadata = fetch_metadata(socket_path)
    if metadata is not None:
        try:
            user = find_user(read_text(guest_path(root, "etc/passwd")), user_name)
            hosts = read_text(guest_path(root, "etc/hosts"))
            set_hostname(root, metadata)
            for failure in write_files(root, plan_files(metadata, user, hosts)):
                log(f"cannot write {failure}")
            log(f"metadata applied: {', '.join(sorted(metadata)) or 'no keys'}")
        except OSError as e:
            log(f"applying metadata failed: {e}")
    os.makedirs(guest_path(root, "run/sshd"), mode=0o755, exist_ok=True)
    return metadata


def main() -> int:
    root = os.environ.get("SDC_GUEST_ROOT", "/")
    service = os.environ.get("SDC_INIT_SERVICE", SERVICE).split()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for signum in (*STOP_SIGNALS, signal.SIGCHLD):
        signal.signal(signum, lambda *_: None)  # handled in the loop, via the wakeup pipe
    signal.set_wakeup_fd(write_end)
    metadata = boot(root, socket_path(),
                    os.environ.get("SDC_DEFAULT_USER", DEFAULT_USER))
    init = Init(root, service)
    if needs_hostkeys(root):
        pid = init.spawn(hostkeys_argv(root))
        while pid in init.children:
            time.sleep(0.05)
            init.reap()
    init.start_service()
    if metadata is not None and "user-script" in metadata:
        init.run_user_script()
    init.loop(read_end)
    init.stop(float(os.environ.get("SDC_INIT_STOP_GRACE", STOP_GRACE_S)))
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
