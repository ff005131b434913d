"""The whole node side against a real sshd, on this machine with the node's PREFIX a
directory of the test's: a real bundle of this checkout uploaded and installed into a
virtualenv, its configuration written, the agent started (supervised: no systemd here) and
heartbeating to a real Redis with the bundle's version, every step a no-op the second time,
and restore leaving a node that had nothing with nothing.

Marked slow (``make bench`` runs it): two full installs take most of a minute, and CI covers the
same ground in pieces: tests/unit/workflows/test_node_setup_workflow.py (set up, again as a
no-op, a late failure restored to nothing), test_restore.py, and the end-to-end set-up, upgrade
and rollback in tests/integration/test_node_setup.py. What only this test does is restore after
an upgrade whose new release was started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from headnode.config import HeadnodeSettings
from headnode.nodesetup import bundle, install, node
from headnode.nodesetup.bundle import AgentBundle
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.nodeconfig import node_config
from headnode.ssh.client import Connection
from schemas.agent import HEARTBEAT_KEY, NODES_QUEUE
from tests.support.wait import wait_until
from tests.support.wheels import with_version
from tests.unit.agents.test_agent_process import headnode_events

SERVER = "0b1d2c3e-4f50-4617-8283-949596979899"
NEXT = "99.0.1"
FAST = {"SDC_HEARTBEAT_INTERVAL": "0.5", "SDC_SIM_STATE": "false"}


@pytest.mark.slow
def test_setup_again_upgrade_restore(conn: Connection, layout: NodeLayout,
                                     head: HeadnodeSettings, agent_bundle: AgentBundle,
                                     redis_server: Any, tmp_path: Path) -> None:
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

    client = redis_server.client()
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

    upgrade_then_restore(conn, layout, head, agent_bundle, redis_server, tmp_path)

    restored = install.restore(conn, layout, before.to_dict())
    assert restored["removed"] == ["agent_dir", "etc_dir", "data_dir", "log_file"]
    assert list(Path(layout.prefix).iterdir()) == []
    after = node.inspect(conn, layout, "sim")
    assert not after.agent_running and after.installed_version is None


def upgrade_then_restore(conn: Connection, layout: NodeLayout, head: HeadnodeSettings,
                         first: AgentBundle, redis_server: Any, tmp_path: Path) -> None:
    """Another version installed beside the first and started; then put back (as after a
    failed upgrade): the first runs again, the new release is gone."""
    found = node.inspect(conn, layout, "sim")
    wheel = with_version(first.directory / first.wheels[0], NEXT, tmp_path / "next")
    bundle.store_wheel(head, wheel.name, wheel.read_bytes())
    upgrade = bundle.prepare(head, NEXT)
    install.upload(conn, layout, upgrade)
    assert install.install(conn, layout, upgrade)["changed"]
    client = redis_server.client()
    client.delete(NODES_QUEUE)
    upgraded = install.activate(conn, layout, NEXT)
    assert (upgraded["switched"], upgraded["restarted"]) == (True, True)
    assert upgraded["previous"] == first.version
    wait_until(lambda: registered_version(client) == NEXT, timeout=60,
               message="the new version's registration")
    state = node.inspect(conn, layout, "sim")
    assert (state.installed_version, state.previous_version) == (NEXT, first.version)

    install.restore(conn, layout, found)
    state = node.inspect(conn, layout, "sim")
    assert (state.installed_version, state.previous_version) == (first.version, None)
    assert state.releases == [first.version] and state.agent_running


def registered_version(client: Any) -> str | None:
    versions = [sysinfo.get("SDC Version") for name, (sysinfo,) in headnode_events(client)
                if name == "events.server_sysinfo"]
    return versions[-1] if versions else None


def assert_private(layout: NodeLayout) -> None:
    assert Path(layout.etc_dir).stat().st_mode & 0o777 == 0o700
    for path in (layout.env_file, layout.credentials_file):
        assert Path(path).stat().st_mode & 0o777 == 0o600
    assert json.loads(Path(layout.credentials_file).read_text())["nodes"].keys() == {SERVER}
