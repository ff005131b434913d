"""Many simulated compute nodes in one process, for demos, tests and capacity drills.

The nodes' identities are deterministic (schemas/mocknodes.py), so a restarted mock cloud is
the same fleet to the head node (and, with ``sim_state``, still has its machines).
"""

from __future__ import annotations

from agents.backends import sim
from agents.config import AgentSettings
from agents.runner import run_worker
from schemas.mocknodes import DEFAULT_PREFIX, node_uuid

__all__ = ["DEFAULT_PREFIX", "build_nodes", "node_hostname", "node_uuid", "run_mockcloud"]


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
