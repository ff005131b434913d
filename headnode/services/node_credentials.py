"""Node credentials: the key each compute node signs its messages with (sdccommon/signing.py).

A node's key is derived from the head node's message key and the node's uuid, so the head
node stores no per-node secret and can check any node's message. The operator hands a node
its key in a credentials file (JSON ``{"nodes": {uuid: hex key}}``, 0600), which the agent
reads (``SDC_NODE_CREDENTIALS``); one file may hold many nodes (a mock cloud).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from headnode.nodesetup.credentials import canonical_uuid as canonical_uuid
from headnode.nodesetup.credentials import node_keys as node_keys
from sdccommon import private_files


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
