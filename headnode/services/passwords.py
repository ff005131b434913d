"""Accounts' console passwords: argon2id hashes (argon2-cffi), checked in constant time.

A password is optional: an account without one cannot sign in to the console. Signing in with
an unknown login, with a login that has no password, or with a wrong password are refused
alike, and each costs one argon2 verification, so neither the answer nor its time tells
which logins exist or have a password.
"""

from __future__ import annotations

import logging

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import or_, select

from headnode.services import console_sessions
from headnode.services.context import ServiceContext
from headnode.services.errors import InvalidArgument, NotFound
from headnode.store.models import Account
from schemas.ops import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

log = logging.getLogger(__name__)

#: characters (the API's schema says the same, by the same constants)
MIN_LENGTH = PASSWORD_MIN_LENGTH
MAX_LENGTH = PASSWORD_MAX_LENGTH

#: argon2-cffi's defaults (RFC 9106's second recommended profile); a stored hash made with
#: other parameters is made again at the next successful sign-in
hasher = PasswordHasher()


def check_length(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidArgument("password", f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidArgument("password", f"must be at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The hash to store, after the length rules (InvalidArgument naming ``password``)."""
    check_length(password)
    return hasher.hash(password)


def set_password(ctx: ServiceContext, ident: str, password: str | None) -> Account:
    """Give the account (by uuid or login) this password; None removes it (no sign-in)."""
    new_hash = None if password is None else hash_password(password)
    with ctx.transaction() as session:
        account = session.scalar(
            select(Account).where(or_(Account.uuid == ident, Account.login == ident)))
        if account is None:
            raise NotFound("account", ident)
        account.password_hash = new_hash
    # a new password (or none) ends the console sessions the old one opened
    console_sessions.end_all(ctx, account.login)
    return account


#: the hash of a random password that was thrown away: verified when there is no real hash
#: to verify, so that an unknown login costs what a wrong password does. Made with
#: ``hasher``'s parameters (a test keeps them in step).
DECOY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$IMjchPBGsijTnQJv/av+ig$"
              "gCxxF4Kn/NKzw2Ny1h+mYQVqSMDjbk9b1M5lGtuA8CY")


def _matches(stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except VerificationError:  # a wrong password
        return False
    except InvalidHashError:
        log.error("an account's stored password hash is not an argon2 hash")
        return False


def authenticate(ctx: ServiceContext, login: str, password: str) -> Account | None:
    """The account whose login and password these are, else None (whatever was wrong)."""
    if not login or not password or len(password) > MAX_LENGTH:
        return None  # refused before any lookup: the time says nothing about the login
    with ctx.read() as session:
        account = session.scalar(select(Account).where(Account.login == login))
    if account is None or account.password_hash is None:
        _matches(DECOY_HASH, password)
        return None
    stored = account.password_hash
    if not _matches(stored, password):
        return None
    if hasher.check_needs_rehash(stored):
        _rehash(ctx, account, stored, password)
    return account


def _rehash(ctx: ServiceContext, account: Account, stored: str, password: str) -> None:
    """Store the password's hash by today's parameters, unless it was changed meanwhile."""
    with ctx.transaction() as session:
        row = session.get(Account, account.uuid)
        if row is not None and row.password_hash == stored:
            row.password_hash = hasher.hash(password)
            account.password_hash = row.password_hash
