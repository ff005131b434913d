"""A machine's snapshots: create, list, get, delete, and start the machine from one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from headnode.api.cloudapi import shapes
from headnode.api.cloudapi.common import body_or_query, ctx, job_caller, tenant
from headnode.services import snapshots
from headnode.services import tenant as tenant_service
from schemas.cloudapi import SnapshotCreate, load

blp = Blueprint("cloudapi_snapshots", __name__)


def default_snapshot_name() -> str:
    """CloudAPI names an unnamed snapshot after the time it was asked for."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _owned(uuid: str) -> None:
    tenant_service.owned_machine(ctx(), uuid, tenant().uuid)


@blp.post("/machines/<uuid>/snapshots")
def create_snapshot(uuid: str) -> Any:
    body = load(SnapshotCreate(), body_or_query())
    _owned(uuid)
    name = body.get("name") or default_snapshot_name()
    created = snapshots.create_snapshot(ctx(), uuid, name, job_caller())
    shown = shapes.snapshot(created["snapshot"])
    response = jsonify(shown)
    response.headers["Location"] = f"{request.path}/{shown['name']}"
    return response, 201


@blp.get("/machines/<uuid>/snapshots")
def list_snapshots(uuid: str) -> Any:
    _owned(uuid)
    return jsonify([shapes.snapshot(s) for s in snapshots.list_snapshots(ctx(), uuid)])


@blp.get("/machines/<uuid>/snapshots/<name>")
def get_snapshot(uuid: str, name: str) -> Any:
    _owned(uuid)
    return jsonify(shapes.snapshot(snapshots.get_snapshot(ctx(), uuid, name)))


@blp.delete("/machines/<uuid>/snapshots/<name>")
def delete_snapshot(uuid: str, name: str) -> Any:
    _owned(uuid)
    snapshots.delete_snapshot(ctx(), uuid, name, job_caller())
    return Response(status=204)


@blp.post("/machines/<uuid>/snapshots/<name>")
def start_from_snapshot(uuid: str, name: str) -> Any:
    _owned(uuid)
    snapshots.start_from_snapshot(ctx(), uuid, name, job_caller())
    return Response(status=202)
