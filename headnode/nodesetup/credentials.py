"""A node's credentials: its signing key, derived from the head node's message key and the
node's uuid (sdccommon/signing.py), so the head node keeps no per-node secret. The one copy
of that derivation: ``sdc server credentials`` (headnode/services/node_credentials.py) and
setup over SSH both use it."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Iterable

from headnode.config import HeadnodeSettings
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


def credentials_for(settings: HeadnodeSettings, server_uuid: str) -> str:
    """The JSON text of one node's credentials file (agents/credentials.py reads it).
    A secret: write it 0600 and never record it."""
    keys = node_keys(settings.resolved_message_key(), [server_uuid])
    return json.dumps({"nodes": keys}, indent=1) + "\n"
