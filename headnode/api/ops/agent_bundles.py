"""The agent wheels the head node can install on nodes (``sdc server upgrade-agent
--wheel``): uploaded here, listed by version."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.nodesetup.wheels import MAX_BYTES
from headnode.services import node_setup
from schemas.node_setup import AgentBundle

blp = Blueprint("agent_bundles", __name__, url_prefix="/ops/agent-bundles",
                description="Agent wheels for the nodes (setup and upgrade-agent)")


@blp.route("")
class AgentBundles(MethodView):
    @blp.response(200, AgentBundle(many=True))
    def get(self) -> Any:
        """The versions a setup or an upgrade can install."""
        return node_setup.list_agent_bundles(service_context())


@blp.route("/<filename>")
class AgentBundleFile(MethodView):
    @blp.response(201, AgentBundle)
    @blp.alt_response(409, description="another wheel of that version is stored")
    @blp.alt_response(413, description="larger than a wheel of the agent may be")
    def put(self, filename: str) -> Any:
        """Store an sdc wheel (raw body, sdc-VERSION-py3-none-any.whl); its dependencies
        are fetched when a job first installs it."""
        # a wheel is larger than the API's JSON bodies, and bounded all the same
        request.max_content_length = MAX_BYTES
        return node_setup.store_agent_wheel(service_context(), filename, request.get_data())
