"""``/ops/networks``: operators define the networks machines get addresses on."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import networks
from schemas.networks import Network, NetworkCreate, NetworkIp

blp = Blueprint("networks", __name__, url_prefix="/ops/networks",
                description="Networks (NAPI): subnets, provision ranges, public or owned")


@blp.route("")
class Networks(MethodView):
    @blp.response(200, Network(many=True))
    def get(self) -> Any:
        return [networks.network_to_dict(n) for n in networks.list_networks(service_context())]

    @blp.arguments(NetworkCreate)
    @blp.response(201, Network)
    def post(self, attrs: dict[str, Any]) -> Any:
        return networks.network_to_dict(networks.create_network(service_context(), attrs))


@blp.route("/<ident>")
class NetworkByIdent(MethodView):
    """``ident`` is the network's uuid or its name."""

    @blp.response(200, Network)
    def get(self, ident: str) -> Any:
        return networks.network_to_dict(networks.get_network(service_context(), ident))

    @blp.response(204)
    def delete(self, ident: str) -> None:
        networks.delete_network(service_context(), ident)


@blp.route("/<ident>/ips")
class NetworkIps(MethodView):
    @blp.response(200, NetworkIp(many=True))
    def get(self, ident: str) -> Any:
        ctx = service_context()
        network = networks.get_network(ctx, ident)
        return networks.list_network_ips(ctx, network.uuid, None)
