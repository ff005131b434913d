"""The console on a real PostgreSQL, driven through Flask's test client (the browser tests
are tests/integration/test_console_*.py). Fixtures of tests/unit/headnode/api/conftest.py
(``sdc``, ``fleet``, ``make_*``) apply here too."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.unit.headnode.api.conftest import api, fleet, sdc  # noqa: F401 - fixtures

OPERATOR_TOKEN = "test-token"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token a console form carries."""
    found = CSRF_FIELD.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def post_form(client: FlaskClient, path: str, form: dict[str, str], **kwargs: Any) -> Any:
    """Submit a console form as a browser would: the token from the page it is on."""
    page = client.get("/console/signin").get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_of(page), **form}, **kwargs)


@pytest.fixture
def operator(client: FlaskClient) -> FlaskClient:
    """The test client signed in as an operator."""
    answer = post_form(client, "/console/signin/operator", {"token": OPERATOR_TOKEN})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def sign_in_as_tenant(client: FlaskClient, account: Any) -> FlaskClient:
    """The test client signed in as ``account`` (an Account row) without its password: for
    the pages' tests (test_signin.py tests the password sign-in itself)."""
    from headnode.console.viewer import SESSION_KEY, TENANT, Viewer, service_context
    from headnode.services import console_sessions

    viewer = Viewer(TENANT, account.login, account.uuid)
    assert client.application is not None
    with client.application.app_context():
        sid = console_sessions.start(service_context(), viewer.session_login)
    with client.session_transaction() as session:
        session[SESSION_KEY] = {**viewer.to_session(), "sid": sid}
    return client


def stored(ctx: Any, model: Any, uuid: str) -> Any:
    """The row as the database has it now (after a console action changed it)."""
    with ctx.read() as session:
        row = session.get(model, uuid)
        assert row is not None, f"no {model.__name__} {uuid}"
        return row
