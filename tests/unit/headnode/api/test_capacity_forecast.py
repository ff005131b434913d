"""``GET /ops/capacity/forecast``: the service's answer on the wire, its OpenAPI entry, and
bad ``days`` refused naming the field."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from headnode.store.models import utcnow
from tests.unit.headnode.services.test_forecast import linear_history


def test_forecast_on_the_wire(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    # cn1 takes 54 more machines of 1024 MiB (55705 MiB placeable); used RAM grows 1024 MiB
    # a day: small stops fitting 54 days after the answer's "now"
    linear_history(sdc, days=10, ram_per_day=1024, now=utcnow() - timedelta(minutes=5))
    answer = api("get", "/ops/capacity/forecast", query_string={"days": 20})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    now = datetime.fromisoformat(body["now"])
    [small] = body["packages"]
    assert small["name"] == "small" and small["fits_now"] == 54
    date = datetime.fromisoformat(small["date"])
    assert abs((date - now - timedelta(days=54)).total_seconds()) < 60
    assert small["earliest"] and small["latest"] and small["reason"] is None
    assert body["days"] == 20 and body["history"]["points"] == 11
    assert body["trend"]["ram_mb"]["per_day"] == pytest.approx(1024)
    assert body["reason"] is None and len(body["assumptions"]) >= 5


def test_forecast_without_history(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    body = api("get", "/ops/capacity/forecast").get_json()
    assert body["days"] == 30 and body["trend"] is None
    assert body["reason"].startswith("not enough capacity history")
    assert body["packages"][0]["date"] is None
    assert body["packages"][0]["reason"] == body["reason"]


@pytest.mark.parametrize("days", ["0", "-3", "3651", "ten", "1.5"])
def test_bad_days_is_refused_naming_it(api: Any, sdc: Any, fleet: dict[str, Any],
                                       days: str) -> None:
    answer = api("get", "/ops/capacity/forecast", query_string={"days": days})
    assert answer.status_code == 422, answer.get_json()
    assert answer.get_json()["code"] == "ValidationFailed"
    assert set(answer.get_json()["errors"]) == {"days"}


def test_forecast_is_in_the_openapi_document(client: Any) -> None:
    doc = client.get("/ops/openapi.json").get_json()
    operation = doc["paths"]["/ops/capacity/forecast"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["days"]
    assert "ForecastAnswer" in str(operation["responses"]["200"])
