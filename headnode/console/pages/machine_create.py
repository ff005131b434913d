"""Creating a machine from a form: image, package, networks, tags, metadata (and, for an
operator, its owner). The create is ``services.machines.create_machine``, as both APIs call
it, so placement and every check are the same; a refusal is the form again with why (the
placement reasons listed), its 4xx status and the values as they were given."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from headnode.console import blueprint
from headnode.console.pages.machine_actions import started
from headnode.console.pages.machines import BAD_INPUT, InputError, image_choices
from headnode.console.viewer import Viewer, service_context, signed_in
from headnode.services import machines, networks, packages
from headnode.services import tenant as tenant_service
from headnode.services.errors import NotFound, ServiceError
from schemas.ops import MachineCreate


def _pairs(field: str, text: str) -> dict[str, str]:
    """``key=value``, one a line (blank lines skipped)."""
    pairs: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InputError(field, f"line {n} is not key=value: {line.strip()!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _image(viewer: Viewer, ident: str) -> str:
    """The image named, if the viewer may use it: a tenant only public ones and its own."""
    if not ident:
        raise InputError("image", "is required")
    if viewer.is_operator:
        return ident
    try:
        return tenant_service.visible_image(service_context(), ident, viewer.account_uuid).uuid
    except NotFound as exc:
        raise InputError("image", f"no image {ident!r}") from exc


def _body(viewer: Viewer) -> dict[str, Any]:
    """The create's body from the form, checked by the operator API's own schema."""
    form = request.form
    owner = form.get("owner", "").strip() if viewer.is_operator else viewer.account_uuid
    if not owner:
        raise InputError("owner", "is required")
    package = form.get("package", "").strip()
    if not package:
        raise InputError("package", "is required")
    body: dict[str, Any] = {
        "owner": owner, "package": package, "image": _image(viewer, form.get("image", "")),
        "tags": _pairs("tags", form.get("tags", "")),
        "metadata": _pairs("metadata", form.get("metadata", ""))}
    if form.get("alias", "").strip():
        body["alias"] = form["alias"].strip()
    chosen = [n for n in form.getlist("networks") if n]
    if chosen:
        body["networks"] = chosen
    try:
        return dict(MachineCreate().load(body))
    except ValidationError as exc:
        field = next(iter(exc.messages_dict), "form")
        raise InputError(field, _first(exc.messages_dict[field])) from exc


def _first(messages: Any) -> str:
    """The first message of marshmallow's (maybe nested) list or dict of them."""
    while isinstance(messages, (list, dict)):
        messages = next(iter(messages.values() if isinstance(messages, dict) else messages),
                        "is not valid")
    return str(messages)


def _form(viewer: Viewer, error: ServiceError | InputError | None = None,
          status: int = 200) -> Any:
    ctx = service_context()
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    reasons = error.details.get("reasons") if isinstance(error, ServiceError) else None
    return render_template(
        "console/machine_new.html", viewer=viewer, images=image_choices(viewer),
        packages=packages.list_packages(ctx, active=True),
        networks=networks.list_networks(ctx, None if viewer.is_operator
                                        else viewer.account_uuid),
        values=values, chosen=set(request.form.getlist("networks")), error=error,
        error_field=((getattr(error, "field", None) or _service_field(error))
                     if error else None),
        reasons=sorted((reasons or {}).items())), status


def _service_field(error: ServiceError | InputError) -> str | None:
    if isinstance(error, ServiceError):
        errors = error.details.get("errors") or {}
        return next(iter(errors), None)
    return None


@blueprint.get("/machines/new")
@signed_in
def machine_new(viewer: Viewer) -> Any:
    return _form(viewer)


@blueprint.post("/machines/new")
@signed_in
def machine_create(viewer: Viewer) -> Any:
    try:
        body = _body(viewer)
        created = machines.create_machine(service_context(), body, viewer.caller(),
                                          require_keys=not viewer.is_operator)
    except InputError as exc:
        return _form(viewer, exc, BAD_INPUT)
    except ServiceError as exc:
        return _form(viewer, exc, exc.status)
    flash(started(f"Create of {created['alias']}", str(created["job_uuid"])), "success")
    return redirect(url_for("console.machine_page", machine_uuid=created["uuid"]), code=303)
