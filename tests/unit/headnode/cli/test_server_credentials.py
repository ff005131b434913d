"""``sdc server credentials``: node keys into a file for the agents, never on the screen,
and never for a forgotten (revoked) node."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from headnode.cli.main import main
from headnode.services import revocation
from headnode.store.db import session_factory
from schemas.mocknodes import node_uuid
from sdccommon.signing import derive


@pytest.fixture
def database(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The head node's database the command asks about revoked nodes."""
    monkeypatch.setenv("SDC_DATABASE_URL", clean_db)
    return clean_db


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["server", "credentials", *args],
                                env={"SDC_DATA_DIR": str(tmp_path / "head"),
                                     "SDC_MESSAGE_KEY": "k1"})
    return result.exit_code, result.output


@pytest.mark.usefixtures("database")
def test_keys_are_written_0600_for_given_new_and_mock_nodes(tmp_path: Path) -> None:
    out = tmp_path / "creds.json"
    given = str(uuid.uuid4())
    code, output = run(tmp_path, given.upper(), "--new", "1", "--mockcloud", "2",
                       "--prefix", "p", "--out", str(out))
    assert code == 0, output
    nodes = json.loads(out.read_text())["nodes"]
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(nodes) == 4 and given in nodes  # the canonical form
    assert {node_uuid("p", 0), node_uuid("p", 1)} <= set(nodes)
    assert all(bytes.fromhex(key) == derive(b"k1", node) for node, key in nodes.items())
    assert not any(key in output for key in nodes.values())  # never printed
    # a second run adds to the file
    code, _ = run(tmp_path, "--new", "1", "--out", str(out))
    assert code == 0 and len(json.loads(out.read_text())["nodes"]) == 5


@pytest.mark.usefixtures("database")
def test_a_bad_uuid_or_nothing_to_issue_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "creds.json"
    code, output = run(tmp_path, "not-a-uuid", "--out", str(out))
    assert code == 2 and "'not-a-uuid' is not a server UUID" in output
    code, output = run(tmp_path, "--out", str(out))
    assert code == 2 and "no server to issue credentials for" in output
    code, output = run(tmp_path, "--mockcloud", "0", "--out", str(out))
    assert code == 2 and not out.exists()


def test_a_forgotten_nodes_uuid_gets_no_credentials(tmp_path: Path, database: str) -> None:
    forgotten, other = str(uuid.uuid4()), str(uuid.uuid4())
    with session_factory(database).begin() as session:
        revocation.revoke(session, forgotten, "old")
    out = tmp_path / "creds.json"
    code, output = run(tmp_path, other, forgotten.upper(), "--out", str(out))
    assert code == 1
    assert f"{forgotten} were forgotten and their credentials revoked" in output
    assert "new uuid" in output
    assert not out.exists()  # nothing issued, not even for the other node


def test_no_credentials_when_the_revoked_list_cannot_be_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a database with no tables (never migrated): the list cannot be read, nothing is issued
    monkeypatch.setenv("SDC_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite'}")
    out = tmp_path / "creds.json"
    code, output = run(tmp_path, str(uuid.uuid4()), "--out", str(out))
    assert code == 1 and "cannot read the head node's revoked credentials" in output
    assert not out.exists()
