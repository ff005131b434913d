"""Run commands on a node over SSH, within a time limit, the host key checked first: one
command on one connection (``run``, for ``sdc server exec``), or many commands and file
uploads on one connection (``connect``, for setting a node up)."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from headnode.ssh.errors import AuthenticationFailed, SshError, TimedOut, Unreachable
from headnode.ssh.known_hosts import KnownHosts

# paramiko logs a failed handshake with a traceback from its own thread; with no handler
# configured (the sdc command) Python would print it on stderr beside the one-line error
# this module raises. Processes that configure logging still get the record.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: what is kept of each of a command's streams (its end: errors come last)
MAX_OUTPUT = 64 * 1024
READ_CHUNK = 32 * 1024
POLL = 0.1
#: an RSA key signs with SHA-2 first: OpenSSH servers refuse "ssh-rsa" (SHA-1) by default
SIGNATURE_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}
#: after the deadline, the watchdog's margin: the read loop reports the timeout itself first
WATCHDOG_GRACE = 1.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int = 22
    user: str = "root"


@dataclass
class Output:
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class Access:
    """How the head node connects: its key, the host keys it trusts, whether a node seen
    for the first time may be trusted now."""

    key: paramiko.PKey
    known_hosts: KnownHosts
    accept_new: bool = False


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimedOut(f"no answer within {self.seconds:g} s")
        return left


def run(target: Target, command: str, access: Access, timeout: float) -> Output:
    """Run ``command`` (one shell line, already quoted) as target.user; raise an SshError
    subclass when the node cannot run it or does not finish within ``timeout`` seconds
    (logging in counts against the same limit)."""
    deadline = _Deadline(timeout)
    with _login(target, access, deadline) as conn:
        return conn.run_line(command, deadline)


#: seconds between keepalives on a connection kept for several commands (a NAT or firewall
#: between head node and node may drop a connection idle through a long step)
KEEPALIVE = 15
#: what one SFTP write sends at a time
PUT_CHUNK = 256 * 1024


def connect(target: Target, access: Access, timeout: float) -> Connection:
    """A connection to ``target`` (host key checked, logged in) for several commands and
    uploads; raise an SshError subclass when it cannot be made within ``timeout`` seconds."""
    conn = _login(target, access, _Deadline(timeout))
    conn.keep_alive()
    return conn


def _login(target: Target, access: Access, deadline: _Deadline) -> Connection:
    sock = _connect(target, deadline)
    transport = paramiko.Transport(sock)
    # What paramiko waits for without a limit of its own (a channel request the node never
    # answers) ends when the transport is closed at the deadline.
    watchdog = threading.Timer(deadline.seconds + WATCHDOG_GRACE, transport.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        _verify_host(transport, target, access, deadline)
        _authenticate(transport, target, access, deadline)
    except BaseException as exc:
        transport.close()
        sock.close()
        if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
            deadline.left()  # cut short by the watchdog: a timeout
            raise SshError(f"{target.host}:{target.port}: connection lost: {exc}") from exc
        raise
    finally:
        watchdog.cancel()
    return Connection(target, transport, sock)


class Connection:
    """One logged-in SSH connection: commands (argument lists, each quoted for the node's
    shell with shlex.join) and file uploads (SFTP). Use it as a context manager."""

    def __init__(self, target: Target, transport: paramiko.Transport,
                 sock: socket.socket) -> None:
        self.target = target
        self._transport = transport
        self._sock = sock
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.target.user}@{self.target.host}:{self.target.port}"

    def run(self, argv: list[str], timeout: float, input: bytes | None = None) -> Output:  # noqa: A002
        """Run ``argv`` (``input`` on its stdin); its exit code and the end of its output.
        A command still running after ``timeout`` seconds raises TimedOut; a request the
        node never answers ends with the whole connection closed."""
        return self.run_line(shlex.join(argv), _Deadline(timeout), input)

    def run_line(self, command: str, deadline: _Deadline,
                 input: bytes | None = None) -> Output:  # noqa: A002
        """Run ``command``, one line for the node's shell, until ``deadline``."""
        watchdog = threading.Timer(deadline.at - time.monotonic() + WATCHDOG_GRACE,
                                   self._transport.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            return _execute(self._transport, command, deadline, input)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            deadline.left()
            raise SshError(f"{self.where}: connection lost: {exc}") from exc
        finally:
            watchdog.cancel()

    def keep_alive(self) -> None:
        self._transport.set_keepalive(KEEPALIVE)

    def put(self, data_or_path: bytes | Path, remote_path: str, mode: int = 0o644,
            timeout: float = 300.0) -> int:
        """Write ``data_or_path`` (bytes, or a local file) to ``remote_path`` with ``mode``;
        returns the size written. The file is written in a new 0700 directory beside its
        place, then moved in: the node never sees a partial file, and no other user can
        open a secret before its mode is set (nor keep it open from then on)."""
        directory, _, name = remote_path.rpartition("/")
        staging = f"{directory}/.sdc-upload-{os.urandom(6).hex()}"
        tmp = f"{staging}/{name}"
        sftp = self._open_sftp(timeout)
        try:
            sftp.mkdir(staging, 0o700)
            with sftp.open(tmp, "wbx") as out:
                out.chmod(mode)
                out.set_pipelined(True)
                size = _copy(data_or_path, out)
            sftp.posix_rename(tmp, remote_path)
        except (OSError, paramiko.SSHException) as exc:
            with contextlib.suppress(OSError, paramiko.SSHException):
                sftp.remove(tmp)
            raise SshError(f"{self.where}: cannot write {remote_path}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError, paramiko.SSHException):
                sftp.rmdir(staging)
        return size

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
        self._transport.close()
        self._sock.close()

    def _open_sftp(self, timeout: float) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._transport)
            except (paramiko.SSHException, EOFError) as exc:
                raise SshError(f"{self.where}: no SFTP (is sshd's sftp Subsystem "
                               f"configured?): {exc}") from exc
            if self._sftp is None:
                raise SshError(f"{self.where}: the node refused an SFTP session")
        self._sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
        return self._sftp


def _copy(data_or_path: bytes | Path, out: paramiko.SFTPFile) -> int:
    if isinstance(data_or_path, bytes):
        out.write(data_or_path)
        return len(data_or_path)
    size = 0
    with open(data_or_path, "rb") as source:
        while chunk := source.read(PUT_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


def _connect(target: Target, deadline: _Deadline) -> socket.socket:
    where = f"{target.host}:{target.port}"
    try:
        return socket.create_connection((target.host, target.port), timeout=deadline.left())
    except TimeoutError as exc:
        raise Unreachable(f"{where}: no answer within {deadline.seconds:g} s") from exc
    except ConnectionRefusedError as exc:
        raise Unreachable(f"{where}: connection refused (is sshd running?)") from exc
    except socket.gaierror as exc:
        raise Unreachable(f"{where}: no such host ({exc.strerror})") from exc
    except OSError as exc:
        raise Unreachable(f"{where}: {exc.strerror or exc}") from exc


def _verify_host(transport: paramiko.Transport, target: Target, access: Access,
                 deadline: _Deadline) -> None:
    known = access.known_hosts.keys_for(target.host, target.port)
    if known:
        # Ask for the kind of key on record first, so that a node with several host keys
        # offers the one we can compare (any other is then a change).
        options = transport.get_security_options()
        first = [alg for k in known for alg in SIGNATURE_ALGORITHMS.get(k.get_name(),
                                                                        (k.get_name(),))]
        options.key_types = tuple(dict.fromkeys(
            [*(alg for alg in first if alg in options.key_types), *options.key_types]))
    transport.banner_timeout = transport.handshake_timeout = deadline.left()
    try:
        transport.start_client(timeout=deadline.left())
    except paramiko.SSHException as exc:
        deadline.left()  # a handshake cut short by the time limit is a timeout
        raise SshError(f"{target.host}:{target.port}: SSH handshake failed: {exc}") from exc
    access.known_hosts.check(target.host, target.port, transport.get_remote_server_key(),
                             access.accept_new)


def _authenticate(transport: paramiko.Transport, target: Target, access: Access,
                  deadline: _Deadline) -> None:
    transport.auth_timeout = deadline.left()
    try:
        transport.auth_publickey(target.user, access.key)
    except paramiko.AuthenticationException as exc:
        deadline.left()  # cut short by the watchdog: a timeout, not a refusal
        raise AuthenticationFailed(
            f"{target.user}@{target.host}:{target.port} refused the head node's key: add "
            "the line `sdc server ssh-key` prints to that user's authorized_keys") from exc
    except paramiko.SSHException as exc:
        deadline.left()
        raise SshError(f"{target.host}:{target.port}: authentication failed: {exc}") from exc


def _execute(transport: paramiko.Transport, command: str, deadline: _Deadline,
             stdin: bytes | None = None) -> Output:
    channel = transport.open_session(timeout=deadline.left())
    channel.exec_command(command)
    if stdin is not None:
        channel.sendall(stdin)
        channel.shutdown_write()
    stdout, stderr = bytearray(), bytearray()
    try:
        while True:
            ready = select.select([channel], [], [], min(POLL, deadline.left()))[0]
            if ready or channel.recv_ready() or channel.recv_stderr_ready():
                _drain(channel, stdout, stderr)
            # sshd may send the exit status before the last of the output: done only once
            # the output has ended too (EOF) and nothing is left to read
            if (channel.exit_status_ready() and (channel.eof_received or channel.closed)
                    and not (channel.recv_ready() or channel.recv_stderr_ready())):
                return Output(channel.recv_exit_status(), _text(stdout), _text(stderr))
    except TimedOut as exc:
        raise TimedOut(f"still running after {deadline.seconds:g} s") from exc
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def _drain(channel: paramiko.Channel, stdout: bytearray, stderr: bytearray) -> None:
    while channel.recv_ready():
        _keep_end(stdout, channel.recv(READ_CHUNK))
    while channel.recv_stderr_ready():
        _keep_end(stderr, channel.recv_stderr(READ_CHUNK))


def _keep_end(buffer: bytearray, chunk: bytes) -> None:
    buffer += chunk
    if len(buffer) > MAX_OUTPUT:
        del buffer[:len(buffer) - MAX_OUTPUT]


def _text(data: bytearray) -> str:
    return data.decode("utf-8", errors="replace").strip()
