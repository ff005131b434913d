from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.files import file_response, upload_chunks
from headnode.api.ops import operator_caller, service_context
from headnode.services import images
from schemas.ops import Image, ImageFromMachine, ImageJob

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


@blp.route("/<uuid>/file")
class ImageFile(MethodView):
    @blp.response(200)
    def get(self, uuid: str) -> Any:
        """The image's file as stored."""
        return file_response(images.image_file_path(service_context(), uuid))

    @blp.response(200, Image)
    def put(self, uuid: str) -> Any:
        """The file an unactivated manifest lists (raw body); kept only if its size and
        sha256 match the manifest, then the image is active."""
        return images.import_image_file(service_context(), uuid, upload_chunks())


@blp.route("/from-machine")
class ImageFromMachineView(MethodView):
    @blp.arguments(ImageFromMachine)
    @blp.response(202, ImageJob)
    def post(self, body: dict[str, Any]) -> Any:
        """Make an image of a machine (a job); the image is ``creating`` until it ends."""
        return images.create_image_from_machine(
            service_context(), body["machine"], body["name"], body["version"],
            operator_caller(), description=body["description"])
