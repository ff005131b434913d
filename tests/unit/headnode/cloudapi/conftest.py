"""The tenant API (CloudAPI) on a real PostgreSQL and Redis, requests signed as triton signs
them. Two tenants, alice and bob, each with a key; one operator; one sim server; a package;
a public image and a private image of each tenant; a public network and a private one each.
Jobs are recorded, not run: ``finish`` plays the worker's part where a test needs it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from headnode.services import keys, networks
from headnode.store.models import Job, Machine
from tests.support.httpsig_client import Signer, signed_call
from tests.unit.headnode.api.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)


@dataclass
class Tenant:
    login: str
    uuid: str
    signer: Signer
    image_uuid: str  # private to this tenant
    network_uuid: str  # private to this tenant


@dataclass
class World:
    alice: Tenant
    bob: Tenant
    operator: Tenant
    package: Any
    public_image_uuid: str
    public_network_uuid: str


@pytest.fixture
def sdc(app: Flask) -> Any:
    return app.extensions["sdc"]


def _tenant(ctx: Any, login: str, subnet: str, operator: bool = False) -> Tenant:
    account = make_account(ctx, login=login, email=f"{login}@example.com", operator=operator)
    signer = Signer(login)
    keys.create_key(ctx, account.uuid, "main", signer.public_line)
    image = make_image(ctx, name=f"{login}-private", public=False, owner_uuid=account.uuid)
    network = networks.create_network(ctx, {"name": f"{login}-net", "subnet": subnet,
                                            "owner": account.uuid})
    return Tenant(login, account.uuid, signer, image.uuid, network.uuid)


@pytest.fixture
def world(sdc: Any) -> World:
    make_server(sdc)
    package = make_package(sdc)
    image = make_image(sdc)
    public = networks.create_network(sdc, {"name": "external", "subnet": "10.88.0.0/24",
                                           "gateway": "10.88.0.1"})
    return World(alice=_tenant(sdc, "alice", "192.168.1.0/24"),
                 bob=_tenant(sdc, "bob", "192.168.2.0/24"),
                 operator=_tenant(sdc, "admin", "192.168.3.0/24", operator=True),
                 package=package, public_image_uuid=image.uuid,
                 public_network_uuid=public.uuid)


@pytest.fixture
def call(client: FlaskClient) -> Any:
    """``call(tenant, "post", "/my/machines", json={...})``: a request signed by tenant."""

    def do(who: Tenant, method: str, target: str, **kwargs: Any) -> Any:
        return signed_call(client, who.signer, method, target, **kwargs)

    return do


def finish(ctx: Any, machine_uuid: str, state: str = "running",
           execution: str = "succeeded") -> None:
    """Play the worker: the machine's job ends and the machine is left in ``state``."""
    with ctx.transaction() as session:
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        if machine.job_uuid:
            session.execute(update(Job).where(Job.uuid == machine.job_uuid).values(
                execution=execution, finished_at=datetime.now(UTC)))
        machine.state = state
        machine.job_uuid = None


@pytest.fixture
def machine_of(call: Any, sdc: Any, world: World) -> Any:
    """``machine_of(tenant, name)``: a running machine of that tenant, made through the API."""

    def make(who: Tenant, name: str = "web", **body: Any) -> dict[str, Any]:
        answer = call(who, "post", "/my/machines",
                      json={"name": name, "package": "small", "image": "base-64", **body})
        assert answer.status_code == 201, answer.get_json()
        finish(sdc, answer.get_json()["id"])
        return dict(answer.get_json())

    return make
