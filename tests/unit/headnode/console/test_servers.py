"""The servers' pages (operators only): the table, a server's page, the flags an operator
sets (set up, maintenance, reserved) and a new node's setup over SSH (a job)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from headnode.services import planning
from headnode.store.models import Job, Server
from tests.unit.headnode.api.conftest import (
    make_account,
    make_machine,
    make_package,
    make_server,
)
from tests.unit.headnode.console.conftest import post_form, sign_in_as_tenant, stored

ROW = re.compile(r'<th scope="row"><a href="/console/servers/([0-9a-f-]{36})">')


def listed(page: str) -> list[str]:
    return ROW.findall(page)


def flags_of(sdc: Any, uuid: str) -> tuple[bool, bool, bool]:
    row = stored(sdc, Server, uuid)
    return row.setup, row.maintenance, row.reserved


def jobs(sdc: Any) -> list[Job]:
    with sdc.read() as session:
        return list(session.scalars(select(Job)))


def test_no_servers_yet(operator: FlaskClient) -> None:
    answer = operator.get("/console/servers")
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "<h1>Servers</h1>" in page and "No servers." in page


def test_the_table_shows_status_heartbeat_use_traits_and_flags(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any]) -> None:
    busy = make_server(sdc, hostname="cn2", ram_mb=1000, ram_committed_mb=400,
                       ram_inflight_mb=100, traits={"ssd": True}, reserved=True,
                       maintenance=True, last_heartbeat=time.time() - 125)
    fresh = make_server(sdc, hostname="cn3", setup=False, status="unknown",
                        last_heartbeat=None)
    page = operator.get("/console/servers").get_data(as_text=True)
    assert listed(page) == [fleet["server"].uuid, busy.uuid, fresh.uuid]
    row = page.partition(f"/console/servers/{busy.uuid}")[2].partition("</tr>")[0]
    assert "2 min ago" in row and "ssd=True" in row
    assert 'aria-label="RAM: 50 % used (500 of 1,000 MiB)"' in row and "50 %" in row
    assert "set up, reserved, in maintenance" in row
    assert "End maintenance" in row and "Unreserve" in row and 'value="setup"' not in row
    row = page.partition(f"/console/servers/{fresh.uuid}")[2].partition("</tr>")[0]
    assert "never" in row and "unknown" in row and "not set up" in row
    assert 'value="setup"' in row


def test_servers_come_in_pages_of_fifty(operator: FlaskClient, sdc: Any) -> None:
    made = [make_server(sdc, hostname=f"cn{i:03}").uuid for i in range(51)]
    first = operator.get("/console/servers").get_data(as_text=True)
    assert listed(first) == made[:50] and "Servers 1–50 of 51" in first
    second = operator.get("/console/servers?page=2").get_data(as_text=True)
    assert listed(second) == made[50:] and "Previous page" in second
    for query in ("page=0", "page=-1", "status=sleeping"):
        assert operator.get(f"/console/servers?{query}").status_code == 422, query
    only = operator.get("/console/servers?status=unknown").get_data(as_text=True)
    assert listed(only) == []


@pytest.mark.parametrize("change,before,after", [
    ("setup", (False, False, False), (True, False, False)),
    ("maintenance-on", (True, False, False), (True, True, False)),
    ("maintenance-off", (True, True, False), (True, False, False)),
    ("reserve", (True, False, False), (True, False, True)),
    ("unreserve", (True, False, True), (True, False, False)),
])
def test_an_operator_changes_a_servers_flags(operator: FlaskClient, sdc: Any, change: str,
                                             before: tuple[bool, bool, bool],
                                             after: tuple[bool, bool, bool]) -> None:
    setup, maintenance, reserved = before
    server = make_server(sdc, hostname="cn9", setup=setup, maintenance=maintenance,
                         reserved=reserved)
    answer = post_form(operator, f"/console/servers/{server.uuid}/flags",
                       {"change": change, "back": "/console/servers?page=1"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/console/servers?page=1"
    assert flags_of(sdc, server.uuid) == after
    assert "cn9: " in operator.get(answer.headers["Location"]).get_data(as_text=True)


def test_a_flag_change_goes_back_only_to_a_servers_page(operator: FlaskClient,
                                                        sdc: Any) -> None:
    server = make_server(sdc, setup=False)
    answer = post_form(operator, f"/console/servers/{server.uuid}/flags",
                       {"change": "setup", "back": "https://elsewhere.example/"})
    assert answer.headers["Location"] == "/console/servers"


def test_an_unknown_change_or_server_changes_nothing(operator: FlaskClient, sdc: Any) -> None:
    server = make_server(sdc, setup=False)
    answer = post_form(operator, f"/console/servers/{server.uuid}/flags",
                       {"change": "headnode"})
    assert answer.status_code == 422 and "change" in answer.get_data(as_text=True)
    assert flags_of(sdc, server.uuid) == (False, False, False)
    missing = "00000000-0000-0000-0000-000000000000"
    assert post_form(operator, f"/console/servers/{missing}/flags",
                     {"change": "setup"}).status_code == 404
    assert operator.get(f"/console/servers/{missing}").status_code == 404


def test_a_tenant_gets_404_for_every_servers_page_and_action(
        client: FlaskClient, sdc: Any, jobqueue: Any) -> None:
    server = make_server(sdc, setup=False)
    sign_in_as_tenant(client, make_account(sdc, login="carol"))
    assert client.get("/console/servers").status_code == 404
    assert client.get(f"/console/servers/{server.uuid}").status_code == 404
    for change in ("setup", "maintenance-on", "reserve"):
        answer = post_form(client, f"/console/servers/{server.uuid}/flags", {"change": change})
        assert answer.status_code == 404
    answer = post_form(client, "/console/servers/setup", {"host": "10.0.0.7"})
    assert answer.status_code == 404
    assert flags_of(sdc, server.uuid) == (False, False, False)
    assert jobs(sdc) == [] and jobqueue.enqueued == []
    assert "/console/servers" not in client.get("/console/machines").get_data(as_text=True)


def test_a_servers_page_shows_machines_sysinfo_and_what_fits(
        operator: FlaskClient, sdc: Any, fleet: dict[str, Any]) -> None:
    server = fleet["server"]
    with sdc.transaction() as session:
        row = session.get(Server, server.uuid)
        row.sysinfo = {"Hostname": "cn1", "Zpool": {"name": "zones"}}
        row.ram_committed_mb = 1024
        row.disk_committed_mb = 10240
        row.machine_count = 1
    make_package(sdc, name="big", memory=32768, disk=10240)
    machine = make_machine(sdc, fleet, alias="db-1")
    page = operator.get(f"/console/servers/{server.uuid}").get_data(as_text=True)
    assert "<h1>Server cn1</h1>" in page
    assert f'href="/console/machines/{machine.uuid}">db-1</a>' in page
    assert '<th scope="row">Hostname</th><td>cn1</td>' in page
    assert "&#34;name&#34;: &#34;zones&#34;" in page or '"name": "zones"' in page
    fits = dict(re.findall(r'<th scope="row">(\w+)</th><td class="number">\d+</td>'
                           r'<td class="number">\d+</td><td class="number">(\d+)</td>', page))
    assert set(fits) == {"small", "big"}
    assert int(fits["big"]) < int(fits["small"])
    assert 'role="img"' in page and "RAM: provisioned 1,024 MiB" in page
    # the same parts as the fleet's capacity report (GET /ops/capacity) gives this server
    report = next(s for s in planning.report(sdc)["servers"] if s["uuid"] == server.uuid)
    for key, label, unit in (("ram_mb", "RAM", "MiB"), ("disk_mb", "Disk", "MiB"),
                             ("cpu", "CPU", "% of a CPU")):
        parts = report[key]
        assert (f"{label}: provisioned {parts['provisioned']:,} {unit}, reserved "
                f"{parts['reserved']:,} {unit}, free {parts['free']:,} {unit}") in page, key
    assert "takes new machines" in page


def test_a_new_node_is_set_up_over_ssh_as_a_job(operator: FlaskClient, sdc: Any,
                                                jobqueue: Any) -> None:
    answer = post_form(operator, "/console/servers/setup", {
        "host": "10.0.0.7", "port": "2222", "user": "root", "backend": "sim",
        "accept_new_host_key": "yes"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    (job,) = jobs(sdc)
    assert job.name == "server_setup" and jobqueue.enqueued == [job.uuid]
    assert (job.params["host"], job.params["port"], job.params["backend"]) == (
        "10.0.0.7", 2222, "sim")
    assert job.params["accept_new_host_key"] is True
    page = operator.get(answer.headers["Location"]).get_data(as_text=True)
    assert f'href="/console/jobs/{job.uuid}"' in page


@pytest.mark.parametrize("form,field", [
    ({"port": "22"}, "host"),
    ({"host": "-oProxyCommand=sh"}, "host"),
    ({"host": "10.0.0.7", "port": "0"}, "port"),
    ({"host": "10.0.0.7", "port": "twenty"}, "port"),
    ({"host": "10.0.0.7", "user": "root;reboot"}, "user"),
    ({"host": "10.0.0.7", "backend": "windows"}, "backend"),
])
def test_a_bad_setup_names_the_field_and_starts_nothing(
        operator: FlaskClient, sdc: Any, jobqueue: Any, form: dict[str, str],
        field: str) -> None:
    answer = post_form(operator, "/console/servers/setup", form)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert f"Refused ({field}):" in page
    assert 'id="setup-host" name="host" required value="' + form.get("host", "") in page
    assert jobs(sdc) == [] and jobqueue.enqueued == []
