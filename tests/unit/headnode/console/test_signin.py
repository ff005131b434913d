"""Signing in and out of the console, and what a visitor who is not signed in gets."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.unit.headnode.console.conftest import csrf_of, post_form


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
