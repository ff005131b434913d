from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

blp = Blueprint("ping", __name__, url_prefix="/ops/ping",
                description="Liveness of the API (no authentication)")


class Pong(Schema):
    ping = fields.String()


@blp.route("")
class Ping(MethodView):
    @blp.doc(security=[])  # open: see headnode.api.app.OPEN_PATHS
    @blp.response(200, Pong)
    def get(self) -> dict[str, Any]:
        return {"ping": "pong"}
