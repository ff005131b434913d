"""Compute nodes as the operator sees them (CNAPI): list, look up, set up, reserve, put in
maintenance, forget."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from sqlalchemy import delete, func, select, update

from headnode.services import revocation
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, NotFound
from headnode.store.models import Machine, Reservation, Server, ServerImage
from schemas.agent import HEARTBEAT_KEY

log = logging.getLogger(__name__)

#: the flags an operator may change; everything else is the node's own report
OPERATOR_FIELDS = ("setup", "reserved", "maintenance", "traits")


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


def count_by_status(ctx: ServiceContext) -> dict[str, int]:
    """How many servers have each status (one grouped count, not the rows)."""
    with ctx.read() as session:
        rows = session.execute(select(Server.status, func.count()).group_by(Server.status))
        return {status: int(n) for status, n in rows}


def get_server(ctx: ServiceContext, uuid: str) -> Server:
    with ctx.read() as session:
        server = session.get(Server, uuid)
    if server is None:
        raise NotFound("server", uuid)
    return server


#: where the head node reaches the node over SSH: the operator's to say too
SSH_ADDRESS = ("ssh_host", "ssh_port", "ssh_user")


def update_server(ctx: ServiceContext, uuid: str, changes: Mapping[str, Any]) -> Server:
    """Apply the operator's flags; unknown keys are a programming error, not user input."""
    unexpected = set(changes) - {*OPERATOR_FIELDS, *SSH_ADDRESS}
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


def forget_server(ctx: ServiceContext, uuid: str) -> dict[str, Any]:
    """Remove a server that holds no machine any more, and revoke its node's credentials:
    the head node refuses whatever its key signs from now on, so a late sysinfo or status
    report from it cannot bring it back. Refused (409, naming how many) while any machine
    on it is not destroyed; its destroyed machines keep their records, without a server."""
    with ctx.transaction() as session:
        # A full row lock: a provision's foreign-key lock on the row (a machine being
        # placed there) makes this wait, and then count that machine.
        server = session.get(Server, uuid, with_for_update=True)
        if server is None:
            raise NotFound("server", uuid)
        remaining = session.scalar(
            select(func.count()).select_from(Machine)
            .where(Machine.server_uuid == uuid, Machine.state != "destroyed")) or 0
        if remaining:
            raise Conflict(f"server {uuid} still has {remaining} machine(s) that are not "
                           "destroyed: destroy them first", code="ServerInUse",
                           machines=remaining)
        hostname = server.hostname
        session.execute(update(Machine).where(Machine.server_uuid == uuid)
                        .values(server_uuid=None).execution_options(synchronize_session=False))
        session.execute(delete(Reservation).where(Reservation.server_uuid == uuid))
        session.execute(delete(ServerImage).where(ServerImage.server_uuid == uuid))
        revocation.revoke(session, uuid, hostname)
        session.delete(server)
    _forget_heartbeat(ctx, uuid)
    return {"uuid": uuid, "hostname": hostname, "revoked": True}


def _forget_heartbeat(ctx: ServiceContext, uuid: str) -> None:
    """Drop the node's heartbeat entry. Best effort: the reconciler ignores a revoked
    node's heartbeat anyway, and walks only the servers the database has."""
    try:
        with redis.Redis.from_url(ctx.settings.redis_url, socket_timeout=5) as client:
            client.hdel(HEARTBEAT_KEY, uuid)
    except (redis.RedisError, OSError) as exc:
        log.warning("server %s forgotten, but its heartbeat entry stays for now: %s",
                    uuid, exc)
