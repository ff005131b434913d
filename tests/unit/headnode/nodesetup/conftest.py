"""A real sshd standing for a node (tests/support/sshd.py), and the head node's access to
it; the node's PREFIX is a directory of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headnode.config import HeadnodeSettings
from headnode.nodesetup import bundle
from headnode.nodesetup.bundle import AgentBundle
from headnode.nodesetup.layout import NodeLayout
from headnode.ssh.client import Access, Connection, Target, connect
from headnode.ssh.keys import head_key, public_line
from headnode.ssh.known_hosts import KnownHosts
from tests.support.credentials import TEST_MESSAGE_KEY
from tests.support.procs import ProcessGroup
from tests.support.sshd import Sshd, start_sshd


@pytest.fixture
def head_dir(tmp_path: Path) -> Path:
    return tmp_path / "head"


@pytest.fixture
def node(procs: ProcessGroup, tmp_path: Path, head_dir: Path) -> Sshd:
    return start_sshd(procs, tmp_path / "nodes", "node1", [public_line(head_key(head_dir))])


@pytest.fixture
def conn(node: Sshd, head_dir: Path) -> Iterator[Connection]:
    access = Access(head_key(head_dir), KnownHosts.of(head_dir), accept_new=True)
    with connect(Target("127.0.0.1", node.port, node.user), access, timeout=10) as conn:
        yield conn


@pytest.fixture
def layout(tmp_path: Path) -> NodeLayout:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    return NodeLayout(str(prefix))


@pytest.fixture
def head(tmp_path: Path, bundle_dir: Path, clean_redis: str) -> HeadnodeSettings:
    return HeadnodeSettings(data_dir=tmp_path / "head", redis_url=clean_redis,
                            message_key=TEST_MESSAGE_KEY, agent_bundle_dir=str(bundle_dir))


@pytest.fixture
def agent_bundle(head: HeadnodeSettings) -> AgentBundle:
    return bundle.prepare(head)
