"""The capacity forecast on the real PostgreSQL: made-up histories whose answers are known,
the edges (too little history, flat or shrinking use, a package that fits nowhere, exact
fits, the simulation's limit, the horizon) and bad input."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from headnode.placement.pipeline import DEFAULT_PIPELINE
from headnode.placement.state import PlacementRequest, Policy, ServerState
from headnode.services import forecast, planning
from headnode.services.errors import InvalidArgument
from headnode.store.models import Base, CapacitySnapshot
from tests.unit.headnode.services.conftest import (
    add,
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
COLUMNS = [f"{r}_{p}{u}" for r, u in (("ram", "_mb"), ("cpu", ""), ("disk", "_mb"))
           for p in ("total", "provisioned", "reserved", "free")]


def snapshot(ctx: Any, taken_at: datetime, ram_used: float, cpu_used: float = 0,
             disk_used: float = 0) -> None:
    """One history point; what is used is split between provisioned and reserved (the
    forecast adds them up)."""
    values: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
    for prefix, used in (("ram", ram_used), ("cpu", cpu_used), ("disk", disk_used)):
        unit = "" if prefix == "cpu" else "_mb"
        values[f"{prefix}_provisioned{unit}"] = round(used) - round(used) // 4
        values[f"{prefix}_reserved{unit}"] = round(used) // 4
    add(ctx, CapacitySnapshot(taken_at=taken_at, servers=1, placeable_servers=1, machines=0,
                              **values))


def linear_history(ctx: Any, days: int, ram_per_day: float, start: float = 10_000,
                   every_hours: float = 24, now: datetime = NOW, **per_day: float) -> None:
    """A point every ``every_hours`` from ``days`` ago to ``now``, growing exactly
    linearly."""
    steps = int(days * 24 / every_hours)
    for i in range(steps + 1):
        age = timedelta(days=days) - timedelta(hours=i * every_hours)
        elapsed = i * every_hours / 24
        snapshot(ctx, now - age, start + ram_per_day * elapsed,
                 **{f"{k}_used": 100 + v * elapsed for k, v in per_day.items()})


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in answer["packages"]}


def one_server_fleet(ctx: Any, **server: Any) -> dict[str, Any]:
    attrs = {"hostname": "cn1", "ram_mb": 65536, "disk_mb": 1_000_000, **server}
    return {"server": make_server(ctx, **attrs),
            "package": make_package(ctx, name="small", memory=1024, disk=10240),
            "image": make_image(ctx, name="base-64"),
            "owner": make_account(ctx, login="alice")}


# -- the fit -----------------------------------------------------------------------------


def test_fit_line_by_hand() -> None:
    # mean x 2, mean y 2, Sxx 10, Sxy 9: slope 0.9, intercept 0.2; residuals -0.2, 0.9, -1,
    # 0.1, 0.2: SSE 1.9, SST 10, so R² 0.81 and the slope's stderr sqrt(1.9 / 3 / 10)
    trend = forecast.fit_line([0, 1, 2, 3, 4], [0, 2, 1, 3, 4])
    assert trend.per_day == pytest.approx(0.9)
    assert trend.stderr == pytest.approx(math.sqrt(1.9 / 30))
    assert trend.r2 == pytest.approx(0.81) and trend.points == 5
    flat = forecast.fit_line([0, 1, 2], [5, 5, 5])
    assert (flat.per_day, flat.stderr, flat.r2) == (0, 0, None)
    with pytest.raises(ValueError):
        forecast.fit_line([0, 1], [0, 1])


# -- known answers -----------------------------------------------------------------------


def test_one_package_grows_1024_mib_a_day(ctx: Any) -> None:
    """cn1: 65536 MiB * 0.85 = 55705.6 MiB placeable, so 54 more machines of 1024 MiB; used
    RAM grows exactly 1024 MiB a day over 10 days: the package stops fitting in 54 days."""
    one_server_fleet(ctx)
    linear_history(ctx, days=10, ram_per_day=1024, cpu=50, disk=10240)
    answer = forecast.forecast(ctx, days=30, now=NOW)
    small = by_name(answer)["small"]
    assert small["fits_now"] == 54 == by_name_fits(ctx)["small"]
    assert small["ram_mb_until"] == 54 * 1024
    assert small["days"] == pytest.approx(54)
    assert_minute(small["date"], NOW + timedelta(days=54))
    # an exact line: no uncertainty, the range is the date itself
    assert_minute(small["earliest"], NOW + timedelta(days=54))
    assert_minute(small["latest"], NOW + timedelta(days=54))
    assert small["reason"] is None
    ram = answer["trend"]["ram_mb"]
    assert ram["per_day"] == pytest.approx(1024) and ram["stderr"] == pytest.approx(0, abs=1e-6)
    assert ram["r2"] == pytest.approx(1) and ram["points"] == 11
    assert answer["trend"]["cpu"]["per_day"] == pytest.approx(50)
    assert answer["trend"]["disk_mb"]["per_day"] == pytest.approx(10240)
    assert answer["history"]["points"] == 11 and answer["reason"] is None
    assert answer["mix"] == [{"uuid": small["uuid"], "name": "small", "machines": 0,
                              "share": 1.0}]
    assert any("1024 MiB a day" in sentence for sentence in answer["assumptions"])
    assert any(sentence.endswith("one by one.") for sentence in answer["assumptions"])
    assert answer["simulation"] == {"decisions": 54, "machines_per_decision": 1,
                                    "placed_ram_mb": 54 * 1024}
    naive = forecast.forecast(ctx, days=30, now=NOW.replace(tzinfo=None))  # taken as UTC
    assert by_name(naive)["small"]["date"] == small["date"]


def by_name_fits(ctx: Any) -> dict[str, int]:
    return {p["name"]: p["fits"] for p in planning.report(ctx)["packages"]}


def assert_minute(got: datetime | None, expected: datetime) -> None:
    assert got is not None
    assert abs((got - expected).total_seconds()) < 60, (got, expected)


def test_the_mix_of_live_machines_shares_the_growth(ctx: Any) -> None:
    """3 live small (1024) and 1 big (4096): new machines come small, small, big, small
    (7168 MiB a round). cn1 holds 7168 used of 44575 * 0.85 = 37888.75: 30720.75 free.
    Three rounds leave 9216; then small, small, big leave 3072, where big fits no more
    (placed: 21504 + 6144 = 27648); small alone takes the last 3072 (placed: 30720)."""
    fleet = one_server_fleet(ctx, ram_mb=44575, ram_committed_mb=7168,
                             disk_committed_mb=4 * 10240, machine_count=4, uncapped_count=4)
    big = make_package(ctx, name="big", memory=4096, disk=10240)
    for n in range(3):
        make_machine(ctx, fleet, alias=f"web{n}")
    make_machine(ctx, fleet, alias="db", package_uuid=big.uuid, ram_mb=4096)
    make_machine(ctx, fleet, alias="gone", state="destroyed")  # holds nothing: not in the mix
    linear_history(ctx, days=10, ram_per_day=2048)
    answer = forecast.forecast(ctx, now=NOW)
    packages = by_name(answer)
    assert packages["big"]["fits_now"] == 7 and packages["small"]["fits_now"] == 30
    assert packages["big"]["ram_mb_until"] == 27648
    assert packages["small"]["ram_mb_until"] == 30720
    assert_minute(packages["big"]["date"], NOW + timedelta(days=27648 / 2048))
    assert_minute(packages["small"]["date"], NOW + timedelta(days=15))
    assert {m["name"]: (m["machines"], m["share"]) for m in answer["mix"]} == {
        "big": (1, 0.25), "small": (3, 0.75)}


def test_exact_fit_edge(ctx: Any) -> None:
    """40960 * 0.85 = 34816 = 34 * 1024 exactly: the 34th machine fills cn1 to the MiB and
    still fits; a package of 34816 MiB fits exactly once now."""
    one_server_fleet(ctx, ram_mb=40960)
    make_package(ctx, name="whole", memory=34816, disk=10240)
    linear_history(ctx, days=10, ram_per_day=1024)
    packages = by_name(forecast.forecast(ctx, now=NOW))
    assert packages["whole"]["fits_now"] == 1 and packages["small"]["fits_now"] == 34
    # equal shares (no live machine): small first (the mix is taken in name order...
    # "small" < "whole"), then whole no longer fits; small fills the rest
    assert packages["whole"]["ram_mb_until"] == 1024
    assert packages["small"]["ram_mb_until"] == 34 * 1024
    assert_minute(packages["small"]["date"], NOW + timedelta(days=34))


def test_the_placement_rules_decide_not_ram_alone(ctx: Any) -> None:
    """cn1 offers 16 CPUs * 100 % * 4 = 6400 CPU shares. cpu-heavy (capped at 2000 %) comes
    first in the equal mix (by name); once a capped machine is on cn1, uncapped small may
    not join it (DAPI never mixes them), so small fits nowhere after 1024 MiB; cpu-heavy
    then runs out of CPU after 3 machines, with most of the RAM still free."""
    one_server_fleet(ctx)
    make_package(ctx, name="cpu-heavy", memory=1024, disk=1024, cpu_cap=2000)
    linear_history(ctx, days=10, ram_per_day=1024)
    packages = by_name(forecast.forecast(ctx, now=NOW))
    assert packages["small"]["fits_now"] == 54 and packages["cpu-heavy"]["fits_now"] == 3
    assert packages["small"]["ram_mb_until"] == 1024
    assert packages["cpu-heavy"]["ram_mb_until"] == 3 * 1024
    assert_minute(packages["small"]["date"], NOW + timedelta(days=1))
    assert_minute(packages["cpu-heavy"]["date"], NOW + timedelta(days=3))


def test_noisy_history_gives_a_range(ctx: Any) -> None:
    one_server_fleet(ctx)
    for day, wobble in enumerate([0, 700, -500, 300, -900, 400, 0, -200, 800, -600, 0]):
        snapshot(ctx, NOW - timedelta(days=10 - day), 10_000 + 1024 * day + wobble)
    answer = forecast.forecast(ctx, now=NOW)
    ram = answer["trend"]["ram_mb"]
    assert 0 < ram["r2"] < 1 and ram["stderr"] > 0
    small = by_name(answer)["small"]
    until = 54 * 1024
    assert_minute(small["date"], NOW + timedelta(days=until / ram["per_day"]))
    assert_minute(small["earliest"],
                  NOW + timedelta(days=until / (ram["per_day"] + 2 * ram["stderr"])))
    assert_minute(small["latest"],
                  NOW + timedelta(days=until / (ram["per_day"] - 2 * ram["stderr"])))
    assert small["earliest"] < small["date"] < small["latest"]


def test_only_the_window_counts(ctx: Any) -> None:
    one_server_fleet(ctx)
    for day in range(20, 31):  # a month ago it grew ten times as fast
        snapshot(ctx, NOW - timedelta(days=day), 10_000 * (31 - day))
    linear_history(ctx, days=10, ram_per_day=1024)
    answer = forecast.forecast(ctx, days=15, now=NOW)
    assert answer["history"]["points"] == 11
    assert answer["trend"]["ram_mb"]["per_day"] == pytest.approx(1024)
    snapshot(ctx, NOW + timedelta(hours=1), 0)  # after "now": not seen either
    assert forecast.forecast(ctx, days=15, now=NOW)["history"]["points"] == 11


# -- no date, and why ------------------------------------------------------------------------


@pytest.mark.parametrize("per_day", [0, -512])
def test_flat_or_shrinking_use_never_runs_out(ctx: Any, per_day: int) -> None:
    one_server_fleet(ctx)
    linear_history(ctx, days=10, ram_per_day=per_day, start=40_000)
    small = by_name(forecast.forecast(ctx, now=NOW))["small"]
    assert small["date"] is None and small["earliest"] is None and small["latest"] is None
    assert small["reason"].startswith("does not run out at the current growth")
    assert small["ram_mb_until"] == 54 * 1024


def test_uncertain_growth_has_no_latest_date(ctx: Any) -> None:
    one_server_fleet(ctx)
    for day, used in enumerate([10_000, 30_000, 5_000, 25_000, 16_000]):
        snapshot(ctx, NOW - timedelta(days=4 - day), used)
    answer = forecast.forecast(ctx, now=NOW)
    ram = answer["trend"]["ram_mb"]
    assert ram["per_day"] > 0 and ram["per_day"] - 2 * ram["stderr"] <= 0
    small = by_name(answer)["small"]
    assert small["date"] is not None and small["earliest"] is not None
    assert small["latest"] is None and small["reason"] is None


def test_too_slow_growth_is_beyond_the_horizon(ctx: Any) -> None:
    one_server_fleet(ctx)
    linear_history(ctx, days=10, ram_per_day=10)  # 55296 MiB at 10 a day: 15 years
    small = by_name(forecast.forecast(ctx, now=NOW))["small"]
    assert small["date"] is None and small["days"] == pytest.approx(5529.6)
    assert small["reason"] == "not within 10 years at the current growth"


@pytest.mark.parametrize(("points", "hours"), [(0, 0), (2, 48), (5, 4)])
def test_too_little_history_says_so(ctx: Any, points: int, hours: float) -> None:
    one_server_fleet(ctx)
    make_package(ctx, name="huge", memory=64 * 1024, disk=10240)
    for i in range(points):
        snapshot(ctx, NOW - timedelta(hours=hours * i / max(points - 1, 1)), 10_000 + i)
    answer = forecast.forecast(ctx, now=NOW)
    assert answer["trend"] is None and answer["history"]["points"] == points
    assert answer["reason"].startswith(f"not enough capacity history for a trend: {points} ")
    packages = by_name(answer)
    assert packages["small"]["date"] is None
    assert packages["small"]["reason"] == answer["reason"]
    assert packages["small"]["fits_now"] == 54
    # what needs no trend is still answered: a package that fits nowhere stops now
    assert packages["huge"]["date"] == NOW and packages["huge"]["reason"] == "fits nowhere now"


def test_a_package_that_fits_nowhere_stops_now(ctx: Any) -> None:
    fleet = one_server_fleet(ctx)
    huge = make_package(ctx, name="huge", memory=64 * 1024, disk=10240)
    # the only live machine is huge's: the mix would be all huge, which fits nowhere, so
    # the packages that still fit (small) take the growth
    make_machine(ctx, fleet, alias="giant", package_uuid=huge.uuid, ram_mb=64 * 1024)
    make_package(ctx, name="retired", memory=512, disk=1024, active=False)
    linear_history(ctx, days=10, ram_per_day=1024)
    answer = forecast.forecast(ctx, now=NOW)
    huge = by_name(answer)["huge"]
    assert huge["fits_now"] == 0 and huge["days"] == 0
    assert huge["date"] == huge["earliest"] == huge["latest"] == NOW
    assert huge["reason"] == "fits nowhere now"
    assert "retired" not in by_name(answer)  # only active packages
    # the growth goes to what fits: small's date is the one-package answer
    assert_minute(by_name(answer)["small"]["date"], NOW + timedelta(days=54))
    assert {m["name"]: (m["machines"], m["share"]) for m in answer["mix"]} == {
        "huge": (1, 0.0), "small": (0, 1.0)}


def test_no_server_no_room(ctx: Any) -> None:
    make_package(ctx, name="small", memory=1024, disk=10240)
    linear_history(ctx, days=10, ram_per_day=1024)
    [small] = forecast.forecast(ctx, now=NOW)["packages"]
    assert small["fits_now"] == 0 and small["date"] == NOW


def test_the_simulation_limit_is_no_date() -> None:
    servers = [ServerState(uuid="s1", ram_mb=1_000_000, cpus=64, disk_mb=10_000_000)]
    request = PlacementRequest(ram_mb=1024, disk_mb=1024)
    pipeline = DEFAULT_PIPELINE.with_weights(uniform_random=0)
    fill = forecast.ram_until_full(servers, {"p": request}, {"p": 1}, Policy(), pipeline,
                                   limit=5)
    assert fill.fits_now == {"p": 224} and fill.until == {}
    assert (fill.placed_mb, fill.decisions, fill.per_decision) == (5 * 1024, 5, 1)
    trend = forecast.Trend(per_day=1024, stderr=0, r2=1, points=11)
    answer = forecast.package_dates(NOW, fill.until.get("p"), trend, None, fill.placed_mb)
    assert answer["date"] is None
    assert answer["reason"] == (f"still fits after the {forecast.MAX_DECISIONS} placements "
                                f"a forecast simulates (5120 MiB of RAM, 5 days)")


def test_a_large_fleet_places_a_few_machines_per_decision() -> None:
    """20 servers with room for 208 machines of 1024 MiB each (224 at most, 16 held):
    4,160 in all, more than DECISIONS, so 3 per decision; each server takes 208 = 69 * 3 +
    1 in 70 decisions, and the package stops fitting when all of its room is used, as one
    by one would find."""
    servers = [ServerState(uuid=f"s{i:03}", ram_mb=262_144, cpus=48, disk_mb=3_400_000,
                           machine_count=16, uncapped_count=16) for i in range(20)]
    request = PlacementRequest(ram_mb=1024, disk_mb=10240)
    # as a create's: a sample of candidates (fewer than the fleet, so it is used)
    pipeline = dataclasses.replace(DEFAULT_PIPELINE.with_weights(uniform_random=0),
                                   candidates=5)
    fill = forecast.ram_until_full(servers, {"p": request}, {"p": 1}, Policy(), pipeline)
    assert forecast.DECISIONS == 2000 and fill.fits_now == {"p": 20 * 208}
    assert fill.per_decision == 3
    assert fill.until == {"p": 20 * 208 * 1024} and fill.placed_mb == 20 * 208 * 1024
    assert fill.decisions == 20 * 70


# -- bad input, and nothing written ----------------------------------------------------------


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_bad_days_names_the_field(ctx: Any, days: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        forecast.forecast(ctx, days=days)
    assert err.value.field == "days"


def test_nothing_is_written(ctx: Any) -> None:
    fleet = one_server_fleet(ctx)
    make_machine(ctx, fleet)
    linear_history(ctx, days=10, ram_per_day=1024)

    def contents() -> dict[str, list[str]]:
        with ctx.read() as session:
            return {t.name: sorted(map(repr, session.execute(select(t)).all()))
                    for t in Base.metadata.sorted_tables}

    before = contents()
    forecast.forecast(ctx, now=NOW)
    assert contents() == before
