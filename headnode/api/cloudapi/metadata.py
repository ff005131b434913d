"""A machine's tags and metadata (``/machines/:id/tags``, ``/machines/:id/metadata``)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from headnode.api.cloudapi.common import body_or_query, ctx, job_caller, tenant
from headnode.services import machine_meta
from schemas.cloudapi import load_pairs

blp = Blueprint("cloudapi_machine_meta", __name__)

KINDS = ("tags", "metadata")


def _kind(kind: str) -> machine_meta.Kind:
    return "tags" if kind == "tags" else "metadata"


def _value(value: Any) -> Response:
    """One value: JSON, or bare text for ``Accept: text/plain`` (as CloudAPI does)."""
    if request.accept_mimetypes.best_match(["application/json", "text/plain"]) == "text/plain":
        return Response(value if isinstance(value, str) else json.dumps(value),
                        mimetype="text/plain")
    return jsonify(value)


for kind in KINDS:
    base = f"/machines/<uuid>/{kind}"

    def list_all(uuid: str, kind: str = kind) -> Any:
        return jsonify(machine_meta.read(ctx(), uuid, tenant().uuid, _kind(kind)))

    def add(uuid: str, kind: str = kind) -> Any:
        values = load_pairs(body_or_query(), kind)
        return jsonify(machine_meta.add(ctx(), uuid, tenant().uuid, _kind(kind), values,
                                        job_caller()))

    def replace(uuid: str, kind: str = kind) -> Any:
        values = load_pairs(body_or_query(), kind)
        return jsonify(machine_meta.replace(ctx(), uuid, tenant().uuid, _kind(kind), values,
                                            job_caller()))

    def delete_all(uuid: str, kind: str = kind) -> Any:
        machine_meta.delete_all(ctx(), uuid, tenant().uuid, _kind(kind), job_caller())
        return Response(status=204)

    def get_one(uuid: str, key: str, kind: str = kind) -> Any:
        return _value(machine_meta.read_one(ctx(), uuid, tenant().uuid, _kind(kind), key))

    def delete_one(uuid: str, key: str, kind: str = kind) -> Any:
        machine_meta.delete_one(ctx(), uuid, tenant().uuid, _kind(kind), key, job_caller())
        return Response(status=204)

    blp.add_url_rule(base, f"list_{kind}", list_all, methods=["GET"])
    blp.add_url_rule(base, f"add_{kind}", add, methods=["POST"])
    blp.add_url_rule(base, f"replace_{kind}", replace, methods=["PUT"])
    blp.add_url_rule(base, f"delete_all_{kind}", delete_all, methods=["DELETE"])
    blp.add_url_rule(f"{base}/<path:key>", f"get_{kind}", get_one, methods=["GET"])
    blp.add_url_rule(f"{base}/<path:key>", f"delete_{kind}", delete_one, methods=["DELETE"])
