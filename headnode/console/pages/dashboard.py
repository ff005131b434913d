"""The dashboard: fleet totals, servers by status, RAM/disk/CPU use, recent jobs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import render_template

from headnode.console import blueprint, charts, nav_entry
from headnode.console.pages.job_scope import recent_jobs
from headnode.console.viewer import Viewer, service_context, signed_in
from headnode.services import planning, servers

#: resource, its label, its unit
RESOURCES = (("ram_mb", "RAM", "MiB"), ("disk_mb", "Disk", "MiB"), ("cpu", "CPU", "% of a CPU"))

nav_entry("dashboard", "Dashboard")


@blueprint.get("/")
@signed_in
def dashboard(viewer: Viewer) -> Any:
    report = planning.report(service_context())
    fleet = report["fleet"]
    statuses = Counter(s.status for s in servers.list_servers(service_context()))
    use = [charts.stacked_bar(
        label, unit, [("provisioned", fleet[key]["provisioned"]),
                      ("reserved", fleet[key]["reserved"]), ("free", fleet[key]["free"])])
        for key, label, unit in RESOURCES]
    return render_template("console/dashboard.html", viewer=viewer, fleet=fleet,
                           statuses=sorted(statuses.items()), use=use,
                           jobs=recent_jobs(viewer))
