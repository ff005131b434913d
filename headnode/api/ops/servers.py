from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import operator_caller, service_context
from headnode.services import node_setup, servers
from schemas.node_setup import AgentUpgradeRequest, NodeJob, ServerSetupRequest
from schemas.ops import Server, ServerListQuery, ServerUpdate

blp = Blueprint("servers", __name__, url_prefix="/ops/servers",
                description="Compute nodes: set up (over SSH, as a job), reserve, label with "
                            "traits, maintenance, agent upgrades, forget")


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


@blp.route("/setup")
class ServerSetup(MethodView):
    @blp.arguments(ServerSetupRequest)
    @blp.response(202, NodeJob)
    @blp.alt_response(404, description="no agent bundle of that version")
    @blp.alt_response(409, description="another setup or upgrade works on that node "
                      "(NodeBusy)")
    def post(self, body: dict[str, Any]) -> Any:
        """Set a node up over SSH (a `server_setup` job: follow it at /ops/jobs/<job_uuid>):
        check it, install the agent, configure and start it, wait for its first heartbeat,
        mark it set up. The node must let the head node's key in (`sdc server ssh-key`)."""
        return node_setup.start_setup(service_context(), body, operator_caller())


@blp.route("/<uuid>/upgrade-agent")
class ServerUpgradeAgent(MethodView):
    @blp.arguments(AgentUpgradeRequest)
    @blp.response(202, NodeJob)
    @blp.alt_response(404, description="no such server, or no agent bundle of that version")
    @blp.alt_response(409, description="forgotten (ServerRevoked), no SSH address "
                      "(NoSshAddress), or another node job works on it (NodeBusy)")
    def post(self, body: dict[str, Any], uuid: str) -> Any:
        """Move the server's agent to another version (an `agent_upgrade` job), or back to
        the release it ran before (`rollback`)."""
        return node_setup.start_upgrade(service_context(), uuid, body["version"],
                                        body["rollback"], operator_caller())
