"""Capacity forecast: from the capacity history, the date each active package stops fitting
at the current growth.

Method, in two independent halves:

1. **How fast the fleet fills.** A least-squares line through the used RAM, CPU and disk
   (provisioned + reserved) of the history snapshots taken in the last ``days`` days gives
   each resource's growth per day, with the slope's standard error and the fit's R².
2. **How much room each package has left.** New machines in the current mix of packages
   are placed as creates would place them (the create's pipeline without its random
   scorer, against an in-memory copy of the fleet read now), until no package fits; for
   each package, the RAM placed until it fit nowhere. One machine per decision on a fleet
   with room for up to ``DECISIONS`` machines; a few per decision on a larger one, so that
   the cost stays about ``DECISIONS`` decisions.

The date is now + that RAM / the RAM growth per day; the range uses the slope ± 2 standard
errors. Used RAM sets the pace (packages are sized by RAM, and placement runs out of RAM
first on most fleets); the new machines take CPU and disk as their packages ask, so a
package that runs out of CPU or disk first still gets its date, in the RAM trend's time.
Nothing is written.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from headnode.placement.pipeline import Pipeline
from headnode.placement.state import PlacementRequest, Policy, ServerState, Snapshot, with_machine
from headnode.services import fleet, placement, planning
from headnode.services.context import ServiceContext
from headnode.services.errors import InvalidArgument
from headnode.store.models import (
    ALIAS_HOLDING_STATES,
    CapacitySnapshot,
    Machine,
    Package,
    Server,
    utcnow,
)
from schemas.placement import MAX_FORECAST_DAYS

#: a trend needs at least this many snapshots...
MIN_POINTS = 3
#: ...spread over at least this many hours (beat writes one every 5 minutes: half an hour
#: of them would measure noise, not growth)
MIN_SPAN_HOURS = 6
#: the range of dates: the slope this many standard errors either side (about 95 %)
SPREAD = 2.0
#: a forecast places one machine per decision while the fleet has room for at most this many
#: of any package; beyond, a few per decision (about this many decisions in all)
DECISIONS = 2_000
#: and never more decisions than this (fragments at the end take one machine each)
MAX_DECISIONS = 20_000
#: a date further away than this is no date ("not within ten years")
HORIZON_DAYS = 3653
#: the used amount of each resource: the history's columns that add up to it
USED = {"ram_mb": ("ram_provisioned_mb", "ram_reserved_mb"),
        "cpu": ("cpu_provisioned", "cpu_reserved"),
        "disk_mb": ("disk_provisioned_mb", "disk_reserved_mb")}


@dataclass(frozen=True)
class Trend:
    """A least-squares line y = intercept + per_day * x, x in days."""

    per_day: float
    stderr: float
    r2: float | None  # None: nothing to explain (every point the same)
    points: int

    def as_dict(self) -> dict[str, Any]:
        return {"per_day": self.per_day, "stderr": self.stderr, "r2": self.r2,
                "points": self.points}


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Trend:
    """Ordinary least squares; needs at least 3 points and two distinct xs."""
    n = len(xs)
    if n < 3:
        raise ValueError("a trend with a standard error needs at least 3 points")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= 0:
        raise ValueError("every point has the same x")
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    sse = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    sst = sum((y - mean_y) ** 2 for y in ys)
    return Trend(per_day=slope, stderr=math.sqrt(sse / (n - 2) / sxx),
                 r2=None if sst == 0 else max(0.0, 1 - sse / sst), points=n)


# -- the growth ------------------------------------------------------------------------------

def _snapshots(session: Session, since: datetime, now: datetime) -> list[CapacitySnapshot]:
    return list(session.scalars(
        select(CapacitySnapshot)
        .where(CapacitySnapshot.taken_at > since, CapacitySnapshot.taken_at <= now)
        .order_by(CapacitySnapshot.taken_at)))


def _too_little(snaps: Sequence[CapacitySnapshot], days: int) -> str | None:
    """Why these snapshots give no trend, or None when they do."""
    span = (snaps[-1].taken_at - snaps[0].taken_at).total_seconds() / 3600 if snaps else 0.0
    if len(snaps) >= MIN_POINTS and span >= MIN_SPAN_HOURS:
        return None
    return (f"not enough capacity history for a trend: {len(snaps)} snapshot(s) over "
            f"{span:.1f} hours in the last {days} days; it needs at least {MIN_POINTS} over "
            f"{MIN_SPAN_HOURS} hours (beat writes one every SDC_CAPACITY_HISTORY_INTERVAL "
            f"seconds)")


def trends(snaps: Sequence[CapacitySnapshot]) -> dict[str, Trend]:
    """Growth per day of each resource's used amount."""
    start = snaps[0].taken_at
    xs = [(s.taken_at - start).total_seconds() / 86400 for s in snaps]
    return {resource: fit_line(xs, [sum(getattr(s, column) for column in columns)
                                    for s in snaps])
            for resource, columns in USED.items()}


# -- the room each package has left ----------------------------------------------------------

def _live_machines(session: Session) -> dict[str, int]:
    """Machines that hold room now, per package uuid: the mix new machines are assumed in."""
    rows = session.execute(select(Machine.package_uuid, func.count())
                           .where(Machine.state.in_(ALIAS_HOLDING_STATES))
                           .group_by(Machine.package_uuid))
    return {str(uuid): int(n) for uuid, n in rows if uuid}


def mix_of(packages: Sequence[Package], live: Mapping[str, int]) -> dict[str, int]:
    """Each active package's weight in the growth: its live machines; with none of any, all
    in equal shares."""
    weights = {p.uuid: live.get(p.uuid, 0) for p in packages}
    return weights if any(weights.values()) else {p.uuid: 1 for p in packages}


def _sharing(fitting: Sequence[str], weights: Mapping[str, int]) -> dict[str, int]:
    """The weights the growth is shared by: those of the mix that still fit; once none
    does, every package that still fits, equally."""
    return ({p: weights[p] for p in fitting if weights.get(p, 0) > 0}
            or dict.fromkeys(fitting, 1))


def _next_in_mix(fitting: Sequence[str], weights: Mapping[str, int],
                 issued: Mapping[str, int]) -> str:
    """The package whose share is furthest behind (ties: the earlier in ``fitting``)."""
    pool = _sharing(fitting, weights)
    return min(pool, key=lambda p: (issued.get(p, 0) + 1) / pool[p])


@dataclass(frozen=True)
class Fill:
    """What placing the growth until nothing fits found."""

    fits_now: dict[str, int]  # package uuid -> more machines of it that fit now
    until: dict[str, int]  # package uuid -> RAM placed until it fit nowhere (absent: beyond)
    placed_mb: int  # RAM placed in all
    per_decision: int  # at most this many machines of a package per decision
    decisions: int


def ram_until_full(servers: Sequence[ServerState], requests: Mapping[str, PlacementRequest],
                   weights: Mapping[str, int], policy: Policy, pipeline: Pipeline,
                   limit: int = MAX_DECISIONS) -> Fill:
    """Place machines of the mix (``pipeline.decide``, as a create) until none fits, at
    most ``limit`` decisions. One machine per decision while the fleet has room for at
    most ``DECISIONS`` machines of any package (exact); beyond, each decision puts up to
    room / ``DECISIONS`` machines of its package on the server it chose, so that a large
    fleet costs about as much as a small one (the dates are then as fine as that)."""
    fleet_now = list(servers)
    index = {s.uuid: i for i, s in enumerate(fleet_now)}
    room = {p: [pipeline.room_for(s, r, policy) for s in fleet_now] for p, r in requests.items()}
    left = {p: sum(rooms) for p, rooms in room.items()}
    fits_now = dict(left)
    per_decision = max(1, math.ceil(max(fits_now.values(), default=0) / DECISIONS))
    until = {p: 0 for p, n in left.items() if n == 0}
    issued: dict[str, int] = {}
    placed_mb = decisions = 0
    rng = random.Random(0)  # a candidate sample, if the fleet is larger: the same each time
    while decisions < limit:
        fitting = [p for p in requests if p not in until]
        if not fitting:
            break
        chosen = _next_in_mix(fitting, weights, issued)
        request = requests[chosen]
        decisions += 1
        decision = pipeline.decide(Snapshot(fleet_now), request, policy, rng)
        if decision.server is None:  # room_for and decide share their filters: not expected
            until[chosen] = placed_mb
            continue
        i = index[decision.server.uuid]
        count = max(1, min(per_decision, room[chosen][i]))
        for _ in range(count):
            fleet_now[i] = with_machine(fleet_now[i], request)
        placed_mb += count * request.ram_mb
        issued[chosen] = issued.get(chosen, 0) + count
        for p in fitting:  # only server i changed: update the packages' room by its change
            now_room = pipeline.room_for(fleet_now[i], requests[p], policy)
            left[p] += now_room - room[p][i]
            room[p][i] = now_room
            if left[p] <= 0:
                until[p] = placed_mb
    return Fill(fits_now, until, placed_mb, per_decision, decisions)


# -- the dates -------------------------------------------------------------------------------

def _date(now: datetime, ram_mb: int, per_day: float) -> datetime | None:
    """When ``ram_mb`` more is used at ``per_day``; None: never, or not within the horizon."""
    if per_day <= 0 or ram_mb / per_day > HORIZON_DAYS:
        return None
    return now + timedelta(days=ram_mb / per_day)


def package_dates(now: datetime, ram_until: int | None, ram: Trend | None,
                  no_trend: str | None, placed_mb: int) -> dict[str, Any]:
    """A package's date and range from the RAM placed until it fits nowhere and the RAM
    trend; ``reason`` says why a date is missing (or why it is now)."""
    answer: dict[str, Any] = {"ram_mb_until": ram_until, "days": None, "date": None,
                              "earliest": None, "latest": None, "reason": None}
    if ram_until == 0:
        return {**answer, "days": 0.0, "date": now, "earliest": now, "latest": now,
                "reason": "fits nowhere now"}
    if ram is None:
        return {**answer, "reason": no_trend}
    if ram.per_day <= 0:
        return {**answer, "reason": (f"does not run out at the current growth: used RAM "
                                     f"changes by {ram.per_day:+.0f} MiB a day")}
    if ram_until is None:
        return {**answer, "reason": (
            f"still fits after the {MAX_DECISIONS} placements a forecast simulates "
            f"({placed_mb} MiB of RAM, {placed_mb / ram.per_day:.0f} days)")}
    days = ram_until / ram.per_day
    date = _date(now, ram_until, ram.per_day)
    if date is None:
        return {**answer, "days": days,
                "reason": f"not within {HORIZON_DAYS // 365} years at the current growth"}
    return {**answer, "days": days, "date": date,
            "earliest": _date(now, ram_until, ram.per_day + SPREAD * ram.stderr),
            "latest": _date(now, ram_until, ram.per_day - SPREAD * ram.stderr),
            "reason": None}


# -- the answer ------------------------------------------------------------------------------

def forecast(ctx: ServiceContext, days: int = 30, now: datetime | None = None) -> dict[str, Any]:
    """``GET /ops/capacity/forecast``: per active package the date it stops fitting, with
    the trend, the mix and the assumptions. Too little history is no error: every date is
    then None with ``reason`` (but a package that fits nowhere already has its date, now)."""
    if days < 1 or days > MAX_FORECAST_DAYS:
        raise InvalidArgument("days", f"must be from 1 to {MAX_FORECAST_DAYS}, not {days}")
    now = now or utcnow()
    if now.tzinfo is None:  # the history's times are UTC
        now = now.replace(tzinfo=UTC)
    policy = placement.policy_for(ctx)
    with ctx.read() as session:
        snaps = _snapshots(session, now - timedelta(days=days), now)
        servers = [fleet.state_of(row) for row in session.scalars(select(Server))]
        packages = planning.active_packages(session)
        live = _live_machines(session)
        session.expunge_all()
    no_trend = _too_little(snaps, days)
    fitted = None if no_trend else trends(snaps)
    weights = mix_of(packages, live)
    requests = {p.uuid: placement.build_request(p, None) for p in packages}
    fill = ram_until_full(servers, requests, weights, policy, _pipeline(ctx))
    ram = fitted["ram_mb"] if fitted else None
    mix = _mix_view(packages, weights, live, fill.fits_now)
    return {
        "now": now, "days": days,
        "history": {"points": len(snaps), "first": snaps[0].taken_at if snaps else None,
                    "last": snaps[-1].taken_at if snaps else None},
        "trend": {r: t.as_dict() for r, t in fitted.items()} if fitted else None,
        "reason": no_trend,
        "mix": mix,
        "assumptions": assumptions(days, ram, mix, fill.per_decision),
        "simulation": {"decisions": fill.decisions, "machines_per_decision": fill.per_decision,
                       "placed_ram_mb": fill.placed_mb},
        "packages": [{"uuid": p.uuid, "name": p.name, "memory": p.memory, "disk": p.disk,
                      "cpu_cap": p.cpu_cap, "fits_now": fill.fits_now[p.uuid],
                      **package_dates(now, fill.until.get(p.uuid), ram, no_trend,
                                      fill.placed_mb)}
                     for p in packages],
    }


def _mix_view(packages: Sequence[Package], weights: Mapping[str, int], live: Mapping[str, int],
              fits_now: Mapping[str, int]) -> list[dict[str, Any]]:
    """Each package's share of the first new machines: a package that fits nowhere has
    none (the others take its share)."""
    starting = _sharing([p.uuid for p in packages if fits_now[p.uuid] > 0], weights)
    total = sum(starting.values())
    return [{"uuid": p.uuid, "name": p.name, "machines": live.get(p.uuid, 0),
             "share": starting.get(p.uuid, 0) / total if total else 0.0} for p in packages]


def _pipeline(ctx: ServiceContext) -> Pipeline:
    """The create's pipeline (with its candidate limit: a sample on a large fleet, drawn
    from a seeded generator) without the random scorer: the same answer every time, at
    a create's cost per decision."""
    return placement.pipeline_for(ctx).with_weights(uniform_random=0)


def assumptions(days: int, ram: Trend | None, mix: Sequence[dict[str, Any]],
                per_decision: int = 1) -> list[str]:
    """The forecast's assumptions, as sentences an operator reads beside the dates."""
    shares = ", ".join(f"{m['name']} {m['share']:.0%}" for m in mix if m["share"]) or "none"
    growth = ("" if ram is None else
              f": {ram.per_day:.0f} MiB a day (± {SPREAD:g} standard errors: "
              f"± {SPREAD * ram.stderr:.0f})")
    return [
        f"Used RAM (provisioned + reserved) grows linearly at the rate a least-squares fit "
        f"finds in the capacity history of the last {days} days{growth}; destroys are in it "
        f"(it is net growth).",
        f"New machines come in the current mix of live machines per active package "
        f"({shares}); with no live machine of any, in equal shares.",
        "A package that no longer fits leaves the mix and the others take its share; once "
        "none of the mix fits, the other packages that still fit share the growth equally.",
        "New machines are placed by the same placement pipeline as creates (without its "
        "random scorer), with no image, owner, affinity or network, "
        + ("one by one." if per_decision == 1 else
           f"up to {per_decision} of a package on the server each decision chooses (a fleet "
           f"this large would take too long one by one)."),
        "The servers stay as they are: none added, removed, set up, reserved or put in "
        "maintenance.",
        "Used RAM sets the pace: new machines take CPU and disk as their packages ask, and "
        "the CPU and disk trends are shown, not used.",
        f"The range runs from the growth + {SPREAD:g} standard errors (earliest) to the "
        f"growth - {SPREAD:g} (latest; none when that is not growth): about 95 %, and only "
        f"the trend's uncertainty, not the mix's.",
    ]
