from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import images
from schemas.ops import Image

blp = Blueprint("images", __name__, url_prefix="/ops/images",
                description="Image manifests")


@blp.route("")
class Images(MethodView):
    @blp.response(200, Image(many=True))
    def get(self) -> Any:
        return images.list_images(service_context())

    @blp.arguments(Image)
    @blp.response(201, Image)
    def post(self, manifest: dict[str, Any]) -> Any:
        return images.create_image(service_context(), manifest)


@blp.route("/<uuid>")
class ImageByUuid(MethodView):
    @blp.response(200, Image)
    def get(self, uuid: str) -> Any:
        return images.get_image(service_context(), uuid)
