"""The systemd side of a node's service (this machine has no systemd to run it): the unit
setup writes is deploy/sdc-agent.service on a real node, its paths follow the PREFIX, nodes
sharing a host get a unit each, and systemd accepts it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.service import supervise_argv, unit_text

DEPLOYED = Path(__file__).resolve().parents[4] / "deploy" / "sdc-agent.service"


def test_the_deployed_unit_is_the_one_setup_writes() -> None:
    assert DEPLOYED.read_text() == unit_text(NodeLayout("/"))
    assert NodeLayout("/").unit_name == "sdc-agent.service"


def test_a_prefixed_node_has_its_own_unit_and_paths() -> None:
    one, two = NodeLayout("/srv/node1"), NodeLayout("/srv/node2/")
    assert one.unit_name != two.unit_name
    assert one.unit_name.startswith("sdc-agent-") and one.unit_path.startswith(
        "/etc/systemd/system/")
    text = unit_text(two)
    assert "EnvironmentFile=/srv/node2/etc/sdc/agent.env\n" in text
    assert "ExecStart=/srv/node2/opt/sdc/agent/current/bin/sdc agent run\n" in text
    assert supervise_argv(two)[:4] == ["/srv/node2/opt/sdc/agent/current/bin/sdc", "agent",
                                       "supervise", "--detach"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_a_prefixed_unit(tmp_path: Path) -> None:
    layout = NodeLayout(str(tmp_path / "node"))
    bin_dir = Path(layout.sdc_command).parent
    bin_dir.mkdir(parents=True)
    Path(layout.sdc_command).symlink_to(Path(sys.executable).parent / "sdc")
    unit = tmp_path / layout.unit_name
    unit.write_text(unit_text(layout))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


def test_a_relative_prefix_is_refused() -> None:
    with pytest.raises(NodeSetupError, match="absolute path"):
        NodeLayout("srv/node")
