"""Machines: list, get, create, delete, actions (start, stop, reboot, resize, rename), audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from headnode.api.cloudapi import shapes
from headnode.api.cloudapi.common import body_or_query, ctx, job_caller, json_body, tenant
from headnode.services import machines, packages
from headnode.services import tenant as tenant_service
from headnode.services.errors import InvalidArgument, NotFound
from headnode.services.resolve import is_uuid
from headnode.services.tenant import MachineFilter
from schemas.cloudapi import (
    MAX_LIMIT,
    CloudApiInputError,
    MachineAction,
    MachineCreate,
    MachineListQuery,
    gather_prefixed,
    load,
)

blp = Blueprint("cloudapi_machines", __name__)


def package_names() -> dict[str, str]:
    return {p.uuid: p.name for p in packages.list_packages(ctx())}


def shown(machine: dict[str, Any], names: dict[str, str] | None = None) -> dict[str, Any]:
    return shapes.machine(machine, names if names is not None else package_names())


def _tombstone(value: str | None) -> datetime | bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    return tenant_service.tombstone_since(int(value))


def _list_filter(query: dict[str, Any], tags: dict[str, str]) -> MachineFilter | None:
    """CloudAPI's filters in our terms; None when nothing can match."""
    if query.get("tags") == "*":  # CloudAPI: every tagged machine, whatever else is asked
        return MachineFilter(any_tag=True)
    if query.get("docker") is True:  # no machine here is a Docker container
        return None
    package_uuid = None
    if "package" in query:
        try:
            package_uuid = packages.get_package(ctx(), query["package"]).uuid
        except NotFound:
            return None
    state = query.get("state")
    return MachineFilter(
        alias=query.get("name"), image_uuid=query.get("image"), package_uuid=package_uuid,
        state=shapes.STATE_FILTERS.get(state, state) if state else None,
        ram_mb=query.get("memory"),
        # brand is a filter since API 8.0.0
        brand=None if shapes.before(None, "8.0.0") else query.get("brand"),
        hvm={"virtualmachine": True, "smartmachine": False}.get(query.get("type", "")),
        hvm_brands=shapes.HVM_BRANDS, tags={k: str(v) for k, v in tags.items()},
        destroyed_since=_tombstone(query.get("tombstone")))


@blp.route("/machines", methods=["GET", "HEAD"])
def list_machines() -> Any:
    args = dict(request.args.items())
    wanted_tags = gather_prefixed(args, "tag.")
    query = load(MachineListQuery(), args)
    limit, offset = query["limit"], query["offset"]
    wanted = _list_filter(query, wanted_tags)
    rows: list[dict[str, Any]] = []
    total = 0
    if wanted is not None:
        rows, total = tenant_service.list_machines(ctx(), tenant().uuid, wanted, limit=limit,
                                                   offset=offset)
    names = package_names()
    response = jsonify([shown(m, names) for m in rows])
    response.headers["x-resource-count"] = str(total)
    response.headers["x-query-limit"] = str(min(limit, MAX_LIMIT))
    if request.method == "HEAD":
        response.set_data(b"")
    return response


def _visible_image_uuid(ident: str) -> str:
    """The image a tenant may provision from: by id, or by name (newest active version)."""
    try:
        if is_uuid(ident):
            return tenant_service.visible_image(ctx(), ident, tenant().uuid).uuid
    except NotFound as exc:
        raise InvalidArgument("image", f"no image {ident!r}") from exc
    named = tenant_service.visible_images(ctx(), tenant().uuid, name=ident)
    if not named:
        raise InvalidArgument("image", f"no image {ident!r}")
    return max(named, key=lambda i: i.created_at).uuid


def _network_ids(networks: list[Any]) -> list[str]:
    return [n["ipv4_uuid"] if isinstance(n, dict) else n for n in networks]


@blp.post("/machines")
def create_machine() -> Any:
    body = load(MachineCreate(), json_body())
    request_body: dict[str, Any] = {
        "owner": tenant().uuid,
        "package": body["package"],
        "image": _visible_image_uuid(body["image"]),
        "tags": body.get("tags", {}),
        "metadata": body.get("metadata", {}),
    }
    if body.get("name"):
        request_body["alias"] = body["name"]
    if body.get("networks"):
        request_body["networks"] = _network_ids(body["networks"])
    if body.get("affinity"):
        request_body["affinity"] = body["affinity"]
    created = machines.create_machine(ctx(), request_body, job_caller(), require_keys=True)
    response = jsonify(shown(created))
    response.headers["Location"] = f"{request.path}/{created['uuid']}"
    return response, 201


@blp.get("/machines/<uuid>")
def get_machine(uuid: str) -> Any:
    try:
        return jsonify(shown(tenant_service.owned_machine(ctx(), uuid, tenant().uuid)))
    except NotFound:
        gone = tenant_service.destroyed_machine(ctx(), uuid, tenant().uuid)
        if gone is None:
            raise
        # CloudAPI answers 410 Gone, with the machine, for a destroyed one.
        return jsonify(shown(gone)), 410


@blp.delete("/machines/<uuid>")
def delete_machine(uuid: str) -> Any:
    tenant_service.owned_machine(ctx(), uuid, tenant().uuid)
    machines.destroy_machine(ctx(), uuid, job_caller())
    return Response(status=204)


def _required(data: dict[str, Any], name: str, action: str) -> str:
    value = data.get(name)
    if not value:
        raise CloudApiInputError("MissingParameter", name, f"{name} is required to {action}")
    return str(value)


@blp.post("/machines/<uuid>")
def machine_action(uuid: str) -> Any:
    data = body_or_query()
    params = load(MachineAction(), data)
    tenant_service.owned_machine(ctx(), uuid, tenant().uuid)
    action = params["action"]
    if action == "resize":
        package = _required(params, "package", action)
        machines.resize_machine(ctx(), uuid, package, job_caller())
    elif action == "rename":
        name = _required(params, "name", action)
        machines.rename_machine(ctx(), uuid, name, job_caller())
    else:
        machines.machine_action(ctx(), uuid, action, job_caller())
    return Response(status=202)


@blp.get("/machines/<uuid>/audit")
def machine_audit(uuid: str) -> Any:
    try:
        tenant_service.owned_machine(ctx(), uuid, tenant().uuid)
    except NotFound:
        if tenant_service.destroyed_machine(ctx(), uuid, tenant().uuid) is None:
            raise
    return jsonify([shapes.audit(e) for e in tenant_service.machine_audit(ctx(), uuid)])
