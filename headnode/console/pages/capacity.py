"""The capacity planner (operators): per package how many more fit now, the utilization
history as a chart, the what-if beside the current fleet, and placement explain for a
machine that does not exist. Every number comes from the planning and placement services
the operator API answers with (``/ops/capacity``, ``/ops/capacity/simulate``,
``/ops/capacity/history``, ``/ops/allocate``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from flask import render_template, request

from headnode.console import blueprint, charts, nav_entry
from headnode.console.pages import capacity_forms as forms
from headnode.console.viewer import Viewer, operators_only, service_context
from headnode.services import forecast, images, packages, placement, planning
from headnode.services.errors import ServiceError
from headnode.store.models import utcnow
from schemas.placement import ForecastQuery

#: resource, its label, its unit (as planning names them)
RESOURCES = (("ram_mb", "RAM", "MiB"), ("cpu", "CPU", "% of a CPU"),
             ("disk_mb", "Disk", "MiB"))
#: the history windows offered, in days; the first is the default
WINDOWS = (7, 1, 30)
#: at most this many points drawn per chart: a longer history is thinned evenly (the page
#: says so), so a month of 5-minute snapshots stays a page a browser draws at once
MAX_POINTS = 300
#: an image list for the explain form's suggestions, not the whole catalogue
IMAGE_SUGGESTIONS = 50
#: a form the services or the schema refused: the form again, with the fields named
REFUSED = 422

nav_entry("capacity", "Capacity", operators=True)


@blueprint.get("/capacity")
@operators_only
def capacity(viewer: Viewer) -> Any:
    report = planning.report(service_context())
    days_text = request.args.get("days", str(WINDOWS[0]))
    errors = {}
    if days_text not in {str(d) for d in WINDOWS}:
        errors["days"] = f"one of {', '.join(str(d) for d in sorted(WINDOWS))}, not {days_text!r}"
        days_text = str(WINDOWS[0])
    days = int(days_text)
    since = utcnow() - timedelta(days=days)
    shown = planning.history(service_context(), since=since, most=MAX_POINTS)
    total = planning.history_count(service_context(), since)
    page = render_template(
        "console/capacity.html", viewer=viewer, report=report, resources=RESOURCES,
        fleet=report["fleet"], days=days, windows=sorted(WINDOWS), errors=errors,
        history_total=total, history_shown=len(shown),
        use_chart=use_chart(shown), machines_chart=machines_chart(shown),
        values=forms.whatif_values({}), place_rows=range(forms.PLACE_ROWS),
        packages=report["packages"], label=forms.field_label)
    return page, (400 if errors else 200)


def used_percent(point: dict[str, Any], resource: str) -> float:
    """Provisioned and reserved (what placement cannot give) as a share of the total."""
    amounts = point[resource]
    total = amounts["total"]
    return 100.0 * (amounts["provisioned"] + amounts["reserved"]) / total if total else 0.0


def use_chart(points: Sequence[dict[str, Any]]) -> charts.LineChart:
    return charts.line_chart(
        "Fleet use over time", "% used", "Time (UTC)", [label for _, label, _ in RESOURCES],
        [(p["taken_at"], [used_percent(p, r) for r, _, _ in RESOURCES]) for p in points],
        y_max=100.0)


def machines_chart(points: Sequence[dict[str, Any]]) -> charts.LineChart:
    # whole ticks for a count, however small
    most = max((p["machines"] for p in points), default=0)
    return charts.line_chart("Machines over time", "machines", "Time (UTC)", ["Machines"],
                             [(p["taken_at"], [float(p["machines"])]) for p in points],
                             y_max=charts.nice_top(max(most, charts.Y_TICKS)))


# -- what if -------------------------------------------------------------------------------

@blueprint.get("/capacity/whatif")
@operators_only
def capacity_whatif(viewer: Viewer) -> Any:
    values = forms.whatif_values(request.args)
    ctx = service_context()
    report = planning.report(ctx)
    result, errors = None, {}
    if forms.whatif_submitted(request.args):
        outcome = forms.whatif_body(values)
        errors = outcome.errors
        if outcome.body is not None:
            try:
                result = planning.simulate(ctx, outcome.body)
            except ServiceError as exc:
                errors = forms.renumber_service_field(forms.service_errors(exc), values)
    page = render_template(
        "console/capacity_whatif.html", viewer=viewer, values=values, errors=errors,
        place_rows=range(forms.PLACE_ROWS), packages=report["packages"],
        label=forms.field_label, result=result and whatif_view(report, result))
    return page, (REFUSED if errors else 200)


def whatif_view(report: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The simulation beside the fleet now: free room before and after as charts side by
    side, and per package the fits before and after."""
    fleet = report["fleet"]
    free = [charts.column_chart(f"Free {label}", unit,
                                [("now", fleet[key]["free"]),
                                 ("after", result["fleet_free"][key])])
            for key, label, unit in RESOURCES]
    after = {p["uuid"]: p["fits"] for p in result["packages"]}
    fits = [{"name": p["name"], "before": p["fits"], "after": after.get(p["uuid"], 0)}
            for p in report["packages"]]
    added = [s for s in result["servers"] if s["added"]]
    return {"free": free, "fits": fits, "placements": result["placements"],
            "added": len(added), "servers_after": len(result["servers"]),
            "servers_before": fleet["servers"]}


# -- explain -------------------------------------------------------------------------------

@blueprint.get("/capacity/explain")
@operators_only
def capacity_explain(viewer: Viewer) -> Any:
    values = forms.explain_values(request.args)
    ctx = service_context()
    result, errors = None, {}
    if forms.explain_submitted(request.args):
        outcome = forms.explain_body(values)
        errors = outcome.errors
        if outcome.body is not None:
            try:
                result = placement.dry_run(ctx, outcome.body)
            except ServiceError as exc:
                errors = forms.service_errors(exc)
    with_image = images.list_images(ctx, state="active")[:IMAGE_SUGGESTIONS]
    page = render_template(
        "console/capacity_explain.html", viewer=viewer, values=values, errors=errors,
        result=result, packages=packages.list_packages(ctx, active=True), images=with_image,
        label=forms.field_label)
    return page, (REFUSED if errors else 200)


# -- forecast ------------------------------------------------------------------------------
# Its own page, not a section of /capacity: the forecast places the fleet's growth until
# nothing fits (up to thousands of decisions), more than the planner's first page should
# cost on every visit.

@blueprint.get("/capacity/forecast")
@operators_only
def capacity_forecast(viewer: Viewer) -> Any:
    days_text = request.args.get("days", "30")
    outcome = forms.load(ForecastQuery(), {"days": days_text.strip()})
    errors, answer = outcome.errors, None
    if outcome.body is not None:
        try:
            answer = forecast.forecast(service_context(), outcome.body["days"])
        except ServiceError as exc:
            errors = forms.service_errors(exc)
    page = render_template("console/capacity_forecast.html", viewer=viewer, days=days_text,
                           errors=errors, forecast=answer, resources=RESOURCES,
                           label=forms.field_label, dates=answer and dates_chart(answer))
    return page, (REFUSED if errors else 200)


def dates_chart(answer: dict[str, Any]) -> charts.Chart | None:
    """Days from now until each package stops fitting, with the range of the trend's
    uncertainty; None when no package has a date."""
    now = answer["now"]

    def days_to(when: Any) -> float | None:
        return None if when is None else (when - now).total_seconds() / 86400

    rows = [(p["name"], days_to(p["date"]), days_to(p["earliest"]), days_to(p["latest"]))
            for p in answer["packages"]]
    if not any(days is not None for _, days, _, _ in rows):
        return None
    return charts.range_chart("Days until each package stops fitting", "days from now", rows)
