from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import forecast, placement, planning
from schemas.placement import (
    AllocateAnswer,
    AllocateRequest,
    CapacityAnswer,
    ForecastAnswer,
    ForecastQuery,
    HistoryPoint,
    HistoryQuery,
    SimulateAnswer,
    SimulateRequest,
)

blp = Blueprint("placement", __name__, url_prefix="/ops",
                description="Placement explanations and capacity planning")


@blp.route("/allocate")
class Allocate(MethodView):
    @blp.arguments(AllocateRequest)
    @blp.response(200, AllocateAnswer)
    def post(self, body: dict[str, Any]) -> Any:
        """Dry run: the server a create would get now, and per step how many servers each
        filter removed and why. Nothing is written."""
        return placement.dry_run(service_context(), body)


@blp.route("/capacity")
class Capacity(MethodView):
    @blp.response(200, CapacityAnswer)
    def get(self) -> Any:
        """RAM, CPU and disk per server and for the fleet (total, provisioned, reserved,
        free), and per active package how many more machines fit."""
        return planning.report(service_context())


@blp.route("/capacity/simulate")
class CapacitySimulate(MethodView):
    @blp.arguments(SimulateRequest)
    @blp.response(200, SimulateAnswer)
    def post(self, body: dict[str, Any]) -> Any:
        """What if: add servers (templates) or remove some, then place machines as creates
        would. Nothing is written."""
        return planning.simulate(service_context(), body)


@blp.route("/capacity/history")
class CapacityHistory(MethodView):
    @blp.arguments(HistoryQuery, location="query")
    @blp.response(200, HistoryPoint(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """Fleet utilization snapshots, oldest first (written periodically by beat)."""
        return planning.history(service_context(), query.get("since"), query["limit"])


@blp.route("/capacity/forecast")
class CapacityForecast(MethodView):
    @blp.arguments(ForecastQuery, location="query")
    @blp.response(200, ForecastAnswer)
    def get(self, query: dict[str, Any]) -> Any:
        """Per active package, the date it stops fitting at the current growth: a
        least-squares trend of the used RAM over the last ``days`` of history, and new
        machines in the current mix placed as creates would. With the range of dates, the
        fit's R², and the assumptions. Nothing is written."""
        return forecast.forecast(service_context(), query["days"])
