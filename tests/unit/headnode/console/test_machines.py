"""The machines' pages: lists (an operator's filters, a tenant's own only), a machine's page,
its actions (each starts its job; another tenant's is a 404 that changes nothing), and the
create form (success, a placement refusal with its reasons, bad input naming the field)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from headnode.store.models import Job, Key, Machine, MachineSnapshot
from tests.unit.headnode.api.conftest import (
    add,
    count,
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)
from tests.unit.headnode.console.conftest import post_form, sign_in_as_tenant, stored

ROW = re.compile(r'<th scope="row"><a href="/console/machines/([0-9a-f-]{36})"')


def listed(page: str) -> list[str]:
    """The machines (uuids) a list page shows, in order."""
    return ROW.findall(page)


def jobs_of(sdc: Any, machine_uuid: str) -> list[str]:
    with sdc.read() as session:
        return [j.name for j in session.query(Job).filter(Job.machine_uuid == machine_uuid)]


@pytest.fixture
def bob(sdc: Any) -> Any:
    return make_account(sdc, login="bob", email="bob@example.com")


# ---------------------------------------------------------------------------- lists


def test_an_empty_list_says_so(operator: FlaskClient, fleet: dict[str, Any]) -> None:
    answer = operator.get("/console/machines")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "<h1>Machines</h1>" in page and "No machines match." in page
    assert re.search(r'<a href="/console/machines"\s+aria-current="page">Machines</a>', page)
    assert listed(page) == []


def test_an_operator_filters_by_owner_state_server_and_image(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any], bob: Any) -> None:
    other_server = make_server(sdc, hostname="cn2")
    other_image = make_image(sdc, name="ubuntu", version="24.04")
    a = make_machine(sdc, fleet, alias="a")
    b = make_machine(sdc, fleet, alias="b", owner_uuid=bob.uuid, state="stopped")
    c = make_machine(sdc, fleet, alias="c", server_uuid=other_server.uuid,
                     image_uuid=other_image.uuid)
    make_machine(sdc, fleet, alias="gone", state="destroyed")

    assert listed(operator.get("/console/machines").get_data(as_text=True)) == [
        a.uuid, b.uuid, c.uuid]
    # a destroyed machine is listed when asked for, without a link to a page it no longer has
    page = operator.get("/console/machines?state=destroyed").get_data(as_text=True)
    assert listed(page) == [] and '<th scope="row">gone</th>' in page
    for query, expected in (("owner=bob", [b.uuid]), (f"owner={bob.uuid}", [b.uuid]),
                            ("owner=alice", [a.uuid, c.uuid]), ("state=stopped", [b.uuid]),
                            (f"server={other_server.uuid}", [c.uuid]),
                            (f"image={other_image.uuid}", [c.uuid]),
                            ("owner=alice&state=running&image=" + fleet["image"].uuid,
                             [a.uuid])):
        answer = operator.get(f"/console/machines?{query}")
        assert answer.status_code == 200, query
        assert listed(answer.get_data(as_text=True)) == expected, query


@pytest.mark.parametrize("query,field", [("owner=nobody", "owner"), ("state=asleep", "state"),
                                         ("page=0", "page"), ("page=x", "page")])
def test_a_filter_that_cannot_be_used_is_a_4xx_naming_it(
        operator: FlaskClient, fleet: dict[str, Any], query: str, field: str) -> None:
    make_machine(operator.application.extensions["sdc"], fleet)
    answer = operator.get(f"/console/machines?{query}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert f"Refused: {field}:" in page
    assert listed(page) == []


def test_pages_of_fifty_keep_the_filters(operator: FlaskClient, sdc: Any,
                                         fleet: dict[str, Any]) -> None:
    made = [make_machine(sdc, fleet, alias=f"m{i:02}").uuid for i in range(51)]
    first = operator.get("/console/machines?owner=alice").get_data(as_text=True)
    assert listed(first) == made[:50]
    assert "Machines 1–50 of 51" in first and "Previous page" not in first
    assert 'href="/console/machines?owner=alice&amp;page=2"' in first
    second = operator.get("/console/machines?owner=alice&page=2").get_data(as_text=True)
    assert listed(second) == made[50:]
    assert "Machines 51–51 of 51" in second and "Next page" not in second
    beyond = operator.get("/console/machines?page=3")
    assert beyond.status_code == 200 and listed(beyond.get_data(as_text=True)) == []


def test_a_tenant_sees_only_its_own_machines(client: FlaskClient, sdc: Any,
                                             fleet: dict[str, Any], bob: Any) -> None:
    mine = make_machine(sdc, fleet, alias="mine")
    make_machine(sdc, fleet, alias="theirs", owner_uuid=bob.uuid)
    sign_in_as_tenant(client, fleet["owner"])
    page = client.get("/console/machines").get_data(as_text=True)
    assert listed(page) == [mine.uuid]
    assert 'name="owner"' not in page  # no owner filter: a tenant's list is its own
    assert re.search(r'<a href="/console/machines"\s+aria-current="page">Machines</a>', page)
    # an owner named in the URL changes nothing
    assert listed(client.get(f"/console/machines?owner={bob.uuid}").get_data(
        as_text=True)) == [mine.uuid]


def test_a_visitor_is_sent_to_sign_in(client: FlaskClient, fleet: dict[str, Any]) -> None:
    machine = make_machine(client.application.extensions["sdc"], fleet)
    for path in ("/console/machines", f"/console/machines/{machine.uuid}",
                 "/console/machines/new"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/console/signin" in answer.headers["Location"]


# ---------------------------------------------------------------------------- a machine


def test_a_machine_page_shows_its_parts(operator: FlaskClient, sdc: Any,
                                        fleet: dict[str, Any]) -> None:
    machine = make_machine(sdc, fleet, alias="web-7", tags={"role": "web"},
                           customer_metadata={"user-data": "hello"})
    with sdc.transaction() as session:
        session.add(MachineSnapshot(machine_uuid=machine.uuid, name="before", state="created"))
    page = operator.get(f"/console/machines/{machine.uuid}").get_data(as_text=True)
    assert "<h1>Machine web-7</h1>" in page
    assert '<th scope="row">role</th><td>web</td>' in page
    assert '<th scope="row">user-data</th><td>hello</td>' in page
    assert '<th scope="row">before</th><td>created</td>' in page
    assert 'aria-label="Roll back to snapshot before"' in page
    assert "No NICs." in page and "No jobs." in page
    assert f'href="/console/jobs?machine={machine.uuid}"' in page
    assert fleet["owner"].login in page and fleet["server"].hostname in page
    for action in ("power", "resize", "snapshot", "delete"):
        assert f'action="/console/machines/{machine.uuid}/{action}"' in page


def test_another_tenants_machine_is_a_404_and_its_actions_change_nothing(
        client: FlaskClient, sdc: Any, fleet: dict[str, Any], bob: Any,
        jobqueue: Any) -> None:
    theirs = make_machine(sdc, fleet, alias="theirs", owner_uuid=bob.uuid)
    sign_in_as_tenant(client, fleet["owner"])
    assert client.get(f"/console/machines/{theirs.uuid}").status_code == 404
    assert client.get("/console/machines/not-a-uuid").status_code == 404
    with sdc.transaction() as session:
        session.add(MachineSnapshot(machine_uuid=theirs.uuid, name="s0", state="created"))
    for action, form in (("power", {"action": "stop"}), ("resize", {"package": "small"}),
                         ("snapshot", {"name": "s1"}), ("delete", {}),
                         ("snapshots/s0", {"action": "rollback"}),
                         ("snapshots/s0", {"action": "delete"})):
        answer = post_form(client, f"/console/machines/{theirs.uuid}/{action}", form)
        assert answer.status_code == 404, action
    assert jobqueue.enqueued == [] and jobs_of(sdc, theirs.uuid) == []
    row = stored(sdc, Machine, theirs.uuid)
    assert (row.state, row.job_uuid) == ("running", None)
    with sdc.read() as session:
        assert [(r.name, r.state) for r in session.query(MachineSnapshot)] == [("s0", "created")]


@pytest.mark.parametrize("action,form,state,workflow", [
    ("power", {"action": "start"}, "stopped", "start"),
    ("power", {"action": "stop"}, "running", "stop"),
    ("power", {"action": "reboot"}, "running", "reboot"),
    ("resize", {"package": "large"}, "running", "resize"),
    ("snapshot", {"name": "before-upgrade"}, "running", "snapshot_create"),
    ("delete", {}, "running", "destroy"),
    ("snapshots/before", {"action": "rollback"}, "running", "snapshot_rollback"),
    ("snapshots/before", {"action": "delete"}, "stopped", "snapshot_delete"),
])
def test_each_action_starts_its_job_and_says_which(
        client: FlaskClient, sdc: Any, fleet: dict[str, Any], jobqueue: Any, action: str,
        form: dict[str, str], state: str, workflow: str) -> None:
    make_package(sdc, name="large", memory=2048, disk=20480)
    machine = make_machine(sdc, fleet, state=state)
    with sdc.transaction() as session:
        session.add(MachineSnapshot(machine_uuid=machine.uuid, name="before", state="created"))
    sign_in_as_tenant(client, fleet["owner"])
    answer = post_form(client, f"/console/machines/{machine.uuid}/{action}", form)
    assert answer.status_code == 303, answer.get_data(as_text=True)
    assert answer.headers["Location"] == f"/console/machines/{machine.uuid}"
    assert jobs_of(sdc, machine.uuid) == [workflow]
    job_uuid = stored(sdc, Machine, machine.uuid).job_uuid
    assert jobqueue.enqueued == [job_uuid]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert f'job <a href="/console/jobs/{job_uuid}">{job_uuid}</a>' in page


@pytest.mark.parametrize("action,form,status,message", [
    ("power", {"action": "explode"}, 422, "action: must be one of start, stop, reboot"),
    ("power", {"action": "start"}, 409, "cannot start a machine that is provisioning"),
    ("resize", {}, 422, "package: is required"),
    ("resize", {"package": "nope"}, 422, "package: no package"),
    ("snapshot", {"name": "-bad name"}, 422, "name: 1-64 characters"),
    ("snapshots/nosuch", {"action": "rollback"}, 404, "snapshot nosuch not found"),
    ("snapshots/nosuch", {"action": "undo"}, 422, "action: must be one of rollback, delete"),
])
def test_a_refused_action_shows_why_with_its_status(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any], jobqueue: Any, action: str,
        form: dict[str, str], status: int, message: str) -> None:
    machine = make_machine(sdc, fleet, state="provisioning" if status == 409 else "running")
    answer = post_form(operator, f"/console/machines/{machine.uuid}/{action}", form)
    page = answer.get_data(as_text=True)
    assert answer.status_code == status
    assert "Refused: " in page and message in page
    assert jobqueue.enqueued == [] and jobs_of(sdc, machine.uuid) == []


def test_a_busy_machine_refuses_a_second_job(operator: FlaskClient, sdc: Any,
                                             fleet: dict[str, Any]) -> None:
    machine = make_machine(sdc, fleet)
    assert post_form(operator, f"/console/machines/{machine.uuid}/power",
                     {"action": "stop"}).status_code == 303
    answer = post_form(operator, f"/console/machines/{machine.uuid}/delete", {})
    assert answer.status_code == 409
    assert "is busy with job" in answer.get_data(as_text=True)
    assert jobs_of(sdc, machine.uuid) == ["stop"]


# ---------------------------------------------------------------------------- create


def created(sdc: Any) -> tuple[int, int]:
    return count(sdc, Machine), count(sdc, Job)


def with_key(sdc: Any, account: Any) -> Any:
    """A tenant with an SSH key: CloudAPI's creates (and the console's) need one."""
    add(sdc, Key(account_uuid=account.uuid, name="laptop", fingerprint_md5="00:11",
                 fingerprint_sha256="SHA256:x", key="ssh-ed25519 AAAA test@laptop"))
    return account


def test_a_tenant_without_an_ssh_key_is_told_so(client: FlaskClient, sdc: Any,
                                                fleet: dict[str, Any]) -> None:
    sign_in_as_tenant(client, fleet["owner"])
    answer = post_form(client, "/console/machines/new",
                       {"image": fleet["image"].uuid, "package": "small"})
    assert answer.status_code == 409
    assert "SSH key is required" in answer.get_data(as_text=True)
    assert created(sdc) == (0, 0)


def test_a_tenant_creates_a_machine_from_the_form(client: FlaskClient, sdc: Any,
                                                  fleet: dict[str, Any],
                                                  jobqueue: Any) -> None:
    sign_in_as_tenant(client, with_key(sdc, fleet["owner"]))
    form = client.get("/console/machines/new").get_data(as_text=True)
    assert "<h1>Create a machine</h1>" in form and 'name="owner"' not in form
    assert fleet["image"].uuid in form and 'value="small"' in form
    answer = post_form(client, "/console/machines/new", {
        "alias": "web-1", "image": fleet["image"].uuid, "package": "small",
        "tags": "role=web\n\nteam = blue", "metadata": "user-data=echo hi"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    with sdc.read() as session:
        machine = session.query(Machine).one()
        assert (machine.alias, machine.owner_uuid, machine.state) == (
            "web-1", fleet["owner"].uuid, "provisioning")
        assert machine.tags == {"role": "web", "team": "blue"}
        assert machine.customer_metadata["user-data"] == "echo hi"
    assert answer.headers["Location"] == f"/console/machines/{machine.uuid}"
    assert jobqueue.enqueued == [machine.job_uuid]
    assert jobs_of(sdc, machine.uuid) == ["provision"]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert f'href="/console/jobs/{machine.job_uuid}"' in page


def test_an_operator_creates_a_machine_for_an_owner(operator: FlaskClient, sdc: Any,
                                                    fleet: dict[str, Any], bob: Any) -> None:
    assert 'name="owner"' in operator.get("/console/machines/new").get_data(as_text=True)
    answer = post_form(operator, "/console/machines/new", {
        "owner": "bob", "image": fleet["image"].uuid, "package": "small"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    with sdc.read() as session:
        assert session.query(Machine).one().owner_uuid == bob.uuid


def test_a_refused_create_lists_the_placement_reasons_and_keeps_the_form(
        client: FlaskClient, sdc: Any, fleet: dict[str, Any], jobqueue: Any) -> None:
    make_package(sdc, name="huge", memory=10_000_000, disk=1)
    sign_in_as_tenant(client, with_key(sdc, fleet["owner"]))
    answer = post_form(client, "/console/machines/new", {
        "alias": "big-one", "image": fleet["image"].uuid, "package": "huge",
        "tags": "role=db"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 409
    assert "The machine was not created" in page and 'class="reasons"' in page
    reasons = re.findall(r"<li>([^<]+): (\d+)</li>", page.split('class="reasons"')[1])
    assert reasons and all(int(n) >= 1 for _, n in reasons)
    assert 'value="big-one"' in page and ">role=db</textarea>" in page
    assert '<option value="huge" selected>' in page
    assert created(sdc) == (0, 0) and jobqueue.enqueued == []


@pytest.mark.parametrize("form,field", [
    ({"package": "small"}, "image"),
    ({"image": "IMAGE", "package": "nosuch"}, "package"),
    ({"image": "IMAGE"}, "package"),
    ({"image": "IMAGE", "package": "small", "tags": "role web"}, "tags"),
    ({"image": "IMAGE", "package": "small", "tags": "=web"}, "tags"),
    ({"image": "IMAGE", "package": "small", "tags": "a,b=web"}, "tags"),
    ({"image": "IMAGE", "package": "small", "metadata": "no equals"}, "metadata"),
    ({"image": "IMAGE", "package": "small", "alias": "-bad"}, "alias"),
    ({"image": "00000000-0000-0000-0000-000000000000", "package": "small"}, "image"),
])
def test_bad_create_input_is_a_4xx_naming_the_field(
        client: FlaskClient, sdc: Any, fleet: dict[str, Any], jobqueue: Any,
        form: dict[str, str], field: str) -> None:
    sign_in_as_tenant(client, fleet["owner"])
    form = {k: v.replace("IMAGE", fleet["image"].uuid) for k, v in form.items()}
    answer = post_form(client, "/console/machines/new", form)
    page = answer.get_data(as_text=True)
    assert 400 <= answer.status_code < 500, page
    assert f"The machine was not created ({field})" in page
    assert f'id="{field}" name="{field}"' not in page or 'aria-invalid="true"' in page
    assert created(sdc) == (0, 0) and jobqueue.enqueued == []


def test_a_tenant_cannot_create_from_another_tenants_private_image(
        client: FlaskClient, sdc: Any, fleet: dict[str, Any], bob: Any) -> None:
    private = make_image(sdc, name="bobs", public=False, owner_uuid=bob.uuid)
    sign_in_as_tenant(client, fleet["owner"])
    assert private.uuid not in client.get("/console/machines/new").get_data(as_text=True)
    answer = post_form(client, "/console/machines/new",
                       {"image": private.uuid, "package": "small"})
    assert answer.status_code == 422
    assert "The machine was not created (image)" in answer.get_data(as_text=True)
    assert created(sdc) == (0, 0)
