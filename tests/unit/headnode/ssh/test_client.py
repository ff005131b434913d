"""headnode.ssh against real OpenSSH servers (tests/support/sshd.py): a command's exit code
and output; first contact only when asked; a changed host key, a key the node does not
accept, a stopped sshd and a slow command each refused with their own clear error."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from headnode.ssh.client import MAX_OUTPUT, Access, Target, run
from headnode.ssh.errors import (
    AuthenticationFailed,
    HostKeyChanged,
    HostKeyUnknown,
    TimedOut,
    Unreachable,
)
from headnode.ssh.keys import head_key, public_line
from headnode.ssh.known_hosts import KnownHosts
from tests.support.net import free_port
from tests.support.procs import ProcessGroup
from tests.support.sshd import Sshd, restart_with_new_host_key, start_sshd


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "head"


@pytest.fixture
def node(procs: ProcessGroup, tmp_path: Path, data_dir: Path) -> Sshd:
    return start_sshd(procs, tmp_path / "nodes", "node1",
                      [public_line(head_key(data_dir))])


def access(data_dir: Path, accept_new: bool = False) -> Access:
    return Access(head_key(data_dir), KnownHosts.of(data_dir), accept_new)


def target(node: Sshd) -> Target:
    return Target("127.0.0.1", node.port, node.user)


def test_first_contact_needs_accept_new_then_runs(node: Sshd, data_dir: Path) -> None:
    known_hosts = data_dir / "ssh" / "known_hosts"
    with pytest.raises(HostKeyUnknown, match=rf"\[127.0.0.1\]:{node.port} is not in"):
        run(target(node), "true", access(data_dir), timeout=10)
    assert not known_hosts.exists()

    out = run(target(node), "echo out; echo err >&2; exit 3", access(data_dir, True), 10)
    assert (out.exit_code, out.stdout, out.stderr) == (3, "out", "err")
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert len(known_hosts.read_text().splitlines()) == 1
    # known now: no flag needed, nothing added again
    assert run(target(node), "printf hi", access(data_dir), 10).stdout == "hi"
    assert run(target(node), "true", access(data_dir, True), 10).exit_code == 0
    assert len(known_hosts.read_text().splitlines()) == 1


def test_a_changed_host_key_is_refused_even_with_accept_new(
        procs: ProcessGroup, node: Sshd, data_dir: Path) -> None:
    run(target(node), "true", access(data_dir, True), 10)
    before = (data_dir / "ssh" / "known_hosts").read_text()
    restart_with_new_host_key(procs, node)
    with pytest.raises(HostKeyChanged) as caught:
        run(target(node), "true", access(data_dir, True), 10)
    message = str(caught.value)
    assert f"host key of [127.0.0.1]:{node.port} changed" in message
    assert message.count("ssh-ed25519 SHA256:") == 2  # the known one and the offered one
    assert (data_dir / "ssh" / "known_hosts").read_text() == before


def test_a_key_the_node_does_not_accept_is_an_authentication_error(
        procs: ProcessGroup, tmp_path: Path, data_dir: Path) -> None:
    other = start_sshd(procs, tmp_path / "nodes", "other",
                       [public_line(head_key(tmp_path / "another-head"))])
    with pytest.raises(AuthenticationFailed, match="refused the head node's key"):
        run(target(other), "true", access(data_dir, True), 10)


def test_a_stopped_sshd_is_unreachable(procs: ProcessGroup, node: Sshd,
                                       data_dir: Path) -> None:
    procs.stop(node.name)
    with pytest.raises(Unreachable, match="connection refused"):
        run(target(node), "true", access(data_dir, True), 10)
    with pytest.raises(Unreachable, match="connection refused"):
        run(Target("127.0.0.1", free_port()), "true", access(data_dir, True), 10)


def test_a_slow_command_times_out_promptly(node: Sshd, data_dir: Path) -> None:
    run(target(node), "true", access(data_dir, True), 10)
    began = time.monotonic()
    with pytest.raises(TimedOut, match="still running after 1 s"):
        run(target(node), "sleep 5", access(data_dir), timeout=1)
    assert time.monotonic() - began < 3


def test_a_node_that_never_speaks_ssh_times_out(data_dir: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        began = time.monotonic()
        with pytest.raises(TimedOut, match="no answer within 1 s"):
            run(Target("127.0.0.1", silent.getsockname()[1]), "true", access(data_dir, True),
                timeout=1)
        assert time.monotonic() - began < 3


def test_a_node_with_an_rsa_host_key_is_known_on_the_next_contact(
        procs: ProcessGroup, tmp_path: Path, data_dir: Path) -> None:
    # paramiko would ask for the known key as "ssh-rsa" (SHA-1), which OpenSSH refuses
    node = start_sshd(procs, tmp_path / "nodes", "rsa-node",
                      [public_line(head_key(data_dir))], key_type="rsa")
    assert run(target(node), "echo first", access(data_dir, True), 10).stdout == "first"
    assert " ssh-rsa " in (data_dir / "ssh" / "known_hosts").read_text()
    assert run(target(node), "echo again", access(data_dir), 10).stdout == "again"


def test_long_output_keeps_its_end_and_the_exit_code(node: Sshd, data_dir: Path) -> None:
    out = run(target(node), "seq 1 200000; seq 1 50000 >&2; exit 4",
              access(data_dir, True), 10)
    assert out.exit_code == 4
    assert out.stdout.endswith("\n199999\n200000")  # the whole end: nothing cut at exit
    assert out.stderr.endswith("\n50000")
    assert MAX_OUTPUT - 1 <= len(out.stdout) <= MAX_OUTPUT  # the end only (stripped)
