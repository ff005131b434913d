"""Accounts (operators: list, create) and SSH keys (a tenant: their own, added by pasting
an OpenSSH public key, or deleted; an operator: any account's, chosen with ``?account=``).
A key reaches the account's machines (authorized_keys) as when added through the APIs."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from headnode.console import blueprint, nav_entry
from headnode.console.pages.catalog_common import (
    FormErrors,
    form_body,
    page_number,
    page_of,
    refusal_of_schema,
    refusal_of_service,
)
from headnode.console.viewer import Viewer, operators_only, service_context, signed_in
from headnode.services import accounts, keys
from headnode.services.errors import NotFound, ServiceError
from headnode.store.models import Account
from schemas.networks import KeyCreate
from schemas.ops import Account as AccountSchema

ACCOUNT_CHECKBOXES = ("operator",)
#: the console password, if one is given now (it can be set later: sdc account passwd)
ACCOUNT_VERBATIM = ("password",)

nav_entry("accounts", "Accounts", operators=True)
nav_entry("keys", "SSH keys")


# ---------------------------------------------------------------------------- accounts


def _accounts(errors: FormErrors | None = None) -> str:
    rows = accounts.list_accounts(service_context())
    return render_template("console/accounts.html", pager=page_of(rows, page_number()),
                           errors=errors, form=request.form if errors else None)


@blueprint.get("/accounts", endpoint="accounts")
@operators_only
def accounts_page(viewer: Viewer) -> Any:
    return _accounts()


@blueprint.post("/accounts")
@operators_only
def create_account(viewer: Viewer) -> Any:
    try:
        attrs = form_body(AccountSchema(), request.form, ACCOUNT_CHECKBOXES, ACCOUNT_VERBATIM)
        created = accounts.create_account(service_context(), **attrs)
    except ValidationError as exc:
        errors = refusal_of_schema(exc)
        return _accounts(errors), errors.status
    except ServiceError as exc:
        errors = refusal_of_service(exc)
        return _accounts(errors), errors.status
    flash(f"Account {created.login} created.", "success")
    return redirect(url_for("console.accounts"))


# ---------------------------------------------------------------------------- keys


def _whose_keys(viewer: Viewer, ident: str | None) -> Account | None:
    """The account whose keys are shown: a tenant's own (whatever is asked); for an
    operator, the one named (None when none is: the page asks which)."""
    ctx = service_context()
    if not viewer.is_operator:
        return accounts.get_account(ctx, viewer.account_uuid)
    if not ident:
        return None
    try:
        return accounts.get_account(ctx, ident)
    except NotFound:
        abort(404, description=f"account: no account {ident!r}")


def _keys(viewer: Viewer, account: Account | None, errors: FormErrors | None = None) -> str:
    rows = keys.list_keys(service_context(), account.uuid) if account else []
    return render_template("console/keys.html", account=account, keys=rows,
                           errors=errors, form=request.form if errors else None)


@blueprint.get("/keys", endpoint="keys")
@signed_in
def keys_page(viewer: Viewer) -> Any:
    return _keys(viewer, _whose_keys(viewer, request.args.get("account")))


def _back_to_keys(viewer: Viewer, account: Account) -> Any:
    if viewer.is_operator:
        return redirect(url_for("console.keys", account=account.login))
    return redirect(url_for("console.keys"))


@blueprint.post("/keys")
@signed_in
def add_key(viewer: Viewer) -> Any:
    account = _whose_keys(viewer, request.form.get("account"))
    if account is None:
        abort(400, description="account: say whose key this is")
    try:
        body = form_body(KeyCreate(), request.form)
        created = keys.create_key(service_context(), account.uuid, body.get("name"),
                                  body["key"])
    except ValidationError as exc:
        errors = refusal_of_schema(exc)
        return _keys(viewer, account, errors), errors.status
    except ServiceError as exc:
        errors = refusal_of_service(exc)
        return _keys(viewer, account, errors), errors.status
    flash(f"Key {created.name} added.", "success")
    return _back_to_keys(viewer, account)


@blueprint.post("/keys/delete")
@signed_in
def delete_key(viewer: Viewer) -> Any:
    account = _whose_keys(viewer, request.form.get("account"))
    if account is None:
        abort(400, description="account: say whose key this is")
    name = request.form.get("name", "")
    try:
        keys.delete_key(service_context(), account.uuid, name)
    except ServiceError as exc:
        refused = refusal_of_service(exc)
        refused.message = f"Not deleted. {exc.message}"
        return _keys(viewer, account, refused), refused.status
    flash(f"Key {name} deleted.", "success")
    return _back_to_keys(viewer, account)
