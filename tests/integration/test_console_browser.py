"""The web console in a real browser (Debian's Chromium driven by Playwright) against a live
head node with sim nodes: what an operator and a tenant do, signed in and out.

Every page shown is checked by tests/support/browser.py: no JavaScript console error, axe-core
without serious or critical violations, and a screenshot in test-artifacts/console/.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.integration.conftest import TOKEN
from tests.support import browser
from tests.support.browser import BrowserSession

# the browser's fixtures, for this module's tests
chromium, axe_source = browser.chromium, browser.axe_source
browser_session = browser.browser_session

#: two set-up sim nodes are enough to place on (fewer processes on a 2-core machine)
AGENT_COUNT = 2

Open = Callable[[str], BrowserSession]


@pytest.fixture(scope="module")
def console_url(cloud: Any) -> str:
    return f"{cloud.api.base_url}/console"


def sign_in_operator(session: BrowserSession) -> None:
    session.visit("/signin")
    operators = session.page.get_by_role("region", name="Operators")
    operators.get_by_label("Operator credential").fill(TOKEN)
    session.submit(operators.get_by_role("button", name="Sign in as operator"),
                   label="dashboard")
    expect(session.page.get_by_role("heading", level=1)).to_have_text("Dashboard")


def test_operator_wrong_credential_is_refused_then_right_one_signs_in(
        browser_session: Open, console_url: str) -> None:
    session = browser_session(console_url)
    session.visit("/", label="signed-out")  # redirected to the sign-in page
    assert session.page.url.startswith(f"{console_url}/signin")
    operators = session.page.get_by_role("region", name="Operators")
    operators.get_by_label("Operator credential").fill("not-the-token")
    session.submit(operators.get_by_role("button", name="Sign in as operator"), status=401,
                   label="operator-refused")
    expect(session.page.get_by_role("alert")).to_contain_text("not the operator credential")
    session.visit("/", label="still-signed-out")
    assert session.page.url.startswith(f"{console_url}/signin")
    sign_in_operator(session)


def test_dashboard_shows_the_fleet(browser_session: Open, console_url: str,
                                   cloud: Any) -> None:
    session = browser_session(console_url)
    sign_in_operator(session)
    totals = session.page.locator("dl.totals")
    servers = len(cloud.api.get("/ops/servers"))
    expect(totals.locator("div", has_text="Servers").first.locator("dd")).to_have_text(
        str(servers))
    expect(session.page.get_by_role("figure").first).to_be_visible()
    for resource in ("RAM", "Disk", "CPU"):
        expect(session.page.get_by_role("table", name=re.compile(resource))).to_be_visible()


def test_sign_out_ends_the_session(browser_session: Open, console_url: str) -> None:
    session = browser_session(console_url)
    sign_in_operator(session)
    session.submit(session.page.get_by_role("button", name="Sign out"), label="signed-out")
    expect(session.page.get_by_role("heading", level=1)).to_have_text("Sign in")
    session.visit("/", label="after-sign-out")
    assert session.page.url.startswith(f"{console_url}/signin")
