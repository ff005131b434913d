"""headnode.ssh.fanout: one result per node in the nodes' order; a node without an address,
or one whose connection fails in a way nothing expects, is its own row and the others run."""

from __future__ import annotations

from pathlib import Path

from headnode.ssh.client import Access, Target
from headnode.ssh.fanout import Node, run_on_all
from headnode.ssh.keys import head_key, public_line
from headnode.ssh.known_hosts import KnownHosts
from tests.support.procs import ProcessGroup
from tests.support.sshd import start_sshd


def test_each_node_gets_its_own_row(procs: ProcessGroup, tmp_path: Path) -> None:
    data_dir = tmp_path / "head"
    node = start_sshd(procs, tmp_path / "nodes", "cn1", [public_line(head_key(data_dir))])
    nodes = [
        # a label too long for IDNA: a UnicodeError before any lookup, not an OSError
        Node("u-bad-host", "bad", Target("x" * 300, 22, node.user)),
        Node("u-none", "none", None),
        Node("u-ok", "ok", Target("127.0.0.1", node.port, node.user)),
    ]
    access = Access(head_key(data_dir), KnownHosts.of(data_dir), accept_new=True)
    results = run_on_all(nodes, "echo hi", access, timeout=10, parallel=2)
    assert [r.uuid for r in results] == ["u-bad-host", "u-none", "u-ok"]
    assert (results[0].status, results[0].exit_code) == ("error", None)
    assert "UnicodeError" in results[0].error
    assert results[1].status == "no-ssh-address"
    assert (results[2].status, results[2].exit_code, results[2].stdout) == ("ok", 0, "hi")
