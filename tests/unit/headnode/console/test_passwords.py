"""Accounts' console passwords (headnode.services.passwords) on the real PostgreSQL: argon2
hashes, the length rules, refusals that look alike, rehashing, and the operator API and
CloudAPI answers that never carry a hash."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask.testing import FlaskClient

from headnode.services import passwords
from headnode.services.errors import InvalidArgument
from headnode.store.models import Account
from tests.support.httpsig_client import Signer, signed_call
from tests.unit.headnode.api.conftest import count, make_account

GOOD = "correct horse battery"  # 21 characters


def stored_hash(ctx: Any, login: str) -> str | None:
    with ctx.read() as session:
        account = session.query(Account).filter_by(login=login).one()
        return account.password_hash


def test_a_password_is_kept_as_an_argon2id_hash_and_verified(sdc: Any) -> None:
    make_account(sdc, login="alice")
    passwords.set_password(sdc, "alice", GOOD)
    kept = stored_hash(sdc, "alice")
    assert kept is not None and kept.startswith("$argon2id$") and GOOD not in kept
    signed_in = passwords.authenticate(sdc, "alice", GOOD)
    assert signed_in is not None and signed_in.login == "alice"
    assert passwords.authenticate(sdc, "alice", GOOD + "!") is None
    assert passwords.authenticate(sdc, "alice", GOOD.upper()) is None
    # the same password hashed twice: two salts, two hashes
    assert passwords.hash_password(GOOD) != passwords.hash_password(GOOD)


def test_a_hash_by_older_parameters_is_made_again_at_the_next_sign_in(sdc: Any) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    make_account(sdc, login="alice", password_hash=weak)
    assert passwords.hasher.check_needs_rehash(weak)

    assert passwords.authenticate(sdc, "alice", "not the password") is None
    assert stored_hash(sdc, "alice") == weak  # a refusal changes nothing

    assert passwords.authenticate(sdc, "alice", GOOD) is not None
    renewed = stored_hash(sdc, "alice")
    assert renewed is not None and renewed != weak
    assert not passwords.hasher.check_needs_rehash(renewed)
    assert passwords.authenticate(sdc, "alice", GOOD) is not None


def test_the_decoy_hash_costs_what_a_real_one_does() -> None:
    # made by today's parameters: verifying it takes as long as verifying a real password
    assert not passwords.hasher.check_needs_rehash(passwords.DECOY_HASH)


def test_no_password_and_unknown_login_are_refused_like_a_wrong_password(sdc: Any) -> None:
    make_account(sdc, login="alice")  # no password: no console sign-in
    make_account(sdc, login="bob", email="bob@example.com")
    passwords.set_password(sdc, "bob", GOOD)
    assert passwords.authenticate(sdc, "alice", GOOD) is None
    assert passwords.authenticate(sdc, "alice", "") is None
    assert passwords.authenticate(sdc, "nobody", GOOD) is None
    assert passwords.authenticate(sdc, "", GOOD) is None
    assert passwords.authenticate(sdc, "bob", "x" * 1025) is None


def _median_seconds(attempt: Callable[[], object], times: int = 3) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        attempt()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent)


def test_an_unknown_login_costs_about_what_a_wrong_password_does(sdc: Any) -> None:
    make_account(sdc, login="alice")
    make_account(sdc, login="bob", email="bob@example.com")
    passwords.set_password(sdc, "bob", GOOD)
    wrong = _median_seconds(lambda: passwords.authenticate(sdc, "bob", "wrong password!"))
    unknown = _median_seconds(lambda: passwords.authenticate(sdc, "nobody", GOOD))
    no_password = _median_seconds(lambda: passwords.authenticate(sdc, "alice", GOOD))
    # a skipped argon2 verification would make these ~50 times faster; the margin is for a
    # busy machine
    assert unknown > wrong / 3 and no_password > wrong / 3, (wrong, unknown, no_password)


@pytest.mark.parametrize(("length", "accepted"), [(11, False), (12, True), (1024, True),
                                                  (1025, False)])
def test_length_edges(sdc: Any, length: int, accepted: bool) -> None:
    make_account(sdc, login="alice")
    password = "p" * length
    if accepted:
        passwords.set_password(sdc, "alice", password)
        assert passwords.authenticate(sdc, "alice", password) is not None
        return
    with pytest.raises(InvalidArgument) as refused:
        passwords.set_password(sdc, "alice", password)
    assert refused.value.field == "password"
    assert stored_hash(sdc, "alice") is None


# --------------------------------------------------------------------------- operator API


def test_create_with_a_password_answers_no_hash(api: Callable[..., Any], sdc: Any) -> None:
    made = api("post", "/ops/accounts", json={"login": "alice", "email": "a@example.com",
                                              "password": GOOD})
    assert made.status_code == 201, made.get_json()
    kept = stored_hash(sdc, "alice")
    assert kept is not None
    for answer in (made, api("get", "/ops/accounts"), api("get", "/ops/accounts/alice")):
        text = answer.get_data(as_text=True)
        assert "password" not in text and kept not in text and GOOD not in text
    assert passwords.authenticate(sdc, "alice", GOOD) is not None


def test_create_with_a_short_password_is_refused_and_makes_nothing(
        api: Callable[..., Any], sdc: Any) -> None:
    refused = api("post", "/ops/accounts", json={"login": "alice", "email": "a@example.com",
                                                 "password": "p" * 11})
    assert refused.status_code == 422
    assert list(refused.get_json()["errors"]) == ["password"]
    assert "between 12 and 1024" in refused.get_json()["errors"]["password"][0]
    assert count(sdc, Account) == 0


def test_put_and_delete_the_password(api: Callable[..., Any], sdc: Any) -> None:
    make_account(sdc, login="alice")
    put = api("put", "/ops/accounts/alice/password", json={"password": GOOD})
    assert put.status_code == 204 and put.get_data() == b""
    assert passwords.authenticate(sdc, "alice", GOOD) is not None

    too_long = api("put", "/ops/accounts/alice/password", json={"password": "p" * 1025})
    assert too_long.status_code == 422 and "password" in too_long.get_json()["errors"]
    assert passwords.authenticate(sdc, "alice", GOOD) is not None  # unchanged

    for body in ({}, {"password": GOOD, "hash": "x"}, {"password": None}):
        bad = api("put", "/ops/accounts/alice/password", json=body)
        assert bad.status_code == 422, body
    assert api("put", "/ops/accounts/nobody/password",
               json={"password": GOOD}).status_code == 404

    assert api("delete", "/ops/accounts/alice/password").status_code == 204
    assert stored_hash(sdc, "alice") is None
    assert passwords.authenticate(sdc, "alice", GOOD) is None


def test_the_password_routes_need_the_operator_token(client: FlaskClient, sdc: Any) -> None:
    make_account(sdc, login="alice")
    answer = client.put("/ops/accounts/alice/password", json={"password": GOOD})
    assert answer.status_code == 401
    assert stored_hash(sdc, "alice") is None


def test_cloudapi_get_account_answers_no_hash(client: FlaskClient, sdc: Any) -> None:
    from headnode.services import keys

    account = make_account(sdc, login="alice")
    signer = Signer("alice")
    keys.create_key(sdc, account.uuid, "main", signer.public_line)
    passwords.set_password(sdc, "alice", GOOD)
    kept = stored_hash(sdc, "alice")
    assert kept is not None
    answer = signed_call(client, signer, "get", "/my")
    assert answer.status_code == 200 and answer.get_json()["login"] == "alice"
    text = answer.get_data(as_text=True)
    assert "password" not in text and kept not in text
