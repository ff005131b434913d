"""What a tenant provisions from: images (public and its own), packages, networks."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from headnode.api.cloudapi import shapes
from headnode.api.cloudapi.common import ctx, tenant
from headnode.services import networks, packages
from headnode.services import tenant as tenant_service
from schemas.cloudapi import ImageListQuery, load

blp = Blueprint("cloudapi_catalog", __name__)


@blp.get("/images")
def list_images() -> Any:
    filters = load(ImageListQuery(), dict(request.args.items()))
    images = tenant_service.visible_images(ctx(), tenant().uuid, **filters)
    return jsonify([shapes.image(i) for i in images])


@blp.get("/images/<uuid>")
def get_image(uuid: str) -> Any:
    return jsonify(shapes.image(tenant_service.visible_image(ctx(), uuid, tenant().uuid)))


@blp.get("/packages")
def list_packages() -> Any:
    return jsonify([shapes.package(p) for p in packages.list_packages(ctx(), active=True)])


@blp.get("/packages/<ident>")
def get_package(ident: str) -> Any:
    return jsonify(shapes.package(packages.get_package(ctx(), ident)))


@blp.get("/networks")
def list_networks() -> Any:
    return jsonify([networks.network_to_cloudapi(n)
                    for n in networks.list_networks(ctx(), tenant().uuid)])


@blp.get("/networks/<uuid>")
def get_network(uuid: str) -> Any:
    return jsonify(networks.network_to_cloudapi(
        networks.get_network(ctx(), uuid, tenant().uuid)))
