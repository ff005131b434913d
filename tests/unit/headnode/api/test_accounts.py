from __future__ import annotations

from typing import Any

import pytest

from headnode.services import accounts
from headnode.services.errors import InvalidArgument
from headnode.store.models import Account
from tests.unit.headnode.api.conftest import count, make_account


def test_create_list_get(api: Any) -> None:
    answer = api("post", "/ops/accounts", json={"login": "bob", "email": "bob@example.com"})
    assert answer.status_code == 201
    created = answer.get_json()
    assert (created["login"], created["operator"]) == ("bob", False)
    api("post", "/ops/accounts", json={"login": "admin.ops", "email": "a@example.com",
                                       "operator": True})
    listed = api("get", "/ops/accounts").get_json()
    assert [(a["login"], a["operator"]) for a in listed] == [("admin.ops", True), ("bob", False)]
    assert api("get", f"/ops/accounts/{created['uuid']}").get_json() == created
    assert api("get", "/ops/accounts/bob").get_json() == created


@pytest.mark.parametrize("login", ["ops", "console", "admin-api", "docs", "openapi", "OPS"])
def test_reserved_logins_are_refused(api: Any, sdc: Any, login: str) -> None:
    answer = api("post", "/ops/accounts", json={"login": login, "email": "x@example.com"})
    assert answer.status_code == 422
    body = answer.get_json()
    assert set(body["errors"]) == {"login"}
    assert "reserved" in body["errors"]["login"][0]
    assert count(sdc, Account) == 0


@pytest.mark.parametrize("login", ["--ping", "my"])
def test_short_reserved_logins_are_refused_by_the_pattern(api: Any, login: str) -> None:
    answer = api("post", "/ops/accounts", json={"login": login, "email": "x@example.com"})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"login"}


def test_service_refuses_reserved_login_too(ctx: Any) -> None:
    with pytest.raises(InvalidArgument) as err:
        accounts.create_account(ctx, "console", "x@example.com")
    assert err.value.field == "login"


def test_duplicate_login_is_a_conflict(api: Any, sdc: Any) -> None:
    make_account(sdc, login="alice")
    answer = api("post", "/ops/accounts", json={"login": "alice", "email": "b@example.com"})
    assert answer.status_code == 409
    assert answer.get_json()["code"] == "DuplicateLogin"
    assert count(sdc, Account) == 1


@pytest.mark.parametrize("body,fields", [
    ({}, {"login", "email"}),
    ({"login": "ab", "email": "x@example.com"}, {"login"}),
    ({"login": "9lives", "email": "x@example.com"}, {"login"}),
    ({"login": "carol", "email": "not-an-email"}, {"email"}),
    ({"login": "carol", "email": "c@example.com", "operator": "yes please"}, {"operator"}),
    ({"login": "carol", "email": "c@example.com", "password": "x"}, {"password"}),
])
def test_bad_accounts_name_their_fields(api: Any, sdc: Any, body: dict[str, Any],
                                        fields: set[str]) -> None:
    answer = api("post", "/ops/accounts", json=body)
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == fields
    assert count(sdc, Account) == 0


def test_unknown_account_is_404(api: Any) -> None:
    assert api("get", "/ops/accounts/nobody").status_code == 404
