"""The operator API on a real PostgreSQL (fixtures in tests/conftest.py), jobs recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from headnode.store.models import Account, Image, Machine, Package, Server, new_uuid

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture
def api(client: FlaskClient) -> Callable[..., Any]:
    """``api("get", "/ops/servers", json=...)`` with the operator token."""

    def call(method: str, path: str, **kwargs: Any) -> Any:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return getattr(client, method)(path, headers=headers, **kwargs)

    return call


@pytest.fixture
def sdc(app: Flask) -> Any:
    return app.extensions["sdc"]


def add(ctx: Any, row: Any) -> Any:
    with ctx.transaction() as session:
        session.add(row)
    return row


def make_server(ctx: Any, **overrides: Any) -> Server:
    attrs: dict[str, Any] = {
        "uuid": new_uuid(), "hostname": "cn1", "backend": "sim", "setup": True,
        "ram_mb": 65536, "cpus": 16, "disk_mb": 1_000_000, "last_heartbeat": 1.0e9,
    }
    attrs.update(overrides)
    return add(ctx, Server(**attrs))


def make_package(ctx: Any, **overrides: Any) -> Package:
    attrs: dict[str, Any] = {"name": "small", "memory": 1024, "disk": 10240}
    attrs.update(overrides)
    return add(ctx, Package(**attrs))


def make_machine(ctx: Any, fleet: dict[str, Any], **overrides: Any) -> Machine:
    attrs: dict[str, Any] = {
        "alias": "web", "owner_uuid": fleet["owner"].uuid,
        "package_uuid": fleet["package"].uuid, "image_uuid": fleet["image"].uuid,
        "server_uuid": fleet["server"].uuid, "state": "running", "ram_mb": 1024,
        "disk_mb": 10240,
    }
    attrs.update(overrides)
    return add(ctx, Machine(**attrs))


def make_image(ctx: Any, **overrides: Any) -> Image:
    attrs: dict[str, Any] = {"name": "base-64", "version": "24.4.0", "os": "smartos",
                             "size_mb": 300}
    attrs.update(overrides)
    return add(ctx, Image(**attrs))


def make_account(ctx: Any, **overrides: Any) -> Account:
    attrs: dict[str, Any] = {"login": "alice", "email": "alice@example.com"}
    attrs.update(overrides)
    return add(ctx, Account(**attrs))


def count(ctx: Any, model: Any) -> int:
    with ctx.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def fleet(sdc: Any) -> dict[str, Any]:
    """A server, a package, an image and an owner, as most API tests need them."""
    return {
        "server": make_server(sdc),
        "package": make_package(sdc, name="small", memory=1024, disk=10240),
        "image": make_image(sdc, name="base-64"),
        "owner": make_account(sdc, login="alice"),
    }
