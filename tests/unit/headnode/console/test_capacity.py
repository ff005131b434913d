"""The capacity planner pages on the real PostgreSQL: what they show is what the planning and
placement services answer (the fits, the history, the what-if, the explain), tenants never
see them, and a refused form comes back with the field named."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from headnode.services import forecast, planning
from headnode.store.models import CapacitySnapshot, utcnow
from tests.unit.headnode.api.conftest import add, count, make_account, make_package, make_server
from tests.unit.headnode.console.conftest import sign_in_as_tenant

URLS = ("/console/capacity", "/console/capacity?days=30", "/console/capacity/whatif",
        "/console/capacity/whatif?place.0.package=small&place.0.count=1",
        "/console/capacity/explain", "/console/capacity/explain?package=small&image=base-64",
        "/console/capacity/forecast", "/console/capacity/forecast?days=7")


def snapshot(ctx: Any, minutes_ago: float, ram_used: int, machines: int) -> None:
    """A history point with ``ram_used`` of 65,536 MiB used, half of it provisioned and half
    reserved (the chart adds them up)."""
    parts = {f"{r}_{p}{u}": 0 for r, u in (("ram", "_mb"), ("cpu", ""), ("disk", "_mb"))
             for p in ("total", "provisioned", "reserved", "free")}
    parts.update(ram_total_mb=65536, ram_provisioned_mb=ram_used // 2,
                 ram_reserved_mb=ram_used - ram_used // 2, cpu_total=1600,
                 disk_total_mb=1_000_000)
    add(ctx, CapacitySnapshot(taken_at=utcnow() - timedelta(minutes=minutes_ago), servers=1,
                              placeable_servers=1, machines=machines, **parts))


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    answer = client.get(url)
    text = answer.get_data(as_text=True)
    assert answer.status_code == status, text
    assert text.count("<h1>") == 1
    return text


def whatif_url(**fields: str) -> str:
    return "/console/capacity/whatif?" + urlencode({k.replace("__", "."): v
                                                    for k, v in fields.items()})


def line_svg(text: str, title: str) -> tuple[str, str]:
    """The aria-label and the body of the line chart titled ``title``."""
    found = re.search(rf'<svg class="chart line"[^>]*aria-label="{title}([^"]*)">(.*?)</svg>',
                      text, re.S)
    assert found, title
    return found.group(1), found.group(2)


def cell(text: str, table_class: str, row: str) -> list[str]:
    """The cells of the row headed ``row`` in the table of ``table_class``."""
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', text, re.S)
    assert table, table_class
    found = re.search(rf'<th scope="row">{re.escape(row)}</th>(.*?)</tr>', table.group(1), re.S)
    assert found, row
    return [re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)]


# -- who sees it -----------------------------------------------------------------------------

@pytest.mark.parametrize("url", URLS)
def test_a_tenant_gets_404_on_every_capacity_url(client: FlaskClient, sdc: Any,
                                                 fleet: dict[str, Any], url: str) -> None:
    sign_in_as_tenant(client, fleet["owner"])
    assert client.get(url).status_code == 404


def test_a_visitor_is_sent_to_sign_in(client: FlaskClient) -> None:
    answer = client.get("/console/capacity")
    assert answer.status_code == 302 and "/console/signin" in answer.headers["Location"]


def test_the_nav_shows_capacity_to_operators_only(operator: FlaskClient,
                                                  fleet: dict[str, Any]) -> None:
    assert 'href="/console/capacity"' in page(operator, "/console/")
    tenant = sign_in_as_tenant(operator, fleet["owner"])
    assert 'href="/console/capacity"' not in page(tenant, "/console/")


# -- the page --------------------------------------------------------------------------------

def test_the_page_shows_each_packages_fits_as_the_report_counts_them(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any]) -> None:
    make_package(sdc, name="large", memory=16384, disk=102400)
    make_server(sdc, hostname="cn2", ram_mb=32768)
    text = page(operator, "/console/capacity")
    report = planning.report(sdc)
    assert {p["name"] for p in report["packages"]} == {"small", "large"}
    for package in report["packages"]:
        assert cell(text, "capacity-fits", package["name"])[-1] == f"{package['fits']:,}"
    assert report["packages"][0]["fits"] > 0
    free = report["fleet"]["ram_mb"]["free"]
    assert cell(text, "capacity-fits", "large")[-1] != cell(text, "capacity-fits", "small")[-1]
    assert cell(text, "capacity-fleet", "RAM (MiB)")[-1] == f"{free:,}"


def test_an_empty_fleet_shows_no_package_and_no_history(operator: FlaskClient) -> None:
    text = page(operator, "/console/capacity")
    assert "No active package." in text
    assert "No capacity snapshot in this window yet" in text
    label, body = line_svg(text, "Fleet use over time")
    assert label == ": no data yet" and "no data yet" in body
    assert "<polyline" not in body and "<circle" not in body


def test_the_history_chart_has_one_point_per_snapshot(operator: FlaskClient, sdc: Any) -> None:
    for minutes, used, machines in ((120, 16384, 4), (60, 32768, 8), (5, 49152, 12)):
        snapshot(sdc, minutes, used, machines)
    snapshot(sdc, 60 * 24 * 8, 1024, 1)  # older than the default 7 days: not drawn
    text = page(operator, "/console/capacity")
    label, body = line_svg(text, "Fleet use over time")
    # RAM is the first series (circles), CPU squares, disk triangles: one each per snapshot
    assert body.count("<circle") == 3 and body.count("<rect") == 3
    assert body.count("<polygon") == 3 and body.count("<polyline") == 3
    assert "3 points from" in label
    assert "RAM last 75 % used (lowest 25, highest 75)" in label
    assert "Time (UTC)" in body and "% used" in body
    numbers = re.search(r"Fleet use over time in numbers \((\d+) points\)", text)
    assert numbers and numbers.group(1) == "3"
    # the month's window has the old one too
    month = page(operator, "/console/capacity?days=30")
    assert re.search(r"Fleet use over time in numbers \(4 points\)", month)


def test_one_snapshot_is_one_point_and_no_line(operator: FlaskClient, sdc: Any) -> None:
    snapshot(sdc, 10, 32768, 2)
    text = page(operator, "/console/capacity")
    label, body = line_svg(text, "Fleet use over time")
    assert "1 point, at" in label and "RAM last 50 % used (lowest 50, highest 50)" in label
    assert body.count("<circle") == 1 and "<polyline" not in body


def test_a_long_history_is_thinned_and_says_so(operator: FlaskClient, sdc: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from headnode.console.pages import capacity

    monkeypatch.setattr(capacity, "MAX_POINTS", 3)
    for i in range(7):
        snapshot(sdc, 10 * (7 - i), 1024 * (i + 1), i)
    text = page(operator, "/console/capacity")
    assert "7 snapshots in this window" in text and "(3)" in text
    assert re.search(r"Fleet use over time in numbers \(3 points\)", text)


def test_an_unknown_history_window_is_refused_naming_it(operator: FlaskClient) -> None:
    text = page(operator, "/console/capacity?days=9", status=400)
    assert "(days)" in text and "one of 1, 7, 30" in text


# -- what if ---------------------------------------------------------------------------------

def test_the_whatif_form_alone(operator: FlaskClient, fleet: dict[str, Any]) -> None:
    text = page(operator, "/console/capacity/whatif")
    assert 'name="place.0.package"' in text and 'for="place-0-package"' in text
    assert "The fleet now and after" not in text


def test_added_servers_change_the_fits_and_the_after_chart(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any]) -> None:
    before = planning.report(sdc)
    url = whatif_url(add_servers__0__count="2", add_servers__0__ram_mb="65536",
                     add_servers__0__cpus="16", add_servers__0__disk_mb="1000000",
                     place__0__package="small", place__0__count="10")
    text = page(operator, url)
    free_now = before["fleet"]["ram_mb"]["free"]
    expected = planning.simulate(sdc, {"add_servers": [
        {"count": 2, "ram_mb": 65536, "cpus": 16, "disk_mb": 1_000_000}],
        "place": [{"package": "small", "count": 10}]})
    free_after = expected["fleet_free"]["ram_mb"]
    assert free_after > free_now
    assert f'aria-label="Free RAM: now {free_now:,} MiB, after {free_after:,} MiB"' in text
    fits_before = before["packages"][0]["fits"]
    fits_after = expected["packages"][0]["fits"]
    assert fits_after > fits_before
    assert cell(text, "whatif-fits", "small") == [f"{fits_before:,}", f"{fits_after:,}",
                                                 f"{fits_after - fits_before:+,}"]
    assert cell(text, "whatif-placements", "small")[:3] == ["10", "10", "0"]
    assert "3 (2 added)" in text
    # the form comes back filled in, so the next what-if starts from this one
    assert 'name="add_servers.0.count" inputmode="numeric" value="2"' in text


def test_a_refused_placement_shows_why(operator: FlaskClient, sdc: Any,
                                       fleet: dict[str, Any]) -> None:
    make_package(sdc, name="huge", memory=262144, disk=10240)
    text = page(operator, whatif_url(place__0__package="huge", place__0__count="2",
                                     add_servers__0__count="0"))
    placed = cell(text, "whatif-placements", "huge")
    assert placed[:3] == ["2", "0", "2"] and placed[3] == "none"
    assert placed[4].startswith("no server can fit 256 GiB of RAM")


@pytest.mark.parametrize(("fields", "named", "message"), [
    ({"place__0__count": "0"}, "place.0.count", "greater than or equal to 1"),
    ({"place__0__count": "-3"}, "place.0.count", "greater than or equal to 1"),
    ({"place__0__count": "many"}, "place.0.count", "Not a valid integer"),
    ({"place__0__package": "nope"}, "place.0.package", "no package 'nope'"),
    ({"place__2__package": "nope", "place__2__count": "1"}, "place.2.package",
     "no package 'nope'"),
    ({"place__1__count": "4"}, "place.1.package", "Shorter than minimum length 1"),
    ({"add_servers__0__count": "-1"}, "add_servers.0.count", "greater than or equal to 1"),
    ({"add_servers__0__count": "20001"}, "add_servers.0.count", "less than or equal to 20000"),
    ({"add_servers__0__count": "1", "add_servers__0__ram_mb": "0"}, "add_servers.0.ram_mb",
     "greater than or equal to 1"),
])
def test_bad_whatif_input_is_refused_naming_the_field(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any], fields: dict[str, str],
        named: str, message: str) -> None:
    form = {"place__0__package": "small", "place__0__count": "1", **fields}
    text = page(operator, whatif_url(**form), status=422)
    assert f"({named}): " in text and message in html.unescape(text)
    field_id = named.replace(".", "-")
    assert f'id="{field_id}" name="{named}"' in text
    assert f'aria-describedby="{field_id}-error"' in text
    assert "The fleet now and after" not in text
    assert count(sdc, CapacitySnapshot) == 0


def test_too_many_machines_in_all_is_refused_by_the_service_naming_place(
        operator: FlaskClient, fleet: dict[str, Any]) -> None:
    text = page(operator, whatif_url(place__0__package="small", place__0__count="15000",
                                     place__1__package="small", place__1__count="15000"),
                status=422)
    assert "(place): at most 20000 machines" in text


# -- explain ---------------------------------------------------------------------------------

def test_explain_shows_the_steps_and_the_winner(operator: FlaskClient, sdc: Any,
                                                fleet: dict[str, Any]) -> None:
    make_server(sdc, hostname="cn-small", ram_mb=512)
    text = page(operator, "/console/capacity/explain?" + urlencode(
        {"package": "small", "image": "base-64", "owner": "alice", "networks": "",
         "affinity": ""}))
    assert "Placed on <strong>cn1</strong>" in text
    assert "2 servers considered" in text
    steps = re.findall(r'<th scope="row">([\w-]+)</th>', text)
    assert "min-ram" in steps and "setup" in steps
    removed, left, reason = cell(text, "explain-steps", "min-ram")
    assert (removed, left) == ("1", "1") and reason
    assert cell(text, "explain-reasons", reason) == ["1"]


def test_explain_a_machine_that_fits_nowhere(operator: FlaskClient, sdc: Any,
                                             fleet: dict[str, Any]) -> None:
    make_package(sdc, name="huge", memory=262144, disk=10240)
    text = page(operator, "/console/capacity/explain?package=huge&image=base-64")
    assert "<strong>Refused</strong>: no server can fit 256 GiB of RAM" in text
    assert cell(text, "explain-steps", "min-ram")[:2] == ["1", "0"]


@pytest.mark.parametrize(("query", "named", "message"), [
    ({"package": "small", "image": "nope"}, "image", "no image 'nope'"),
    ({"package": "nope", "image": "base-64"}, "package", "no package 'nope'"),
    ({"package": "small", "image": ""}, "image", "Shorter than minimum length 1"),
    ({"package": "small", "image": "base-64", "owner": "bob"}, "owner", "no account 'bob'"),
    ({"package": "small", "image": "base-64", "networks": "nowhere"}, "networks",
     "no network 'nowhere'"),
])
def test_bad_explain_input_is_refused_naming_the_field(
        operator: FlaskClient, fleet: dict[str, Any], query: dict[str, str], named: str,
        message: str) -> None:
    text = page(operator, "/console/capacity/explain?" + urlencode(query), status=422)
    assert f"({named}): " in text and message in html.unescape(text)
    assert f'aria-describedby="{named}-error"' in text or named == "package"
    assert "The decision" not in text


def test_explain_with_no_servers_says_so(operator: FlaskClient, sdc: Any) -> None:
    make_package(sdc, name="small", memory=1024, disk=10240)
    from tests.unit.headnode.api.conftest import make_image

    make_image(sdc, name="base-64")
    make_account(sdc, login="carol")
    text = page(operator, "/console/capacity/explain?package=small&image=base-64")
    assert "there are no servers" in text


# -- forecast --------------------------------------------------------------------------------

def test_the_forecast_without_enough_history_says_why(operator: FlaskClient, sdc: Any,
                                                      fleet: dict[str, Any]) -> None:
    snapshot(sdc, 30, 1024, 1)
    text = page(operator, "/console/capacity/forecast")
    assert "<strong>No trend:</strong> not enough capacity history for a trend: 1 snapshot" \
        in text
    row = cell(text, "forecast-packages", "small")
    assert row[2] == "none" and row[-1] == "no trend (see above)"
    assert "forecast-trend" not in text and 'class="chart range"' not in text
    assert "<h2 id=\"assumptions\">Assumptions</h2>" in text


def test_the_forecast_shows_the_services_dates_trend_and_assumptions(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any]) -> None:
    # used RAM grows by 2,048 MiB a day over the last 10 days, exactly
    for day in range(11):
        snapshot(sdc, 60 * 24 * (10 - day) + 10, 8192 + 2048 * day, day)
    text = page(operator, "/console/capacity/forecast?days=30")
    answer = forecast.forecast(sdc, 30)
    small = {p["name"]: p for p in answer["packages"]}["small"]
    assert small["days"] and small["date"]
    row = cell(text, "forecast-packages", "small")
    assert row[0] == f"{small['fits_now']:,}" and row[1] == f"{small['ram_mb_until']:,}"
    assert row[2] == small["date"].strftime("%Y-%m-%d") and row[5] == f"{small['days']:,.1f}"
    chart = re.search(r'<svg class="chart range"[^>]*aria-label="([^"]*)">(.*?)</svg>', text,
                      re.S)
    assert chart and re.fullmatch(r"Days until each package stops fitting: small ([\d.,]+) "
                                  r"days from now \(([\d.,]+) to ([\d.,]+)\)", chart.group(1))
    days, earliest, latest = (float(n.replace(",", "")) for n in re.findall(
        r"[\d.,]+(?= days| to |\))", chart.group(1)))
    assert earliest <= days <= latest and days == pytest.approx(small["days"], abs=0.05)
    assert chart.group(2).count("<circle") == sum(1 for p in answer["packages"] if p["date"])
    trend = cell(text, "forecast-trend", "RAM (MiB): sets the pace")
    assert trend[0] == "+2,048.0" and trend[3] == "11"
    assert "11 snapshots in the last 30 days" in text
    for sentence in answer["assumptions"]:
        assert html.escape(sentence, quote=False) in text.replace("&#39;", "'")


@pytest.mark.parametrize(("days", "message"), [("0", "greater than or equal to 1"),
                                               ("99999", "less than or equal to 3650"),
                                               ("soon", "Not a valid integer")])
def test_a_bad_forecast_window_is_refused_naming_it(operator: FlaskClient, days: str,
                                                    message: str) -> None:
    text = page(operator, f"/console/capacity/forecast?days={days}", status=422)
    assert "(days): " in text and message in text
    assert 'aria-describedby="days-error"' in text and "forecast-packages" not in text


# -- the charts ------------------------------------------------------------------------------

def test_a_line_charts_axes_fit_its_data() -> None:
    from datetime import UTC, datetime

    from headnode.console import charts

    assert [charts.nice_top(v) for v in (0, 3, 5, 7, 37, 142_948)] == [5, 5, 5, 10, 50, 250_000]
    assert [charts.compact(v) for v in (12, 0.5, 142_948, 2_446_458)] == \
        ["12", "0.5", "143 k", "2.45 M"]
    start = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    two_days = [(start + timedelta(hours=12 * i), [float(i)]) for i in range(5)]
    chart = charts.line_chart("Machines", "machines", "Time (UTC)", ["Machines"], two_days)
    ticks = re.findall(r'font-size="12" fill="#1b1b1b">([^<]+)</text>', str(chart.svg))
    assert ticks[-5:] == ["12-01 06:00", "12-01 18:00", "12-02 06:00", "12-02 18:00",
                          "12-03 06:00"]
    assert "Time (UTC), 2026-12-01 to 2026-12-03" in str(chart.svg)
    assert ticks[:6] == ["0", "1", "2", "3", "4", "5"]  # y: 0 to nice_top(4) = 5
    assert chart.rows[0] == ("2026-12-01 06:00:00", [0.0])
