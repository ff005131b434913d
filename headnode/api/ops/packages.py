from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import packages
from schemas.ops import Package

blp = Blueprint("packages", __name__, url_prefix="/ops/packages",
                description="Packages: the sizes machines are made in")


@blp.route("")
class Packages(MethodView):
    @blp.response(200, Package(many=True))
    def get(self) -> Any:
        return packages.list_packages(service_context())

    @blp.arguments(Package)
    @blp.response(201, Package)
    def post(self, attrs: dict[str, Any]) -> Any:
        return packages.create_package(service_context(), attrs)


@blp.route("/<ident>")
class PackageByIdent(MethodView):
    """``ident`` is the package's uuid or its name."""

    @blp.response(200, Package)
    def get(self, ident: str) -> Any:
        return packages.get_package(service_context(), ident)

    @blp.response(204)
    def delete(self, ident: str) -> None:
        packages.delete_package(service_context(), ident)
