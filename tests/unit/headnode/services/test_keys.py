"""The keys service on the real PostgreSQL: create, find, list, delete, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import keys as svc
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.store.models import Key
from tests.unit.headnode.auth.conftest import private_key, public_line
from tests.unit.headnode.services.conftest import count, make_account


@pytest.fixture
def accounts(ctx: Any) -> dict[str, Any]:
    return {"alice": make_account(ctx, login="alice"), "bob": make_account(ctx, login="bob")}


def test_create_then_find_by_name_or_either_fingerprint(ctx: Any,
                                                       accounts: dict[str, Any]) -> None:
    alice = accounts["alice"].uuid
    line = public_line(private_key("ed25519"), "alice@laptop")
    key = svc.create_key(ctx, alice, "laptop", line)
    assert key.key == line and key.fingerprint_sha256.startswith("SHA256:")
    for ident in ("laptop", key.fingerprint_md5, key.fingerprint_sha256,
                  "MD5:" + key.fingerprint_md5):
        assert svc.get_key(ctx, alice, ident).uuid == key.uuid
    shown = svc.key_to_dict(key)
    assert (shown["name"], shown["fingerprint"], shown["key"]) == (
        "laptop", key.fingerprint_md5, line)
    assert [k.name for k in svc.list_keys(ctx, alice)] == ["laptop"]


def test_names_may_hold_spaces_quotes_and_non_ascii(ctx: Any, accounts: dict[str, Any]) -> None:
    key = svc.create_key(ctx, accounts["alice"].uuid, "Jöhn's key #2",
                         public_line(private_key("ed25519")))
    assert svc.get_key(ctx, accounts["alice"].uuid, "Jöhn's key #2").uuid == key.uuid


def test_the_name_defaults_to_the_md5_fingerprint(ctx: Any, accounts: dict[str, Any]) -> None:
    key = svc.create_key(ctx, accounts["alice"].uuid, None, public_line(private_key("rsa")))
    assert key.name == key.fingerprint_md5


@pytest.mark.parametrize("text", ["", "ssh-rsa AAAA", "not a key", "ssh-ed25519 AAAAC3Nz!!"])
def test_a_bad_key_is_invalid_argument_key(ctx: Any, accounts: dict[str, Any],
                                           text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        svc.create_key(ctx, accounts["alice"].uuid, "k", text)
    assert err.value.field == "key"
    assert count(ctx, Key) == 0


@pytest.mark.parametrize("name", ["a/b", "x" * 129, "tab\there", "back\\slash"])
def test_a_bad_name_is_invalid_argument_name(ctx: Any, accounts: dict[str, Any],
                                             name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        svc.create_key(ctx, accounts["alice"].uuid, name, public_line(private_key("ed25519")))
    assert err.value.field == "name"


def test_duplicates_are_conflicts_per_account(ctx: Any, accounts: dict[str, Any]) -> None:
    alice, bob = accounts["alice"].uuid, accounts["bob"].uuid
    line = public_line(private_key("ed25519"))
    svc.create_key(ctx, alice, "one", line)
    with pytest.raises(Conflict) as err:
        svc.create_key(ctx, alice, "two", line)  # the same key again
    assert err.value.status == 409 and "'one'" in err.value.message
    with pytest.raises(Conflict):
        svc.create_key(ctx, alice, "one", public_line(private_key("ed25519")))  # name taken
    # another account may add the same key and the same name
    assert svc.create_key(ctx, bob, "one", line).account_uuid == bob
    assert count(ctx, Key) == 2


def test_another_accounts_key_is_not_found(ctx: Any, accounts: dict[str, Any]) -> None:
    key = svc.create_key(ctx, accounts["alice"].uuid, "k", public_line(private_key("rsa")))
    for ident in ("k", key.fingerprint_md5):
        with pytest.raises(NotFound):
            svc.get_key(ctx, accounts["bob"].uuid, ident)
        with pytest.raises(NotFound):
            svc.delete_key(ctx, accounts["bob"].uuid, ident)
    assert svc.list_keys(ctx, accounts["bob"].uuid) == []
    assert count(ctx, Key) == 1


def test_delete(ctx: Any, accounts: dict[str, Any]) -> None:
    alice = accounts["alice"].uuid
    key = svc.create_key(ctx, alice, "k", public_line(private_key("rsa")))
    svc.delete_key(ctx, alice, key.fingerprint_sha256)
    assert svc.list_keys(ctx, alice) == []
    with pytest.raises(NotFound):
        svc.delete_key(ctx, alice, "k")


def test_unknown_account(ctx: Any) -> None:
    with pytest.raises(NotFound):
        svc.list_keys(ctx, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound):
        svc.create_key(ctx, "00000000-0000-0000-0000-000000000000", "k",
                       public_line(private_key("rsa")))
