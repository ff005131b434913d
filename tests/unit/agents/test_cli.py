from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agents.cli import agent, mockcloud
from agents.mockcloud import node_hostname, node_uuid


def test_info_prints_sysinfo_with_smartos_names(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        agent, ["info", "--data-dir", str(tmp_path), "--sim-ram-mb", "2048",
                "--hostname", "cn1"], env={"SDC_SIM_STATE": "false"})
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["MiB of Memory"] == 2048 and info["Hostname"] == "cn1"
    assert info["UUID"] == (tmp_path / "server-uuid").read_text().strip()


def test_configuration_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(agent, ["info", "--data-dir", str(tmp_path)],
                                env={"SDC_SIM_TRAITS": "[1"})
    assert result.exit_code == 1
    assert result.output.startswith("Error: SDC_SIM_TRAITS") and "Traceback" not in result.output
    result = CliRunner().invoke(agent, ["run", "--server-uuid", "nope"])
    assert result.exit_code == 1 and result.output.startswith("Error: SDC_SERVER_UUID")


def test_mockcloud_refuses_zero_servers() -> None:
    result = CliRunner().invoke(mockcloud, ["--servers", "0"])
    assert result.exit_code == 2


def test_mock_nodes_are_deterministic_and_prefixed() -> None:
    assert node_uuid("mock", 0) == node_uuid("mock", 0) != node_uuid("mock", 1)
    assert node_uuid("a", 0) != node_uuid("b", 0)
    assert node_hostname("mock", 7) == "mock-007"
