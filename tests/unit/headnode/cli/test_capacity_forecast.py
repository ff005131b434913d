"""``sdc capacity forecast`` against the real operator API (served on 127.0.0.1 in a thread,
on the test run's PostgreSQL): the table, ``--json``, and a bad ``--days``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from headnode.store.models import utcnow
from tests.unit.headnode.api.conftest import make_package, make_server
from tests.unit.headnode.cli.test_placement import cells, live_api, sdc
from tests.unit.headnode.services.test_forecast import linear_history

__all__ = ["live_api"]  # the fixture this module's tests use


def test_forecast_table(live_api: tuple[str, Any]) -> None:
    _, ctx = live_api
    make_server(ctx, hostname="cn1")
    make_package(ctx, name="small", memory=1024, disk=10240)
    make_package(ctx, name="huge", memory=64 * 1024, disk=10240)
    linear_history(ctx, days=10, ram_per_day=1024, now=utcnow() - timedelta(minutes=5))
    result = sdc(live_api, "capacity", "forecast", "--days", "20")
    assert result.exit_code == 0, result.output
    assert "used RAM grows 1024 MiB a day" in result.output
    assert "R² 1.000; 11 snapshots" in result.output
    small = cells(result.output, "small")
    assert small[1] == "54" and small[5] == "54.0" and small[6:] == []  # no "why no date"
    expected = datetime.now() + timedelta(days=54)  # the CLI shows the API's UTC as given
    assert small[2][:10] in {(expected + timedelta(minutes=m)).strftime("%Y-%m-%d")
                             for m in (-10, 10)}
    huge = cells(result.output, "huge")
    assert huge[1] == "0" and huge[6] == "fits nowhere now"
    assert "assumptions:" in result.output and "linearly" in result.output
    assert "(small 100%)" in result.output  # huge fits nowhere: no share of the growth


def test_forecast_json_and_bad_days(live_api: tuple[str, Any]) -> None:
    _, ctx = live_api
    make_server(ctx, hostname="cn1")
    make_package(ctx, name="small", memory=1024, disk=10240)
    result = sdc(live_api, "--json", "capacity", "forecast")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["days"] == 30 and answer["trend"] is None
    assert answer["packages"][0]["reason"] == answer["reason"]
    table = sdc(live_api, "capacity", "forecast")
    assert table.exit_code == 0 and "not enough capacity history" in table.output
    bad = sdc(live_api, "capacity", "forecast", "--days", "0")
    assert bad.exit_code == 2 and "--days" in bad.output
