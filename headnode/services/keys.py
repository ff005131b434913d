"""SSH keys of accounts: what their CloudAPI requests are signed with, and what their
machines are logged in to with (a change reaches the machines: authorized_keys)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from headnode.services import authorized_keys
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.store.models import Account, Key
from sdccommon.sshkeys import BadKey, parse_public_key

# A key's name appears in paths (/:login/keys/:name): no slash, no control character.
KEY_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,128}$")


def key_to_dict(key: Key) -> dict[str, Any]:
    """CloudAPI's key object (``fingerprint`` is the MD5 form, as CloudAPI lists it), plus
    the SHA256 fingerprint and the creation time."""
    return {"name": key.name, "fingerprint": key.fingerprint_md5,
            "fingerprint_sha256": key.fingerprint_sha256, "key": key.key,
            "created": key.created_at}


def _check_account(session: Session, account_uuid: str) -> None:
    if session.get(Account, account_uuid) is None:
        raise NotFound("account", account_uuid)


def _find(session: Session, account_uuid: str, name_or_fingerprint: str) -> Key:
    ident = name_or_fingerprint
    key = session.scalar(select(Key).where(
        Key.account_uuid == account_uuid,
        or_(Key.name == ident, Key.fingerprint_md5 == ident.lower().removeprefix("md5:"),
            Key.fingerprint_sha256 == ident)))
    if key is None:
        raise NotFound("key", ident)
    return key


def list_keys(ctx: ServiceContext, account_uuid: str) -> list[Key]:
    with ctx.read() as session:
        _check_account(session, account_uuid)
        return list(session.scalars(select(Key).where(Key.account_uuid == account_uuid)
                                    .order_by(Key.created_at, Key.name)))


def get_key(ctx: ServiceContext, account_uuid: str, name_or_fingerprint: str) -> Key:
    """By name, MD5 fingerprint or SHA256 fingerprint; another account's key is NotFound."""
    with ctx.read() as session:
        return _find(session, account_uuid, name_or_fingerprint)


def create_key(ctx: ServiceContext, account_uuid: str, name: str | None,
               key_text: str) -> Key:
    """Add an OpenSSH public key. ``name`` defaults to the key's MD5 fingerprint (CloudAPI's
    default). A bad key is InvalidArgument naming ``key``; a taken name or a key the account
    already has is a 409."""
    try:
        parsed = parse_public_key(key_text)
    except BadKey as exc:
        raise InvalidArgument("key", str(exc)) from exc
    name = parsed.fingerprint_md5 if name is None or name == "" else name
    if not isinstance(name, str) or not KEY_NAME.match(name):
        raise InvalidArgument("name", "1 to 128 characters, no slash or control character")
    try:
        with ctx.transaction() as session:
            _check_account(session, account_uuid)
            _refuse_duplicate(session, account_uuid, name, parsed.fingerprint_sha256)
            key = Key(account_uuid=account_uuid, name=name,
                      fingerprint_md5=parsed.fingerprint_md5,
                      fingerprint_sha256=parsed.fingerprint_sha256, key=parsed.text)
            session.add(key)
            pushes = authorized_keys.refresh_machines(session, account_uuid)
    except IntegrityError as exc:  # a concurrent create won the race
        raise Conflict(f"key {name} already exists", code="Conflict") from exc
    authorized_keys.send(ctx, pushes)
    return key


def _refuse_duplicate(session: Session, account_uuid: str, name: str, sha256: str) -> None:
    same = session.scalar(select(Key).where(
        Key.account_uuid == account_uuid,
        or_(Key.name == name, Key.fingerprint_sha256 == sha256)))
    if same is None:
        return
    if same.name == name:
        raise Conflict(f"a key named {name!r} already exists", code="Conflict")
    raise Conflict(f"this key is already added, as {same.name!r}", code="Conflict")


def delete_key(ctx: ServiceContext, account_uuid: str, name_or_fingerprint: str) -> None:
    with ctx.transaction() as session:
        session.delete(_find(session, account_uuid, name_or_fingerprint))
        pushes = authorized_keys.refresh_machines(session, account_uuid)
    authorized_keys.send(ctx, pushes)
