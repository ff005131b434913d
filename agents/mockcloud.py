"""Many simulated compute nodes in one process, for demos, tests and capacity drills.

The nodes have deterministic identities -- uuid5 of a fixed namespace and ``<prefix>-<i>`` --
so a restarted mock cloud is the same fleet to the head node (and, with ``sim_state``, still
has its machines), and two mock clouds with different prefixes never collide.
"""

from __future__ import annotations

import uuid

from agents.backends import sim
from agents.config import AgentSettings
from agents.runner import run_worker

#: fixed forever: changing it would turn every existing mock fleet into new servers
MOCKCLOUD_NAMESPACE = uuid.UUID("5d3c9a0e-7b1f-4c2a-9e64-2f0b8d6a1c37")
DEFAULT_PREFIX = "mock"


def node_uuid(prefix: str, index: int) -> str:
    return str(uuid.uuid5(MOCKCLOUD_NAMESPACE, f"{prefix}-{index}"))


def node_hostname(prefix: str, index: int) -> str:
    return f"{prefix}-{index:03d}"


def build_nodes(
    settings: AgentSettings, count: int, prefix: str = DEFAULT_PREFIX
) -> list[sim.SimBackend]:
    return [
        sim.from_settings(settings, node_uuid(prefix, i), hostname=node_hostname(prefix, i))
        for i in range(count)
    ]


def run_mockcloud(settings: AgentSettings, count: int, prefix: str = DEFAULT_PREFIX) -> None:
    run_worker(build_nodes(settings, count, prefix), settings, node_name=f"mockcloud-{prefix}")
