"""The web console in a real browser (Debian's Chromium driven by Playwright) against a live
head node with sim nodes: what an operator and a tenant do, signed in and out.

Every page shown is checked by tests/support/browser.py: no JavaScript console error, axe-core
without serious or critical violations, and a screenshot in test-artifacts/console/.

The tests share one cloud and run in the order written: the last one exhausts the sign-in
rate limit of the browser's address (127.0.0.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from playwright.sync_api import expect

from schemas.agent import agent_queue, agent_task
from tests.integration.conftest import TOKEN
from tests.support import browser
from tests.support.browser import BrowserSession
from tests.support.httpsig_client import Signer
from tests.support.wait import wait_until

# the browser's fixtures, for this module's tests
chromium, axe_source = browser.chromium, browser.axe_source
browser_session = browser.browser_session

#: one set-up sim node to place on (the fewer processes, the faster on a 2-core machine); a
#: second one registers later and waits for an operator to set it up
AGENT_COUNT = 1
NEW_NODE = AGENT_COUNT
PASSWORD = {"alice": "alice-console-password", "bob": "bob-console-password"}
#: how long a sim node takes to create a machine while a test watches the job run
SLOW_CREATE_MS = 6000
#: the answer to a pasted key that is not one (the form again, the field named)
BAD_KEY = 422
#: waits in the browser, in ms (a busy 2-core machine)
WAIT_MS = 60_000

Open = Callable[..., BrowserSession]
SignIn = Callable[[str], BrowserSession]


@pytest.fixture(scope="module")
def console_url(cloud: Any) -> str:
    return f"{cloud.api.base_url}/console"


@pytest.fixture(scope="module")
def world(cloud: Any) -> dict[str, Any]:
    """Two tenants with console passwords and SSH keys, bob with a running machine, and a
    new node that has registered but is not set up."""
    seeded = cloud.seed()
    bob = cloud.api.post("/ops/accounts", {"login": "bob", "email": "bob@example.com"})
    for login, password in PASSWORD.items():
        cloud.api.put(f"/ops/accounts/{login}/password", {"password": password})
        cloud.api.post(f"/ops/accounts/{login}/keys",
                       {"key": Signer(login, kind="ed25519").public_line, "name": "laptop"})
    bobs = cloud.api.post("/ops/machines", {"owner": "bob", "package": "small",
                                            "image": seeded["image"]["uuid"],
                                            "alias": "bobs-box"})
    cloud.wait_job(bobs["job_uuid"])
    new_node = cloud.start_agent(NEW_NODE)
    wait_until(lambda: any(s["uuid"] == new_node for s in cloud.api.get("/ops/servers")),
               timeout=60, message="the new node to register")
    return {**seeded, "bob": bob, "bobs": cloud.api.get(f"/ops/machines/{bobs['uuid']}"),
            "new_node": new_node}


@pytest.fixture
def slow_creates(cloud: Any) -> Iterator[None]:
    """Every node takes SLOW_CREATE_MS to create a machine, until the test ends: long enough
    for a browser to open the job while it runs."""
    broker = Celery(broker=cloud.env["SDC_REDIS_URL"], backend=cloud.env["SDC_REDIS_URL"])
    nodes = list(cloud.agents.values())

    def faults(server_uuid: str, params: dict[str, Any]) -> None:
        broker.send_task(agent_task("sim_faults"), args=[server_uuid, params, None],
                         queue=agent_queue(server_uuid)).get(timeout=30)

    for node in nodes:
        faults(node, {"latency_ms": {"machine_create": SLOW_CREATE_MS}})
    yield
    for node in nodes:
        faults(node, {})


def clear_sign_in_limits(cloud: Any) -> None:
    """Forget the failed sign-ins counted so far, as if their window had passed."""
    for key in cloud.redis.scan_iter(match="*sdc-console*"):
        cloud.redis.delete(key)


def heading(session: BrowserSession) -> Any:
    return session.page.get_by_role("heading", level=1)


def sign_in_operator(session: BrowserSession) -> None:
    session.visit("/signin")
    operators = session.page.get_by_role("region", name="Operators")
    operators.get_by_label("Operator credential").fill(TOKEN)
    session.submit(operators.get_by_role("button", name="Sign in as operator"),
                   label="dashboard")
    expect(heading(session)).to_have_text("Dashboard")


def try_tenant_sign_in(session: BrowserSession, login: str, password: str,
                       status: int = 200, label: str = "tenant-signed-in",
                       accessible: bool = True) -> None:
    if not session.page.url.startswith(session.url("/signin")):
        session.visit("/signin")
    tenants = session.page.get_by_role("region", name="Tenants")
    tenants.get_by_label("Login").fill(login)
    tenants.get_by_label("Password").fill(password)
    session.submit(tenants.get_by_role("button", name="Sign in"), status=status, check=False)
    session.check(label, accessible=accessible)


@pytest.fixture(scope="module")
def saved_sign_ins() -> dict[str, Any]:
    """Who -> the cookies of a session signed in through the form: later tests start from
    them rather than fill in the form (and check its pages) again."""
    return {}


@pytest.fixture
def signed_in(browser_session: Open, console_url: str,
              saved_sign_ins: dict[str, Any]) -> SignIn:
    """``signed_in("operator" | login)``: a new session, signed in."""
    def open_as(who: str) -> BrowserSession:
        if who in saved_sign_ins:
            return browser_session(console_url, storage_state=saved_sign_ins[who])
        session = browser_session(console_url)
        if who == "operator":
            sign_in_operator(session)
        else:
            try_tenant_sign_in(session, who, PASSWORD[who])
            expect(heading(session)).to_have_text("Dashboard")
        saved_sign_ins[who] = session.page.context.storage_state()
        return session
    return open_as


def machine_state(session: BrowserSession) -> Any:
    return session.page.locator("dl.machine-facts div", has_text="State").locator("dd")


# ---------------------------------------------------------------------------- operators


def test_operator_wrong_credential_is_refused_then_right_one_signs_in(
        browser_session: Open, console_url: str, saved_sign_ins: dict[str, Any]) -> None:
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
    saved_sign_ins["operator"] = session.page.context.storage_state()


def test_dashboard_shows_the_fleet(signed_in: SignIn, cloud: Any,
                                   world: dict[str, Any]) -> None:
    session = signed_in("operator")
    session.visit("/", label="dashboard")
    totals = session.page.locator("dl.totals")
    servers = len(cloud.api.get("/ops/servers"))
    expect(totals.locator("div", has_text="Servers").first.locator("dd")).to_have_text(
        str(servers))
    expect(session.page.get_by_role("figure").first).to_be_visible()
    for resource in ("RAM", "Disk", "CPU"):
        expect(session.page.get_by_role("table", name=re.compile(resource))).to_be_visible()


def test_operator_sets_up_the_new_server(signed_in: SignIn,
                                         cloud: Any, world: dict[str, Any]) -> None:
    session = signed_in("operator")
    session.visit("/", label="dashboard")
    session.page.get_by_role("navigation", name="Console").get_by_role(
        "link", name="Servers").click()
    session.check("servers")
    expect(heading(session)).to_have_text("Servers")
    hostname = f"cn{NEW_NODE}"
    row = session.page.get_by_role("row").filter(
        has=session.page.get_by_role("rowheader", name=hostname, exact=True))
    expect(row).to_contain_text("not set up")
    session.submit(row.get_by_role("button", name=f"Set up {hostname}"), label="set-up")
    expect(session.page.get_by_role("status").first).to_contain_text(f"{hostname}: set up")
    expect(row).not_to_contain_text("not set up")
    assert cloud.server(world["new_node"])["setup"] is True
    with session.page.expect_navigation():
        row.get_by_role("link", name=hostname).click()
    session.check("server-page")
    expect(heading(session)).to_contain_text(hostname)


def test_operator_creates_a_machine_and_watches_its_job(
        signed_in: SignIn, cloud: Any, world: dict[str, Any],
        slow_creates: None) -> None:
    session = signed_in("operator")
    page = session.page
    session.visit("/machines", label="machines")
    with page.expect_navigation():
        page.get_by_role("link", name="Create a machine").click()
    session.check("machine-new")
    page.get_by_label("Owner").fill("alice")
    page.get_by_label("Name").fill("from-the-console")
    page.get_by_label("Image").select_option(world["image"]["uuid"])
    page.get_by_label("Package").select_option("small")
    page.get_by_label("Tags").fill("role=web")
    # the machine's page is checked once it runs, below: the job is watched first
    session.submit(page.get_by_role("button", name="Create"), check=False)
    expect(heading(session)).to_have_text("Machine from-the-console")
    # the node is slowed down: the job is still running, and the page links to it
    job_link = machine_state(session).get_by_role("link")
    expect(job_link).to_be_visible()
    with page.expect_navigation():
        job_link.click()
    # served while the job ran: the page came with the script that keeps it up to date
    expect(page.locator("script[src$='job.js']")).to_have_count(1)
    page.evaluate("() => { window.notReloaded = true; }")
    session.check("job-running")
    # job.js brings the timeline up to date without reloading the page
    expect(page.get_by_role("status")).to_contain_text("finished: succeeded", timeout=WAIT_MS)
    assert page.evaluate("() => window.notReloaded === true")
    expect(page.get_by_role("rowheader", name="create_machine")).to_be_visible()
    session.check("job-finished")
    session.page.go_back(wait_until="load")
    page.reload(wait_until="load")
    session.check("machine-running")
    expect(machine_state(session)).to_have_text("running")
    session.visit("/jobs", label="jobs")
    expect(heading(session)).to_have_text("Jobs")


def test_what_if_changes_the_chart(signed_in: SignIn,
                                   world: dict[str, Any]) -> None:
    session = signed_in("operator")
    page = session.page
    session.visit("/capacity", label="capacity")
    session.visit("/capacity/whatif", label="whatif-form")
    form = page.locator("form.whatif")

    def run(servers: int, label: str) -> tuple[str, str]:
        form.get_by_label("How many servers").fill(str(servers))
        form.get_by_label("RAM of each").fill("65536")
        form.get_by_label("CPUs of each").fill("16")
        form.get_by_label("Disk of each").fill("1048576")
        form.get_by_label("Package, row 1").select_option(label="large")
        form.get_by_label("Machines, row 1").fill("2")
        session.submit(form.get_by_role("button", name="Run the what-if"), label=label)
        ram = page.get_by_role("figure").filter(has_text="Free RAM")
        expect(ram).to_be_visible()
        return str(ram.locator("svg").inner_html()), ram.get_by_role("table").inner_text()

    svg_before, numbers_before = run(0, "whatif-place")
    svg_after, numbers_after = run(2, "whatif-add-servers")
    assert svg_after != svg_before
    assert numbers_after != numbers_before
    expect(page.get_by_text(re.compile(r"after: \d+ \(2 added\)"))).to_be_visible()


# ---------------------------------------------------------------------------- tenants


def test_tenant_signs_in_and_creates_a_machine(signed_in: SignIn, cloud: Any,
                                               world: dict[str, Any]) -> None:
    session = signed_in("alice")  # the first time in the module: through the form
    page = session.page
    session.visit("/machines", label="machines")
    expect(page.get_by_role("navigation", name="Console").get_by_role(
        "link", name="Servers")).to_have_count(0)
    expect(page.get_by_role("link", name="bobs-box")).to_have_count(0)
    with page.expect_navigation():
        page.get_by_role("link", name="Create a machine").click()
    session.check("machine-new")
    expect(page.get_by_label("Owner")).to_have_count(0)  # a tenant creates for itself
    page.get_by_label("Name").fill("alices-box")
    page.get_by_label("Image").select_option(world["image"]["uuid"])
    page.get_by_label("Package").select_option("small")
    session.submit(page.get_by_role("button", name="Create"), label="machine-created")
    expect(heading(session)).to_have_text("Machine alices-box")
    created = cloud.api.get("/ops/machines", params={"alias": "alices-box"})[0]
    assert created["owner_uuid"] == world["account"]["uuid"]
    wait_until(lambda: state_of(cloud, created["uuid"]) == "running",
               timeout=60, message="alice's machine to run")
    page.reload(wait_until="load")
    session.check("machine-running")
    expect(machine_state(session)).to_contain_text("running")
    # and stops it from its page
    session.submit(page.get_by_role("button", name="Stop", exact=True), label="stop-started")
    expect(page.get_by_role("status").first).to_contain_text("Stop started: job")
    wait_until(lambda: state_of(cloud, created["uuid"]) == "stopped",
               timeout=60, message="alice's machine to stop")
    page.reload(wait_until="load")
    session.check("machine-stopped")
    expect(machine_state(session)).to_contain_text("stopped")


def state_of(cloud: Any, machine_uuid: str) -> str:
    return str(cloud.api.get(f"/ops/machines/{machine_uuid}")["state"])


def test_tenant_cannot_open_anothers_machine_by_url(signed_in: SignIn, cloud: Any,
                                                    world: dict[str, Any]) -> None:
    """Another tenant's machine and its job, and the operators' pages, are a 404 for alice,
    as if they did not exist."""
    session = signed_in("alice")
    bobs = world["bobs"]
    bobs_job = cloud.api.get("/ops/jobs", params={"machine_uuid": bobs["uuid"]})[0]["uuid"]
    for path in (f"/machines/{bobs['uuid']}", f"/jobs/{bobs_job}", "/servers",
                 f"/servers/{bobs['server_uuid']}", "/capacity"):
        answer = session.visit(path, status=404, label=path)
        expect(heading(session)).to_have_text("Not found")  # a console page, not JSON
        body = answer.text()
        for secret in (bobs["uuid"], "bobs-box", bobs_job, "cn0", "cn1"):
            assert secret not in body, f"{path} shows {secret}"
    session.visit("/machines", label="machines")
    expect(session.page.get_by_role("link", name="bobs-box")).to_have_count(0)


@pytest.mark.parametrize("who", ["operator", "alice"])
def test_every_page_in_the_navigation(signed_in: SignIn, world: dict[str, Any],
                                      who: str) -> None:
    """Each page the navigation offers, and the forms' pages reached from them, open
    without a console error and pass axe (the pages other tests do not visit)."""
    session = signed_in(who)
    session.visit("/", label="dashboard")
    paths = [href.removeprefix("/console") for href in nav_links(session).values()]
    if who == "operator":
        paths += ["/capacity/explain", "/capacity/forecast",
                  f"/servers/{world['bobs']['server_uuid']}"]
    for path in paths:
        if path != "/":  # the dashboard, seen above
            session.visit(path, label=path)
            expect(heading(session)).to_have_count(1)


#: what the navigation offers each (operators also see every tenant's areas)
TENANT_AREAS = {"Dashboard", "Machines", "Jobs", "Images", "Packages", "Networks", "SSH keys"}
OPERATOR_AREAS = TENANT_AREAS | {"Servers", "Accounts", "Capacity"}


@pytest.mark.parametrize(("who", "areas"), [("operator", OPERATOR_AREAS),
                                             ("alice", TENANT_AREAS)])
def test_the_navigation_offers_each_area(signed_in: SignIn, world: dict[str, Any],
                                         who: str, areas: set[str]) -> None:
    session = signed_in(who)
    session.visit("/", label="dashboard")
    assert set(nav_links(session)) == areas


def nav_links(session: BrowserSession) -> dict[str, str]:
    """The navigation's links: label -> href."""
    links = session.page.get_by_role("navigation", name="Console").get_by_role("link")
    return {link.inner_text().strip(): str(link.get_attribute("href")) for link in links.all()}


def test_tenant_adds_and_deletes_an_ssh_key(signed_in: SignIn, cloud: Any,
                                            world: dict[str, Any]) -> None:
    session = signed_in("alice")
    page = session.page
    session.visit("/keys", label="keys")
    adding = page.get_by_role("region", name="Add a key")
    adding.get_by_label("Public key").fill("ssh-ed25519 not-a-key alice@desk")
    adding.get_by_label("Name").fill("desk")
    session.submit(adding.get_by_role("button", name="Add key"), status=BAD_KEY,
                   label="key-refused")
    expect(page.locator("#key-note")).to_contain_text("Error")
    assert "desk" not in names_of_keys(cloud, "alice")
    adding.get_by_label("Public key").fill(Signer("alice", kind="ed25519").public_line)
    session.submit(adding.get_by_role("button", name="Add key"), label="key-added")
    expect(page.get_by_role("status").first).to_contain_text("Key desk added.")
    expect(page.get_by_role("rowheader", name="desk", exact=True)).to_be_visible()
    assert "desk" in names_of_keys(cloud, "alice")
    session.submit(page.get_by_role("button", name="Delete key desk"), label="key-deleted")
    expect(page.get_by_role("rowheader", name="desk", exact=True)).to_have_count(0)
    assert "desk" not in names_of_keys(cloud, "alice")


def names_of_keys(cloud: Any, login: str) -> set[str]:
    return {key["name"] for key in cloud.api.get(f"/ops/accounts/{login}/keys")}


def test_tenant_wrong_password_is_refused_and_sign_out_ends_the_session(
        browser_session: Open, console_url: str, world: dict[str, Any]) -> None:
    session = browser_session(console_url)
    try_tenant_sign_in(session, "alice", "not-alices-password", status=401,
                       label="wrong-password")
    expect(session.page.get_by_role("alert")).to_have_text("Wrong login or password.")
    session.visit("/", label="still-signed-out")
    assert session.page.url.startswith(f"{console_url}/signin")
    try_tenant_sign_in(session, "bob", PASSWORD["bob"])
    expect(session.page.get_by_role("button", name="Sign out")).to_be_visible()
    session.submit(session.page.get_by_role("button", name="Sign out"), label="signed-out")
    expect(heading(session)).to_have_text("Sign in")
    session.visit("/machines", label="after-sign-out")
    assert session.page.url.startswith(f"{console_url}/signin")


def test_a_cookie_copied_before_sign_out_is_no_good_after(
        browser_session: Open, console_url: str, world: dict[str, Any]) -> None:
    session = browser_session(console_url)
    try_tenant_sign_in(session, "bob", PASSWORD["bob"])
    copied = session.page.context.storage_state()
    session.submit(session.page.get_by_role("button", name="Sign out"), label="signed-out")
    replayed = browser_session(console_url, storage_state=copied)
    replayed.visit("/machines", label="replayed-cookie")
    assert replayed.page.url.startswith(f"{console_url}/signin"), "still signed in as bob"
    expect(heading(replayed)).to_have_text("Sign in")


def test_five_wrong_passwords_are_slowed_down(browser_session: Open, console_url: str,
                                              cloud: Any, world: dict[str, Any]) -> None:
    # last in the module: it leaves the browser's address locked out of signing in
    clear_sign_in_limits(cloud)
    session = browser_session(console_url)
    for attempt in range(1, 6):
        # the same refusal five times: axe looks at the first and the last
        try_tenant_sign_in(session, "alice", f"wrong-{attempt}", status=401,
                           label=f"wrong-{attempt}", accessible=attempt in (1, 5))
    try_tenant_sign_in(session, "alice", PASSWORD["alice"], status=429, label="too-many")
    expect(session.page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    session.visit("/", label="not-signed-in")
    assert session.page.url.startswith(f"{console_url}/signin")
