"""Run one command on one node over SSH, within a time limit, the host key checked first."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass

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
    subclass when the node cannot run it or does not finish within ``timeout`` seconds."""
    deadline = _Deadline(timeout)
    sock = _connect(target, deadline)
    transport = paramiko.Transport(sock)
    # What paramiko waits for without a limit of its own (a channel request the node never
    # answers) ends when the transport is closed at the deadline.
    watchdog = threading.Timer(timeout + WATCHDOG_GRACE, transport.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        _verify_host(transport, target, access, deadline)
        _authenticate(transport, target, access, deadline)
        return _execute(transport, command, deadline)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if deadline.expired():
            raise TimedOut(f"no answer within {timeout:g} s") from exc
        raise
    finally:
        watchdog.cancel()
        transport.close()
        sock.close()


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


def _execute(transport: paramiko.Transport, command: str, deadline: _Deadline) -> Output:
    channel = transport.open_session(timeout=deadline.left())
    channel.exec_command(command)
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
