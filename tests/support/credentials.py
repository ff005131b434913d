"""Node credentials for the agents tests start (sdccommon/signing.py): every test head node
uses :data:`TEST_MESSAGE_KEY`, so a node's key can be written before either starts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from schemas.mocknodes import node_uuids

TEST_MESSAGE_KEY = "test-message-key"


def issue(data_dir: Path, server_uuids: Iterable[str],
          message_key: str = TEST_MESSAGE_KEY) -> Path:
    """Write the nodes' credentials where an agent with ``data_dir`` looks by default."""
    from headnode.services.node_credentials import write_credentials

    path = data_dir / "credentials.json"
    write_credentials(message_key.encode(), server_uuids, path)
    return path


def issue_mockcloud(data_dir: Path, count: int, prefix: str = "mock",
                    message_key: str = TEST_MESSAGE_KEY) -> Path:
    return issue(data_dir, node_uuids(prefix, count), message_key)


def sign_as_headnode(message_key: str = TEST_MESSAGE_KEY) -> None:
    """Make what this (test) process sends signed by the head node with ``message_key``."""
    from sdccommon import signing

    signing.serve_headnode(message_key.encode)
