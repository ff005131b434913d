"""headnode.ssh.client.Connection against a real sshd: several commands on one connection,
arguments reaching the node as words, stdin, uploads with their mode from the first byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from headnode.ssh.client import Access, Connection, Target, connect
from headnode.ssh.errors import (
    AuthenticationFailed,
    HostKeyUnknown,
    SshError,
    TimedOut,
    Unreachable,
)
from headnode.ssh.keys import head_key
from headnode.ssh.known_hosts import KnownHosts
from tests.support.net import free_port
from tests.support.sshd import Sshd


def test_commands_are_argument_lists_and_share_one_connection(conn: Connection) -> None:
    out = conn.run(["printf", "%s|", "a b", "c;d", "$HOME"], timeout=10)
    assert (out.exit_code, out.stdout) == (0, "a b|c;d|$HOME|")
    assert conn.run(["sh", "-c", "exit 4"], timeout=10).exit_code == 4
    assert conn.run(["cat"], timeout=10, input=b"from stdin").stdout == "from stdin"


def test_a_slow_command_times_out(conn: Connection) -> None:
    with pytest.raises(TimedOut, match="still running after 0.5 s"):
        conn.run(["sleep", "5"], timeout=0.5)


def test_put_writes_whole_files_with_their_mode(conn: Connection, tmp_path: Path) -> None:
    target = tmp_path / "put" / "secret"
    target.parent.mkdir()
    assert conn.put(b"s3cret\n", str(target), 0o600) == 7
    assert target.read_bytes() == b"s3cret\n"
    assert target.stat().st_mode & 0o777 == 0o600
    local = tmp_path / "big"
    local.write_bytes(bytes(range(256)) * 4096)
    conn.put(local, str(target), 0o644)  # replaces
    assert target.read_bytes() == local.read_bytes()
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret"]  # no temp file left


def test_put_into_a_missing_directory_names_it(conn: Connection, tmp_path: Path) -> None:
    with pytest.raises(SshError, match=f"cannot write {tmp_path}/no/such"):
        conn.put(b"x", str(tmp_path / "no" / "such"))


def test_connect_checks_the_host_key_and_says_why_it_cannot(node: Sshd, head_dir: Path,
                                                            tmp_path: Path) -> None:
    target = Target("127.0.0.1", node.port, node.user)
    with pytest.raises(HostKeyUnknown):
        connect(target, Access(head_key(head_dir), KnownHosts.of(head_dir)), timeout=10)
    stranger = tmp_path / "stranger"
    with pytest.raises(AuthenticationFailed, match="refused the head node's key"):
        connect(target, Access(head_key(stranger), KnownHosts.of(head_dir), True), 10)
    with pytest.raises(Unreachable, match="connection refused"):
        connect(Target("127.0.0.1", free_port(), node.user),
                Access(head_key(head_dir), KnownHosts.of(head_dir), True), timeout=5)
