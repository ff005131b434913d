"""``sdc up --demo``: a demo account, packages, an image and a network, and six machines
provisioned on the mock fleet, then where they landed and the first job's steps. A data dir
keeps its cloud, so a second run reuses the machines of the first."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from rich.table import Table

from headnode.cli.client import OpsClient
from headnode.cli.output import (
    console,
    fmt_duration,
    fmt_job_error,
    job_steps_table,
    seconds_between,
)
from headnode.cli.supervisor import StartupFailed, Supervisor

DEMO_LOGIN = "demo"
DEMO_PACKAGES = {"small": (1024, 10 * 1024), "large": (4096, 40 * 1024)}
DEMO_IMAGE = ("base-64-lts", "24.4.1")
DEMO_MACHINES = 6
#: states in which a demo machine is kept for the next run (it holds its name)
LIVE_STATES = ("provisioning", "running", "stopped", "unknown")
#: the public network demo machines get their addresses on
DEMO_NETWORK = {"name": "external", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
                "provision_start_ip": "10.88.0.10", "provision_end_ip": "10.88.0.250",
                "resolvers": ["10.88.0.1"], "description": "made by sdc up --demo"}


def run_demo(ops: OpsClient, supervisor: Supervisor, say: Callable[[str], None]) -> None:
    """Make sure the demo account has DEMO_MACHINES live machines and show where they are.

    A data dir keeps its cloud across `sdc up` runs, so a second `sdc up --demo` reuses the
    machines the first made and provisions only what is missing (one that failed or was
    deleted): running the demo again never piles machines up."""
    owner_uuid = ensure_demo_catalog(ops)
    image_uuid = ensure_demo_image(ops)
    show_console_password(ops)
    kept = live_demo_machines(ops, owner_uuid)
    if kept:
        say(f"reusing {len(kept)} machine(s) of an earlier demo on this data dir")
    aliases = next_aliases(ops, DEMO_MACHINES - len(kept))
    sizes = list(DEMO_PACKAGES)
    created = []
    for n, alias in enumerate(aliases, start=len(kept)):
        pkg = sizes[n % len(sizes)]
        machine = ops.post("/ops/machines", {"owner": DEMO_LOGIN, "package": pkg,
                                             "image": image_uuid, "alias": alias,
                                             "tags": {"demo": True}})
        created.append((alias, pkg, machine))
    package_names = {p["uuid"]: p.get("name") for p in ops.get("/ops/packages")}
    shown = [(m["alias"], str(package_names.get(m["package_uuid"], "")), m) for m in kept]
    if not created:
        show_placement(ops, shown)
        return
    say(f"provisioned {len(created)} machines; waiting for their jobs")
    jobs = wait_for_jobs(ops, [m["job_uuid"] for _, _, m in created], supervisor)
    show_placement(ops, shown + created)
    show_first_job(created, jobs)


def show_console_password(ops: OpsClient) -> None:
    """A new console password for the demo account, each run (only its hash is kept, so
    an earlier run's cannot be shown again)."""
    password = secrets.token_urlsafe(12)
    ops.put(f"/ops/accounts/{DEMO_LOGIN}/password", {"password": password})
    console().print(f"console sign-in as the tenant: login [bold]{DEMO_LOGIN}[/], password "
                    f"[bold]{password}[/]", highlight=False)


def live_demo_machines(ops: OpsClient, owner_uuid: str) -> list[dict[str, Any]]:
    """The demo account's machines made by a demo that still hold their name."""
    rows = ops.get("/ops/machines", {"owner_uuid": owner_uuid})
    return [m for m in rows if str(m.get("alias", "")).startswith("demo-")
            and m.get("state") in LIVE_STATES]


def show_first_job(created: list[tuple[str, str, dict[str, Any]]],
                   jobs: dict[str, dict[str, Any]]) -> None:
    first_job = jobs[created[0][2]["job_uuid"]]
    took = seconds_between(first_job.get("started_at"), first_job.get("finished_at"))
    out = console()
    out.print(f"\njob {first_job['uuid']} ({first_job.get('name')}) of {created[0][0]}: "
              f"{first_job.get('execution')}, took {fmt_duration(took)}", highlight=False)
    out.print(job_steps_table(first_job))
    failed = [j for j in jobs.values() if j.get("execution") == "failed"]
    for job in failed:
        out.print(f"[red]job {job['uuid']} failed:[/] {fmt_job_error(job.get('error'))}",
                  highlight=False)


def ensure_demo_catalog(ops: OpsClient) -> str:
    """The demo account (its uuid), packages and network, made if missing."""
    account = next((a for a in ops.get("/ops/accounts") if a.get("login") == DEMO_LOGIN), None)
    if account is None:
        account = ops.post("/ops/accounts", {"login": DEMO_LOGIN, "email": "demo@example.com"})
    names = {p.get("name") for p in ops.get("/ops/packages")}
    for name, (memory, disk) in DEMO_PACKAGES.items():
        if name not in names:
            ops.post("/ops/packages", {"name": name, "memory": memory, "disk": disk,
                                       "description": f"demo package ({name})"})
    if not ops.get("/ops/networks"):
        ops.post("/ops/networks", DEMO_NETWORK)
    return str(account["uuid"])


def ensure_demo_image(ops: OpsClient) -> str:
    name, version = DEMO_IMAGE
    for img in ops.get("/ops/images"):
        if img.get("name") == name and img.get("version") == version:
            return str(img["uuid"])
    created = ops.post("/ops/images", {"name": name, "version": version, "os": "smartos",
                                       "type": "zone-dataset", "size_mb": 512})
    return str(created["uuid"])


def next_aliases(ops: OpsClient, count: int) -> list[str]:
    """demo-1, demo-2, ... skipping those a previous demo on this data dir already used."""
    taken = {m.get("alias") for m in ops.get("/ops/machines")}
    aliases: list[str] = []
    n = 1
    while len(aliases) < count:
        alias = f"demo-{n}"
        if alias not in taken:
            aliases.append(alias)
        n += 1
    return aliases


def wait_for_jobs(ops: OpsClient, job_uuids: list[str], supervisor: Supervisor,
                  timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with console(stderr=True).status("waiting for jobs") as status:
        while len(done) < len(job_uuids):
            supervisor.check()
            for job_uuid in job_uuids:
                if job_uuid in done:
                    continue
                row = ops.get(f"/ops/jobs/{job_uuid}")
                if row.get("execution") in ("succeeded", "failed", "canceled"):
                    done[job_uuid] = row
            status.update(f"jobs finished: {len(done)}/{len(job_uuids)}")
            if time.monotonic() > deadline:
                raise StartupFailed(f"demo: {len(job_uuids) - len(done)} job(s) still "
                                    f"running after {timeout:g} s")
            time.sleep(0.2)
    return done


def show_placement(ops: OpsClient, created: list[tuple[str, str, dict[str, Any]]]) -> None:
    hostnames = {s["uuid"]: s.get("hostname") for s in ops.get("/ops/servers")}
    table = Table("alias", "package", "server", "state", title="where the machines landed")
    for alias, pkg, machine in created:
        now = ops.get(f"/ops/machines/{machine['uuid']}")
        srv = now.get("server_uuid")
        table.add_row(alias, pkg, str(hostnames.get(srv, srv) or "-"), now.get("state", ""))
    console().print(table)
