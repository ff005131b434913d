"""Node credentials: the key each compute node signs its messages with (sdccommon/signing.py).

A node's key is derived from the head node's message key and the node's uuid, so the head
node stores no per-node secret and can check any node's message. The operator hands a node
its key in a credentials file (JSON ``{"nodes": {uuid: hex key}}``, 0600), which the agent
reads (``SDC_NODE_CREDENTIALS``); one file may hold many nodes (a mock cloud).
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Iterable
from pathlib import Path

from sdccommon import private_files
from sdccommon.signing import derive


def canonical_uuid(text: str) -> str:
    """A server uuid in canonical form; ValueError names a bad one."""
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a server UUID") from None


def node_keys(message_key: bytes, server_uuids: Iterable[str]) -> dict[str, str]:
    """{uuid: hex key} of each node (uuids in canonical form; ValueError names a bad one)."""
    keys = {}
    for text in server_uuids:
        canonical = canonical_uuid(text)
        keys[canonical] = derive(message_key, canonical).hex()
    return keys


def write_credentials(message_key: bytes, server_uuids: Iterable[str],
                      path: Path) -> dict[str, str]:
    """Write (or add to) the credentials file at ``path``, readable by its owner only, for
    the head node's ``message_key``; returns the uuids written, without their keys."""
    keys = node_keys(message_key, server_uuids)
    try:
        known = json.loads(path.read_text()).get("nodes", {})
    except (FileNotFoundError, ValueError, AttributeError):
        known = {}
    known.update(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    private_files.replace(path, json.dumps({"nodes": known}, indent=1).encode())
    return dict.fromkeys(keys, "written")
