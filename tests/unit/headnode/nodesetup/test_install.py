"""The whole node side against a real sshd, on this machine with the node's PREFIX a
directory of the test's: a real bundle of this checkout uploaded and installed into a
virtualenv, its configuration written, the agent started (supervised: no systemd here) and
heartbeating to a real Redis with the bundle's version, every step a no-op the second time,
and restore leaving a node that had nothing with nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headnode.config import HeadnodeSettings
from headnode.nodesetup import bundle, install, node
from headnode.nodesetup.bundle import AgentBundle
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.nodeconfig import node_config
from headnode.ssh.client import Connection
from schemas.agent import HEARTBEAT_KEY
from tests.support.credentials import TEST_MESSAGE_KEY
from tests.support.wait import wait_until

SERVER = "0b1d2c3e-4f50-4617-8283-949596979899"
FAST = {"SDC_HEARTBEAT_INTERVAL": "0.5", "SDC_SIM_STATE": "false"}


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built once per session: about 8 s (the wheel, then its dependencies from pip's cache)
    return tmp_path_factory.mktemp("agent-bundles")


@pytest.fixture
def head(tmp_path: Path, bundle_dir: Path, clean_redis: str) -> HeadnodeSettings:
    return HeadnodeSettings(data_dir=tmp_path / "head", redis_url=clean_redis,
                            message_key=TEST_MESSAGE_KEY, agent_bundle_dir=str(bundle_dir))


@pytest.fixture
def agent_bundle(head: HeadnodeSettings) -> AgentBundle:
    return bundle.prepare(head)


def test_setup_then_again_then_restore(conn: Connection, layout: NodeLayout,
                                       head: HeadnodeSettings, agent_bundle: AgentBundle,
                                       redis_server: object) -> None:
    before = node.inspect(conn, layout, "sim")
    node.check(before, "sim", agent_bundle)
    config = node_config(head, SERVER, layout, "sim", hostname="cn-setup", extra=FAST)

    assert install.upload(conn, layout, agent_bundle)["files"] == len(agent_bundle.wheels)
    assert install.install(conn, layout, agent_bundle)["changed"]
    written = install.write_config(conn, layout, config)
    assert written == {"changed": True, "files": {"agent.env": "written",
                       "credentials.json": "written", "image-store-ca.pem": "unchanged"}}
    activated = install.activate(conn, layout, agent_bundle.version)
    assert activated["switched"] and activated["restarted"]
    assert activated["init"] == "supervised"

    client = redis_server.client()  # type: ignore[attr-defined]
    wait_until(lambda: client.hget(HEARTBEAT_KEY, SERVER), timeout=60,
               message=lambda: Path(layout.log_file).read_text())
    info = conn.run([layout.sdc_command, "agent", "info"], 60)
    assert json.loads(info.stdout)["SDC Version"] == agent_bundle.version
    assert_private(layout)
    assert "SDC_REDIS_URL" not in json.dumps([written, activated])

    # again: nothing uploaded, installed, written or restarted
    state = node.inspect(conn, layout, "sim")
    assert (state.installed_version, state.server_uuid) == (agent_bundle.version, SERVER)
    assert state.agent_running
    assert not install.upload(conn, layout, agent_bundle)["changed"]
    assert not install.install(conn, layout, agent_bundle)["changed"]
    assert not install.write_config(conn, layout, config)["changed"]
    assert not install.activate(conn, layout, agent_bundle.version)["changed"]

    restored = install.restore(conn, layout, before.to_dict())
    assert restored["removed"] == ["agent_dir", "etc_dir", "data_dir", "log_file"]
    assert list(Path(layout.prefix).iterdir()) == []
    after = node.inspect(conn, layout, "sim")
    assert not after.agent_running and after.installed_version is None


def assert_private(layout: NodeLayout) -> None:
    assert Path(layout.etc_dir).stat().st_mode & 0o777 == 0o700
    for path in (layout.env_file, layout.credentials_file):
        assert Path(path).stat().st_mode & 0o777 == 0o600
    assert json.loads(Path(layout.credentials_file).read_text())["nodes"].keys() == {SERVER}
