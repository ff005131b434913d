"""Builders for service and workflow tests on the real PostgreSQL of tests/conftest.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from headnode.store.models import Job, Machine, Reservation, Server
from tests.unit.headnode.api.conftest import (
    add,
    count,
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)

__all__ = ["add", "count", "make_account", "make_image", "make_package", "make_server",
           "make_machine", "server_row", "written"]


def server_row(ctx: Any, uuid: str) -> Server:
    with ctx.read() as session:
        server = session.get(Server, uuid)
        assert server is not None
        return server


def written(ctx: Any) -> tuple[int, int, int]:
    """How many machines, jobs and reservations exist."""
    return count(ctx, Machine), count(ctx, Job), count(ctx, Reservation)


def reservation_states(ctx: Any) -> dict[str, int]:
    with ctx.read() as session:
        rows = session.execute(
            select(Reservation.state, func.count()).group_by(Reservation.state)).all()
        return {state: int(n) for state, n in rows}


@pytest.fixture
def fleet(ctx: Any) -> dict[str, Any]:
    """One set-up server, an active package, an image and an account."""
    return {
        "server": make_server(ctx, hostname="cn1"),
        "package": make_package(ctx, name="small", memory=1024, disk=10240, cpu_cap=100),
        "image": make_image(ctx, name="base-64"),
        "owner": make_account(ctx, login="alice"),
    }
