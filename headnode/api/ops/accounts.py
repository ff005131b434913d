from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import accounts, passwords
from schemas.ops import Account, AccountPassword

blp = Blueprint("accounts", __name__, url_prefix="/ops/accounts",
                description="Accounts: tenants and operators")


@blp.route("")
class Accounts(MethodView):
    @blp.response(200, Account(many=True))
    def get(self) -> Any:
        return accounts.list_accounts(service_context())

    @blp.arguments(Account)
    @blp.response(201, Account)
    def post(self, attrs: dict[str, Any]) -> Any:
        return accounts.create_account(service_context(), **attrs)


@blp.route("/<ident>")
class AccountByIdent(MethodView):
    """``ident`` is the account's uuid or its login."""

    @blp.response(200, Account)
    def get(self, ident: str) -> Any:
        return accounts.get_account(service_context(), ident)


@blp.route("/<ident>/password")
class AccountPasswordByIdent(MethodView):
    """The account's console password: set (or replaced), or removed (no console sign-in)."""

    @blp.arguments(AccountPassword)
    @blp.response(204)
    def put(self, body: dict[str, Any], ident: str) -> None:
        passwords.set_password(service_context(), ident, body["password"])

    @blp.response(204)
    def delete(self, ident: str) -> None:
        passwords.set_password(service_context(), ident, None)
