"""Accounts (operators: list, create) and SSH keys (a tenant: their own, added by pasting
an OpenSSH public key, or deleted; an operator: any account's, chosen with ``?account=``).
A key reaches the account's machines (authorized_keys) as when added through the APIs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, render_template, request
from werkzeug.wrappers import Response

from headnode.console import blueprint, nav_entry
from headnode.console.pages.catalog_common import (
    FormErrors,
    back_to,
    form_body,
    page_number,
    page_of,
    submitted,
)
from headnode.console.viewer import Viewer, operators_only, service_context, signed_in
from headnode.services import accounts, keys
from headnode.services.errors import NotFound
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
    def act() -> str:
        attrs = form_body(AccountSchema(), request.form, ACCOUNT_CHECKBOXES, ACCOUNT_VERBATIM)
        return f"Account {accounts.create_account(service_context(), **attrs).login} created."
    return submitted(_accounts, act, back_to("console.accounts"))


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


def _back_to_keys(viewer: Viewer, account: Account) -> Callable[[], Response]:
    if viewer.is_operator:
        return back_to("console.keys", account=account.login)
    return back_to("console.keys")


def _keys_of_form(viewer: Viewer) -> Account:
    account = _whose_keys(viewer, request.form.get("account"))
    if account is None:
        abort(400, description="account: say whose key this is")
    return account


@blueprint.post("/keys")
@signed_in
def add_key(viewer: Viewer) -> Any:
    account = _keys_of_form(viewer)

    def act() -> str:
        body = form_body(KeyCreate(), request.form)
        created = keys.create_key(service_context(), account.uuid, body.get("name"),
                                  body["key"])
        return f"Key {created.name} added."
    return submitted(lambda errors: _keys(viewer, account, errors), act,
                     _back_to_keys(viewer, account))


@blueprint.post("/keys/delete")
@signed_in
def delete_key(viewer: Viewer) -> Any:
    account = _keys_of_form(viewer)
    name = request.form.get("name", "")

    def act() -> str:
        keys.delete_key(service_context(), account.uuid, name)
        return f"Key {name} deleted."
    return submitted(lambda errors: _keys(viewer, account, errors), act,
                     _back_to_keys(viewer, account), refused="Not deleted.")
