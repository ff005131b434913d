"""A node's credentials (agents/credentials.py): the agent refuses to serve a node it has no
key for, saying how to get one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.cli import agent, mockcloud
from agents.config import load_settings, resolve_server_uuid
from agents.credentials import load_node_keys
from schemas.settings import SettingsError
from tests.support import credentials


def test_the_issued_key_is_loaded(tmp_path: Path) -> None:
    node = str(uuid.uuid4())
    path = credentials.issue(tmp_path, [node])
    assert path.stat().st_mode & 0o777 == 0o600
    settings = load_settings(data_dir=tmp_path)
    keys = load_node_keys(settings, [node])
    assert len(keys[node]) == 32


@pytest.mark.parametrize("content", [None, "{}", "[1]", "not json",
                                     '{"nodes": {"NODE": "abc"}}',
                                     '{"nodes": {"NODE": "zz"}}', '{"nodes": {}}'])
def test_no_valid_key_refuses_naming_the_command(tmp_path: Path, content: str | None) -> None:
    node = str(uuid.uuid4())
    if content is not None:
        (tmp_path / "credentials.json").write_text(content.replace("NODE", node))
    with pytest.raises(SettingsError, match="SDC_NODE_CREDENTIALS") as refused:
        load_node_keys(load_settings(data_dir=tmp_path), [node])
    if content is None or "nodes" in content:
        assert f"sdc server credentials {node} --out FILE" in str(refused.value)


def test_a_file_for_one_new_node_names_the_node(tmp_path: Path) -> None:
    node = str(uuid.uuid4())
    credentials.issue(tmp_path / "elsewhere", [node])
    settings = load_settings(data_dir=tmp_path / "agent",
                             node_credentials=str(tmp_path / "elsewhere" / "credentials.json"))
    assert resolve_server_uuid(settings) == node
    # two nodes in the file name none: the agent makes its own uuid (and has no key for it)
    credentials.issue(tmp_path / "two", [node, str(uuid.uuid4())])
    other = load_settings(data_dir=tmp_path / "agent2",
                          node_credentials=str(tmp_path / "two" / "credentials.json"))
    assert resolve_server_uuid(other) != node


def test_agent_run_and_mockcloud_without_credentials_refuse_in_one_line(tmp_path: Path) -> None:
    node = str(uuid.uuid4())
    result = CliRunner().invoke(agent, ["run", "--server-uuid", node,
                                        "--data-dir", str(tmp_path / "a")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: SDC_NODE_CREDENTIALS: no valid key for server "
                                    f"{node}") and "Traceback" not in result.output
    result = CliRunner().invoke(mockcloud, ["--servers", "2", "--data-dir", str(tmp_path / "m")])
    assert result.exit_code == 1 and "SDC_NODE_CREDENTIALS" in result.output
    assert json.loads(credentials.issue_mockcloud(tmp_path / "m", 1).read_text())["nodes"]
