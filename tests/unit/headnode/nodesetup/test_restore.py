"""restore after a run that failed before the agent was started: the config files it wrote
are put back as they were (or removed), and a node that had nothing is left with nothing.
(test_node_setup_workflow.py restores a started agent; test_install.py, marked slow, one
started after an upgrade.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from headnode.config import HeadnodeSettings
from headnode.nodesetup import install, node
from headnode.nodesetup.bundle import AgentBundle
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.nodeconfig import node_config
from headnode.ssh.client import Connection
from tests.support.credentials import TEST_MESSAGE_KEY

SERVER = "5e1f0c7a-6d2b-4b8e-9a3c-1f2e3d4c5b6a"


def config_of(tmp_path: Path, layout: NodeLayout, redis_url: str):  # type: ignore[no-untyped-def]
    head = HeadnodeSettings(data_dir=tmp_path / "head", redis_url=redis_url,
                            message_key=TEST_MESSAGE_KEY)
    return node_config(head, SERVER, layout, "sim")


def test_a_node_that_had_nothing_is_left_with_nothing(conn: Connection, layout: NodeLayout,
                                                      tmp_path: Path) -> None:
    before = node.inspect(conn, layout, "sim")
    config = config_of(tmp_path, layout, "redis://:pw@127.0.0.1:1/0")
    assert install.write_config(conn, layout, config)["changed"]
    conn.run(["mkdir", "-p", f"{layout.release('1.0')}/bin", layout.wheels("1.0")], 10)

    restored = install.restore(conn, layout, before.to_dict())
    assert restored["removed"] == ["agent_dir", "etc_dir"]
    assert list(Path(layout.prefix).iterdir()) == []


def test_config_files_are_put_back_as_they_were(conn: Connection, layout: NodeLayout,
                                                tmp_path: Path) -> None:
    first = config_of(tmp_path, layout, "redis://:one@127.0.0.1:1/0")
    install.write_config(conn, layout, first)
    env = Path(layout.env_file)
    was = env.read_text()
    before = node.inspect(conn, layout, "sim")

    second = config_of(tmp_path, layout, "redis://:two@127.0.0.1:1/0")
    assert install.write_config(conn, layout, second)["files"]["agent.env"] == "written"
    assert env.read_text() != was

    restored = install.restore(conn, layout, before)
    assert restored["config"] == {"agent.env": "restored", "credentials.json": "unchanged",
                                  "image-store-ca.pem": "unchanged"}
    assert env.read_text() == was and env.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in env.parent.iterdir()) == ["agent.env", "credentials.json"]
    # nothing was changed by the run: nothing to restore
    again = install.restore(conn, layout, before)
    assert again == {"changed": False, "version": None, "running": False, "removed": []}


def test_a_failed_install_says_why_and_is_undone(conn: Connection, layout: NodeLayout,
                                                 agent_bundle: AgentBundle) -> None:
    before = node.inspect(conn, layout, "sim")
    # the sdc wheel without the wheels it depends on: pip finds no celery (and no index)
    lacking = dataclasses.replace(agent_bundle, wheels=agent_bundle.wheels[:1])
    install.upload(conn, layout, lacking)
    with pytest.raises(NodeSetupError) as caught:
        install.install(conn, layout, lacking)
    assert caught.value.code == "InstallFailed"
    assert "No matching distribution" in caught.value.message
    assert not Path(layout.marker(agent_bundle.version)).exists()
    with pytest.raises(NodeSetupError, match="not installed"):
        install.activate(conn, layout, agent_bundle.version)

    install.restore(conn, layout, before)
    assert list(Path(layout.prefix).iterdir()) == []
