"""The caller's account, its SSH keys, and where this cloud's APIs are."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from headnode.api.cloudapi import shapes
from headnode.api.cloudapi.common import ctx, json_body, tenant
from headnode.services import accounts, keys
from headnode.services import tenant as tenant_service
from schemas.cloudapi import AccountUpdate, KeyCreate, load

blp = Blueprint("cloudapi_account", __name__)

#: the one datacenter this head node runs
DATACENTER_NAME = "local"


@blp.get("")
def get_account() -> Any:
    return jsonify(shapes.account(accounts.get_account(ctx(), tenant().uuid)))


@blp.post("")
def update_account() -> Any:
    changes = load(AccountUpdate(), json_body())
    return jsonify(shapes.account(tenant_service.update_account(ctx(), tenant().uuid, changes)))


@blp.get("/keys")
def list_keys() -> Any:
    return jsonify([shapes.key(keys.key_to_dict(k)) for k in keys.list_keys(ctx(), tenant().uuid)])


@blp.post("/keys")
def create_key() -> Any:
    body = load(KeyCreate(), json_body())
    created = keys.create_key(ctx(), tenant().uuid, body.get("name"), body["key"])
    shown = shapes.key(keys.key_to_dict(created))
    response = jsonify(shown)
    response.headers["Location"] = f"{request.path}/{shown['name']}"
    return response, 201


@blp.get("/keys/<name>")
def get_key(name: str) -> Any:
    return jsonify(shapes.key(keys.key_to_dict(keys.get_key(ctx(), tenant().uuid, name))))


@blp.delete("/keys/<name>")
def delete_key(name: str) -> Any:
    keys.delete_key(ctx(), tenant().uuid, name)
    return "", 204


@blp.get("/datacenters")
def datacenters() -> Any:
    return jsonify({DATACENTER_NAME: request.host_url.rstrip("/")})


@blp.get("/services")
def services() -> Any:
    return jsonify({"cloudapi": request.host_url.rstrip("/")})
