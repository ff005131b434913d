"""Compute nodes as the operator sees them (CNAPI): list, look up, set up, reserve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound
from headnode.store.models import Server

#: the flags an operator may change; everything else is the node's own report
OPERATOR_FIELDS = ("setup", "reserved", "traits")


def list_servers(
    ctx: ServiceContext, status: str | None = None, setup: bool | None = None
) -> list[Server]:
    query = select(Server).order_by(Server.hostname, Server.uuid)
    if status is not None:
        query = query.where(Server.status == status)
    if setup is not None:
        query = query.where(Server.setup == setup)
    with ctx.read() as session:
        return list(session.scalars(query))


def get_server(ctx: ServiceContext, uuid: str) -> Server:
    with ctx.read() as session:
        server = session.get(Server, uuid)
    if server is None:
        raise NotFound("server", uuid)
    return server


def update_server(ctx: ServiceContext, uuid: str, changes: Mapping[str, Any]) -> Server:
    """Apply the operator's flags; unknown keys are a programming error, not user input."""
    unexpected = set(changes) - set(OPERATOR_FIELDS)
    if unexpected:
        raise ValueError(f"not operator-settable: {sorted(unexpected)}")
    with ctx.transaction() as session:
        # Lock the row: the allocator reads these flags while reserving capacity on it.
        # NO KEY UPDATE: a create's foreign-key lock on the row does not hold this up.
        server = session.get(Server, uuid, with_for_update={"key_share": True})
        if server is None:
            raise NotFound("server", uuid)
        for key, value in changes.items():
            setattr(server, key, value)
    return server
