"""The allocator's entry points, for callers that need one decision or one reason name.

The work is done by the pipeline (``pipeline.py``: filters.py, then scorers.py) over the
plain data of ``state.py``; this module only names the usual way in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from headnode.placement.filters import (
    NOT_ENOUGH_CPU,
    NOT_ENOUGH_DISK,
    NOT_ENOUGH_RAM,
)
from headnode.placement.pipeline import DEFAULT_PIPELINE, Decision, Pipeline
from headnode.placement.state import (
    MachineRef,
    PlacementRequest,
    Policy,
    ServerState,
    Snapshot,
)

__all__ = ["NOT_ENOUGH_CPU", "NOT_ENOUGH_DISK", "NOT_ENOUGH_RAM", "Decision", "MachineRef",
           "PlacementRequest", "Policy", "ServerState", "Snapshot", "allocate"]


def allocate(
    servers: Iterable[ServerState],
    request: PlacementRequest,
    policy: Policy = Policy(),
    owner_machines: Sequence[MachineRef] = (),
    pipeline: Pipeline = DEFAULT_PIPELINE,
    rng: random.Random | None = None,
) -> Decision:
    return pipeline.decide(Snapshot(list(servers), owner_machines), request, policy, rng)
