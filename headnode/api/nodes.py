"""What compute nodes fetch and upload on the head node: image files, over URLs the head node
signed for one node, one image and one method (no operator token; see headnode.imagestore).
Outside ``/ops/`` on purpose: the operator-token check does not apply here."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.files import file_response, upload_chunks
from headnode.api.ops import service_context
from headnode.imagestore import ImageStore, TransferRejected
from headnode.services import images

blp = Blueprint("nodes", __name__, url_prefix="/images",
                description="Image files for compute nodes (signed URLs)")


def _check_signature(method: str, uuid: str) -> Any:
    try:
        ImageStore(service_context().settings).verify(method, uuid, request.args)
    except TransferRejected as exc:
        return jsonify({"code": "Forbidden", "message": str(exc)}), 403
    return None


@blp.route("/<uuid>/file")
class NodeImageFile(MethodView):
    def get(self, uuid: str) -> Any:
        """Download an image's file (``?server=&expires=&signature=``)."""
        refused = _check_signature("GET", uuid)
        if refused is not None:
            return refused
        return file_response(images.image_file_path(service_context(), uuid))

    def put(self, uuid: str) -> Any:
        """Upload the file of an image being made from a machine."""
        refused = _check_signature("PUT", uuid)
        if refused is not None:
            return refused
        return images.receive_node_upload(service_context(), uuid, upload_chunks())
