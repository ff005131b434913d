"""Machines: the list (operators: every owner's, filtered by owner, state, server and image;
tenants: their own) and a machine's page (NICs, tags, metadata, snapshots, jobs, actions).

A tenant's view goes through ``services.tenant`` as CloudAPI's does: another account's
machine is a 404, exactly like one that does not exist. Actions are in machine_actions, the
create form in machine_create."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import abort, render_template, request, url_for
from sqlalchemy import select

from headnode.console import blueprint, nav_entry
from headnode.console.viewer import Viewer, service_context, signed_in
from headnode.services import accounts, images, jobs, machines, nics, packages, snapshots
from headnode.services import tenant as tenant_service
from headnode.services.errors import NotFound, ServiceError
from headnode.store.models import Account, Server
from schemas.ops import MACHINE_STATES

PER_PAGE = 50
#: the jobs a machine's page lists, newest first
RECENT_JOBS = 20
#: what a refused filter or form answers: the page again, with why
BAD_INPUT = 422

nav_entry("machines_page", "Machines")


class InputError(Exception):
    """A form or query field the page cannot use: shown beside the field, 4xx."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Pager:
    """One page of a long list: ``?page=`` from 1, ``size`` rows each."""

    number: int
    total: int
    size: int = PER_PAGE

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def first_row(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last_row(self) -> int:
        return min(self.offset + self.size, self.total)


def page_number() -> int:
    """``?page=``: a whole number from 1 (none: 1)."""
    raw = request.args.get("page", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise InputError("page", "must be a whole number from 1")
    return int(raw)


def page_link(endpoint: str, **view_args: Any) -> Callable[[int], str]:
    """The URL of page ``n`` of this list, its filters kept."""
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k != "page" and v}

    def link(n: int) -> str:
        return url_for(endpoint, **{**view_args, **args, "page": n})
    return link


@dataclass(frozen=True)
class Filters:
    owner: str = ""
    state: str = ""
    server: str = ""
    image: str = ""


def _filters(viewer: Viewer) -> Filters:
    args = request.args
    state = args.get("state", "")
    if state and state not in MACHINE_STATES:
        raise InputError("state", f"must be one of {', '.join(MACHINE_STATES)}")
    if not viewer.is_operator:  # a tenant's list is its own, wherever it runs
        return Filters(state=state, image=args.get("image", ""))
    return Filters(args.get("owner", "").strip(), state, args.get("server", "").strip(),
                   args.get("image", ""))


def _owner_uuid(ident: str) -> str | None:
    if not ident:
        return None
    try:
        return accounts.get_account(service_context(), ident).uuid
    except NotFound as exc:
        raise InputError("owner", f"no account {ident!r}") from exc


def _rows(viewer: Viewer, wanted: Filters, page: int) -> tuple[list[dict[str, Any]], int]:
    ctx, offset = service_context(), (page - 1) * PER_PAGE
    if not viewer.is_operator:
        return tenant_service.list_machines(
            ctx, viewer.account_uuid, tenant_service.MachineFilter(
                state=wanted.state or None, image_uuid=wanted.image or None),
            limit=PER_PAGE, offset=offset)
    return machines.list_machines(ctx, limit=PER_PAGE, offset=offset,
                                  owner_uuid=_owner_uuid(wanted.owner),
                                  state=wanted.state or None,
                                  server_uuid=wanted.server or None,
                                  image_uuid=wanted.image or None)


def image_choices(viewer: Viewer) -> list[Any]:
    """The images the viewer may name: every one for an operator, else the tenant's own and
    the public ones (as CloudAPI's)."""
    ctx = service_context()
    if viewer.is_operator:
        return images.list_images(ctx)
    return tenant_service.visible_images(ctx, viewer.account_uuid)


def names(viewer: Viewer, rows: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """uuid -> name of what the machines shown refer to: packages and images (a catalog's
    few), owners and servers of these rows only (a fleet has thousands)."""
    ctx = service_context()
    found = {"package": {p.uuid: p.name for p in packages.list_packages(ctx)},
             "image": {i.uuid: f"{i.name} {i.version}" for i in images.list_images(ctx)}}
    if viewer.is_operator:
        found["owner"] = _names(Account.uuid, Account.login, {m["owner_uuid"] for m in rows})
        found["server"] = _names(Server.uuid, Server.hostname,
                                 {m["server_uuid"] for m in rows if m["server_uuid"]})
    return found


def _names(key: Any, name: Any, uuids: set[str]) -> dict[str, str]:
    if not uuids:
        return {}
    with service_context().read() as session:
        return {k: v for k, v in session.execute(select(key, name).where(key.in_(uuids)))}


@blueprint.get("/machines")
@signed_in
def machines_page(viewer: Viewer) -> Any:
    wanted, status, error = Filters(), 200, None
    rows: list[dict[str, Any]] = []
    total, number = 0, 1
    try:
        number = page_number()
        wanted = _filters(viewer)
        rows, total = _rows(viewer, wanted, number)
    except InputError as exc:
        status, error = BAD_INPUT, exc
    return render_template(
        "console/machines.html", viewer=viewer, rows=rows, filters=wanted, error=error,
        pager=Pager(number, total), page_url=page_link("console.machines_page"),
        states=MACHINE_STATES, images=image_choices(viewer), names=names(viewer, rows)), status


def visible_machine(viewer: Viewer, machine_uuid: str) -> dict[str, Any]:
    """The machine if the viewer may see it; otherwise a 404, as for one that is not."""
    ctx = service_context()
    try:
        if viewer.is_operator:
            return machines.get_machine(ctx, machine_uuid)
        return tenant_service.owned_machine(ctx, machine_uuid, viewer.account_uuid)
    except NotFound:
        abort(404)


def _nics(machine_uuid: str) -> list[dict[str, Any]]:
    with service_context().read() as session:
        return [nics.nic_to_ops(n) for n in nics.list_nics(session, machine_uuid)]


def render_machine(viewer: Viewer, machine_uuid: str, error: ServiceError | InputError |
                   None = None, status: int = 200, form: dict[str, str] | None = None) -> Any:
    """The machine's page; after a refused action, with why (and the action's status)."""
    machine = visible_machine(viewer, machine_uuid)
    ctx = service_context()
    return render_template(
        "console/machine.html", viewer=viewer, m=machine, nics=_nics(machine["uuid"]),
        snapshots=snapshots.list_snapshots(ctx, machine["uuid"]),
        jobs=jobs.list_jobs(ctx, machine_uuid=machine["uuid"], limit=RECENT_JOBS),
        packages=packages.list_packages(ctx, active=True), names=names(viewer, [machine]),
        error=error, error_field=getattr(error, "field", None), form=form or {}), status


@blueprint.get("/machines/<machine_uuid>")
@signed_in
def machine_page(viewer: Viewer, machine_uuid: str) -> Any:
    return render_machine(viewer, machine_uuid)
