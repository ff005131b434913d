"""Signing in and out of the console, and what a visitor who is not signed in gets."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from headnode.console.viewer import SESSION_KEY, TENANT
from headnode.services import passwords
from tests.unit.headnode.api.conftest import make_account
from tests.unit.headnode.console.conftest import OPERATOR_TOKEN, csrf_of, post_form


def test_a_visitor_is_sent_to_sign_in_with_the_page_to_come_back_to(client: FlaskClient) -> None:
    answer = client.get("/console/")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/console/signin?next=/console/")


def test_the_operator_credential_signs_in_and_sign_out_ends_it(operator: FlaskClient) -> None:
    page = operator.get("/console/").get_data(as_text=True)
    assert "<h1>Dashboard</h1>" in page and "(operator)" in page
    answer = operator.post("/console/signout", data={"csrf_token": csrf_of(page)})
    assert answer.status_code == 302
    assert operator.get("/console/").status_code == 302


def test_a_wrong_operator_credential_is_refused(client: FlaskClient) -> None:
    answer = post_form(client, "/console/signin/operator", {"token": "not-it"})
    assert answer.status_code == 401
    assert "not the operator credential" in answer.get_data(as_text=True)
    assert client.get("/console/").status_code == 302


def test_a_form_without_its_csrf_token_is_refused(client: FlaskClient) -> None:
    answer = client.post("/console/signin/operator", data={"token": "test-token"})
    assert answer.status_code == 400
    assert client.get("/console/").status_code == 302


def test_next_goes_only_to_a_console_page(client: FlaskClient) -> None:
    for target, expected in (("/console/", "/console/"),
                             ("https://elsewhere.example/", "/console/"),
                             ("//elsewhere.example/console/", "/console/")):
        answer = post_form(client, "/console/signin/operator",
                           {"token": "test-token", "next": target})
        assert answer.headers["Location"] == expected, target
        client.post("/console/signout", data={"csrf_token": csrf_of(
            client.get("/console/signin").get_data(as_text=True))})


def test_the_dashboard_shows_the_fleet(operator: FlaskClient, fleet: dict[str, Any]) -> None:
    page = operator.get("/console/").get_data(as_text=True)
    assert "<dt>Servers</dt><dd>1</dd>" in page
    assert 'role="img"' in page and "RAM: provisioned 0 MiB" in page


# --------------------------------------------------------------------------- tenants

PASSWORD = "correct horse battery"


@pytest.fixture
def tenants(sdc: Any) -> dict[str, Any]:
    """alice and bob with passwords; carol without one; dave, an operator's account."""
    made = {}
    for login, password, operator in (("alice", PASSWORD, False), ("bob", PASSWORD, False),
                                      ("carol", None, False), ("dave", PASSWORD, True)):
        made[login] = make_account(sdc, login=login, email=f"{login}@example.com",
                                   operator=operator)
        if password:
            passwords.set_password(sdc, login, password)
    return made


def tenant_signin(client: FlaskClient, login: str, password: str,
                  address: str = "192.0.2.1", **form: str) -> Any:
    """The tenant form, sent as from ``address`` (only a WSGI environ value: no traffic)."""
    return post_form(client, "/console/signin/tenant",
                     {"login": login, "password": password, **form},
                     environ_base={"REMOTE_ADDR": address})


def sign_out(client: FlaskClient) -> None:
    page = client.get("/console/signin").get_data(as_text=True)
    assert client.post("/console/signout", data={"csrf_token": csrf_of(page)}).status_code \
        == 302


def test_the_sign_in_page_has_both_forms(client: FlaskClient) -> None:
    page = client.get("/console/signin").get_data(as_text=True)
    assert 'action="/console/signin/tenant"' in page
    assert 'action="/console/signin/operator"' in page
    assert page.count("<h1>") == 1


def test_a_tenant_signs_in_with_login_and_password_and_out(
        client: FlaskClient, tenants: dict[str, Any]) -> None:
    answer = tenant_signin(client, "alice", PASSWORD, next="/console/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/"
    with client.session_transaction("/console/") as session:
        kept = dict(session[SESSION_KEY])
        assert kept.pop("sid")  # the server-side session's id (headnode.services.console_sessions)
        assert kept == {"kind": TENANT, "login": "alice", "account_uuid": tenants["alice"].uuid}
    page = client.get("/console/").get_data(as_text=True)
    assert "<span>alice</span>" in page and "(operator)" not in page
    sign_out(client)
    assert client.get("/console/").status_code == 302
    with client.session_transaction("/console/") as session:
        assert SESSION_KEY not in session


def test_an_operators_account_signs_in_as_a_tenant(
        client: FlaskClient, tenants: dict[str, Any]) -> None:
    assert tenant_signin(client, "dave", PASSWORD).status_code == 302
    with client.session_transaction("/console/") as session:
        assert session[SESSION_KEY]["kind"] == TENANT
    assert "(operator)" not in client.get("/console/").get_data(as_text=True)


@pytest.mark.parametrize(("login", "password"), [
    ("alice", "not the password"), ("carol", PASSWORD), ("nobody", PASSWORD),
    ("alice", ""), ("", PASSWORD)])
def test_every_refusal_looks_the_same(client: FlaskClient, tenants: dict[str, Any],
                                      login: str, password: str) -> None:
    answer = tenant_signin(client, login, password)
    assert answer.status_code == 401
    assert '<p class="error" role="alert">Wrong login or password.</p>' \
        in answer.get_data(as_text=True)
    assert client.get("/console/").status_code == 302


def test_the_tenant_form_needs_its_csrf_token(client: FlaskClient,
                                              tenants: dict[str, Any]) -> None:
    answer = client.post("/console/signin/tenant",
                         data={"login": "alice", "password": PASSWORD})
    assert answer.status_code == 400
    assert client.get("/console/").status_code == 302


def test_signing_in_starts_a_new_session(client: FlaskClient,
                                         tenants: dict[str, Any]) -> None:
    client.get("/console/signin")  # the form's CSRF token: a session before signing in
    before = client.get_cookie("sdc_console", path="/console")
    assert before is not None
    with client.session_transaction("/console/") as session:
        session["planted"] = "by someone else"  # what a fixation would carry over
    planted = client.get_cookie("sdc_console", path="/console")
    assert planted is not None

    assert tenant_signin(client, "alice", PASSWORD).status_code == 302
    after = client.get_cookie("sdc_console", path="/console")
    assert after is not None and after.value not in (before.value, planted.value)
    with client.session_transaction("/console/") as session:
        assert "planted" not in session and session[SESSION_KEY]["login"] == "alice"

    # the cookie from before signing in is still nobody's
    client.set_cookie("sdc_console", planted.value, path="/console")
    assert client.get("/console/").status_code == 302


def _fail(client: FlaskClient, login: str, address: str) -> int:
    return int(tenant_signin(client, login, "wrong password!", address).status_code)


def test_the_sixth_wrong_password_for_a_login_is_slowed_down(
        client: FlaskClient, tenants: dict[str, Any]) -> None:
    # from five addresses: the login's count, not the address's
    assert [_fail(client, "alice", f"192.0.2.{i}") for i in range(1, 6)] == [401] * 5
    sixth = tenant_signin(client, "alice", "wrong password!", "192.0.2.6")
    assert sixth.status_code == 429
    assert 0 < int(sixth.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-ins" in sixth.get_data(as_text=True)
    # the oldest failure's window ends in (at most) 15 minutes
    assert re.search(r"Try again in 1[45] minutes\.", sixth.get_data(as_text=True))
    right = tenant_signin(client, "alice", PASSWORD, "192.0.2.7")
    assert right.status_code == 429 and "Retry-After" in right.headers
    assert client.get("/console/").status_code == 302
    # another login, from another address, is not slowed down
    assert tenant_signin(client, "bob", PASSWORD, "192.0.2.8").status_code == 302


def test_the_sixth_failure_from_an_address_is_slowed_down(
        client: FlaskClient, tenants: dict[str, Any]) -> None:
    # five logins, one address: the address's count (operator form included)
    assert [_fail(client, login, "192.0.2.9") for login in ("alice", "bob", "carol", "x1")] \
        == [401] * 4
    assert post_form(client, "/console/signin/operator", {"token": "not-it"},
                     environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 401
    assert tenant_signin(client, "dave", PASSWORD, "192.0.2.9").status_code == 429
    assert post_form(client, "/console/signin/operator", {"token": OPERATOR_TOKEN},
                     environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 429
    # the same logins from elsewhere are fine: none of them failed five times
    assert tenant_signin(client, "dave", PASSWORD, "192.0.2.10").status_code == 302


def test_wrong_operator_credentials_are_slowed_down_by_address(client: FlaskClient) -> None:
    for _ in range(5):
        assert post_form(client, "/console/signin/operator", {"token": "not-it"}) \
            .status_code == 401
    refused = post_form(client, "/console/signin/operator", {"token": OPERATOR_TOKEN})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert client.get("/console/").status_code == 302


def test_successes_do_not_count(client: FlaskClient, tenants: dict[str, Any]) -> None:
    for _ in range(3):
        assert tenant_signin(client, "alice", PASSWORD).status_code == 302
        sign_out(client)
    assert [_fail(client, "alice", "192.0.2.1") for _ in range(5)] == [401] * 5
    assert _fail(client, "alice", "192.0.2.1") == 429


def test_the_counts_live_in_the_head_nodes_redis(client: FlaskClient, settings: Any,
                                                 tenants: dict[str, Any]) -> None:
    """Every API process counts in the same Redis: what one counted, another sees; when the
    counts are gone (as when the window passes), the login may try again."""
    for i in range(5):
        _fail(client, "alice", f"192.0.2.{i + 1}")
    shared = redis.Redis.from_url(settings.redis_url)
    keys = [k.decode() for k in shared.scan_iter("*sdc-console*")]
    assert any("alice" in k for k in keys) and any("192.0.2.1" in k for k in keys), keys
    assert _fail(client, "alice", "192.0.2.20") == 429
    shared.delete(*keys)
    assert tenant_signin(client, "alice", PASSWORD, "192.0.2.20").status_code == 302


def test_a_cookie_kept_from_before_sign_out_is_signed_out_too(operator: FlaskClient) -> None:
    page = operator.get("/console/").get_data(as_text=True)
    kept = operator.get_cookie("sdc_console", path="/console")
    assert kept is not None
    operator.post("/console/signout", data={"csrf_token": csrf_of(page)})
    operator.set_cookie("sdc_console", kept.value, path="/console")
    assert operator.get("/console/").status_code == 302


def test_a_new_password_ends_the_sessions_of_the_old_one(
        client: FlaskClient, sdc: Any, fleet: dict[str, Any]) -> None:
    from headnode.services import passwords
    from tests.unit.headnode.console.conftest import sign_in_as_tenant

    sign_in_as_tenant(client, fleet["owner"])
    assert client.get("/console/").status_code == 200
    passwords.set_password(sdc, "alice", "a new password, long enough")
    assert client.get("/console/").status_code == 302


def test_what_is_not_there_is_a_console_page(operator: FlaskClient) -> None:
    answer = operator.get("/console/machines/00000000-0000-4000-8000-000000000000")
    assert answer.status_code == 404
    assert "<h1>Not found</h1>" in answer.get_data(as_text=True)


def test_a_form_field_holding_nul_is_refused_before_any_view(client: FlaskClient) -> None:
    answer = post_form(client, "/console/signin/tenant", {"login": "ali\x00ce",
                                                          "password": "whatever it is"})
    assert answer.status_code == 400
    assert "'login'" in answer.get_json()["message"]
