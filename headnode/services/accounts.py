"""Accounts: tenants and operators."""

from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.services.passwords import hash_password
from headnode.store.models import Account
from schemas.ops import RESERVED_LOGINS


def list_accounts(ctx: ServiceContext, operator: bool | None = None) -> list[Account]:
    query = select(Account).order_by(Account.login)
    if operator is not None:
        query = query.where(Account.operator == operator)
    with ctx.read() as session:
        return list(session.scalars(query))


def get_account(ctx: ServiceContext, ident: str) -> Account:
    """By uuid or by login."""
    with ctx.read() as session:
        account = session.scalar(
            select(Account).where(or_(Account.uuid == ident, Account.login == ident))
        )
    if account is None:
        raise NotFound("account", ident)
    return account


def create_account(
    ctx: ServiceContext, login: str, email: str, operator: bool = False,
    password: str | None = None,
) -> Account:
    """``password``: the console password (optional; only its hash is kept)."""
    # The schema checks this for API callers; checked again for seeding scripts and the CLI,
    # because a reserved login would shadow an API path for that tenant.
    if login.lower() in RESERVED_LOGINS:
        raise InvalidArgument("login", f"{login!r} is reserved")
    password_hash = None if password is None else hash_password(password)
    try:
        with ctx.transaction() as session:
            if session.scalar(select(exists().where(Account.login == login))):
                raise Conflict(f"login {login} is taken", code="DuplicateLogin")
            account = Account(login=login, email=email, operator=operator,
                              password_hash=password_hash)
            session.add(account)
    except IntegrityError as exc:
        raise Conflict(f"login {login} is taken", code="DuplicateLogin") from exc
    return account
