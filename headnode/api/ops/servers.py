from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import servers
from schemas.ops import Server, ServerListQuery, ServerUpdate

blp = Blueprint("servers", __name__, url_prefix="/ops/servers",
                description="Compute nodes: set up, reserve, label with traits, maintenance, "
                            "forget")


@blp.route("")
class Servers(MethodView):
    @blp.arguments(ServerListQuery, location="query")
    @blp.response(200, Server(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        return servers.list_servers(service_context(), **query)


@blp.route("/<uuid>")
class ServerByUuid(MethodView):
    @blp.response(200, Server)
    def get(self, uuid: str) -> Any:
        return servers.get_server(service_context(), uuid)

    @blp.arguments(ServerUpdate)
    @blp.response(200, Server)
    def put(self, changes: dict[str, Any], uuid: str) -> Any:
        return servers.update_server(service_context(), uuid, changes)

    @blp.response(204)
    def delete(self, uuid: str) -> None:
        """Forget the server and revoke its node's credentials; 409 ``ServerInUse`` while
        machines that are not destroyed remain on it."""
        servers.forget_server(service_context(), uuid)
