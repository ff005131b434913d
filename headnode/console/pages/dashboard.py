"""The dashboard: fleet totals, servers by status, RAM/disk/CPU use, recent jobs."""

from __future__ import annotations

from typing import Any

from flask import render_template

from headnode.console import blueprint, charts, nav_entry
from headnode.console.pages.job_scope import recent_jobs
from headnode.console.viewer import Viewer, service_context, signed_in
from headnode.services import planning, servers

#: resource, its label, its unit
RESOURCES = (("ram_mb", "RAM", "MiB"), ("disk_mb", "Disk", "MiB"), ("cpu", "CPU", "% of a CPU"))

nav_entry("dashboard", "Dashboard")


def use_charts(report: dict[str, Any]) -> list[charts.Chart]:
    """RAM, disk and CPU of a capacity report (a server's or the fleet's) as bars of what
    is provisioned, reserved and free."""
    return [charts.stacked_bar(label, unit, [(part, report[key][part]) for part in
                                             ("provisioned", "reserved", "free")])
            for key, label, unit in RESOURCES]


@blueprint.get("/")
@signed_in
def dashboard(viewer: Viewer) -> Any:
    report = planning.report(service_context())
    fleet = report["fleet"]
    statuses = servers.count_by_status(service_context())
    return render_template("console/dashboard.html", viewer=viewer, fleet=fleet,
                           statuses=sorted(statuses.items()), use=use_charts(fleet),
                           jobs=recent_jobs(viewer))
