"""Hand-built servers and requests for the placement tests (no database: placement is pure)."""

from __future__ import annotations

from typing import Any

from headnode.placement.state import (
    Context,
    MachineRef,
    PlacementRequest,
    Policy,
    ServerState,
)

POLICY = Policy()
REQ = PlacementRequest(ram_mb=1024, disk_mb=10240, owner_uuid="owner")


def server(uuid: str = "s1", **overrides: Any) -> ServerState:
    attrs: dict[str, Any] = {"ram_mb": 65536, "disk_mb": 1_000_000, "cpus": 16}
    attrs.update(overrides)
    return ServerState(uuid=uuid, **attrs)


def context(request: PlacementRequest = REQ,
            machines: tuple[MachineRef, ...] = ()) -> Context:
    return Context.build(request, machines)
