"""A node's credentials: the key it signs its messages with, issued by the head node.

The file (``SDC_NODE_CREDENTIALS``, else DATA_DIR/credentials.json) is what
``sdc server credentials`` writes: JSON ``{"nodes": {server uuid: hex key}}``; a mock cloud's
holds every node it simulates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.settings import SettingsError

if TYPE_CHECKING:
    from agents.config import AgentSettings

log = logging.getLogger(__name__)

ISSUE_HINT = "issue them on the head node: sdc server credentials {uuid} --out FILE"


def credentials_path(settings: AgentSettings) -> Path:
    return Path(settings.node_credentials) if settings.node_credentials \
        else settings.data_dir / "credentials.json"


def read_nodes(path: Path) -> dict[str, Any]:
    """The file's ``nodes`` map (empty when there is no file); SettingsError if unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SettingsError(f"SDC_NODE_CREDENTIALS: cannot read {path}: {exc}") from exc
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict):
        raise SettingsError(f"SDC_NODE_CREDENTIALS: {path} has no \"nodes\" object")
    return nodes


def load_node_keys(settings: AgentSettings, server_uuids: Iterable[str]) -> dict[str, bytes]:
    """The key of every node in ``server_uuids``; SettingsError naming the first missing."""
    path = credentials_path(settings)
    nodes = read_nodes(path)
    if nodes and path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users: it holds node keys (chmod 600)", path)
    keys = {}
    for server_uuid in server_uuids:
        text = nodes.get(server_uuid)
        try:
            keys[server_uuid] = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            keys[server_uuid] = b""
        if len(keys[server_uuid]) < 16:
            raise SettingsError(f"SDC_NODE_CREDENTIALS: no valid key for server {server_uuid} "
                                f"in {path}; " + ISSUE_HINT.format(uuid=server_uuid))
    return keys


def single_node(settings: AgentSettings) -> str | None:
    """The server uuid of a credentials file issued for exactly one node."""
    nodes = read_nodes(credentials_path(settings))
    return next(iter(nodes)) if len(nodes) == 1 else None
