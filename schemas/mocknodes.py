"""The identities of a mock cloud's nodes (``sdc mockcloud``): uuid5 of a fixed namespace and
``<prefix>-<i>``, so a restarted mock cloud is the same fleet to the head node, two mock
clouds with different prefixes never collide, and the head node can issue the nodes'
credentials before they start."""

from __future__ import annotations

import uuid

#: fixed forever: changing it would turn every existing mock fleet into new servers
MOCKCLOUD_NAMESPACE = uuid.UUID("5d3c9a0e-7b1f-4c2a-9e64-2f0b8d6a1c37")
DEFAULT_PREFIX = "mock"


def node_uuid(prefix: str, index: int) -> str:
    return str(uuid.uuid5(MOCKCLOUD_NAMESPACE, f"{prefix}-{index}"))


def node_uuids(prefix: str, count: int) -> list[str]:
    return [node_uuid(prefix, i) for i in range(count)]
