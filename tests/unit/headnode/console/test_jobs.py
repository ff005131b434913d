"""The Jobs pages: the list, a job's timeline (durations, attempts, errors), its JSON twin
that job.js reads, and who may see which job."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from headnode.console.pages.job_timeline import human_duration, timeline
from headnode.services import jobs
from headnode.store.models import Job
from tests.unit.headnode.api.conftest import add, make_account, make_machine
from tests.unit.headnode.console.conftest import sign_in_as_tenant

T0 = datetime(2026, 11, 1, 9, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def entry(name: str, attempt: int, start: float, end: float | None,
          error: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "attempt": attempt, "started_at": at(start),
            "finished_at": None if end is None else at(end),
            "result": None if error or end is None else "OK", "error": error}


def make_job(ctx: Any, machine_uuid: str | None = None, **overrides: Any) -> Job:
    attrs: dict[str, Any] = {
        "name": "provision", "machine_uuid": machine_uuid, "execution": "succeeded",
        "params": {"chain": ["reserve", "create"], "onerror": ["release"]},
        "created_at": T0, "started_at": T0 + timedelta(seconds=1),
        "finished_at": T0 + timedelta(seconds=5),
        "chain_results": [entry("reserve", 1, 1, 1.25), entry("create", 2, 1.25, 4.75)],
        "onerror_results": [],
    }
    attrs.update(overrides)
    return add(ctx, Job(**attrs))


def failed_job(ctx: Any, machine_uuid: str | None) -> Job:
    boom = {"code": "NodeError", "message": "zfs: out of space"}
    return make_job(
        ctx, machine_uuid, execution="failed",
        chain_results=[entry("reserve", 1, 1, 2), entry("create", 2, 2, 3, boom),
                       entry("create", 3, 4, 6, boom)],
        onerror_results=[entry("release", 4, 6, 6.5)],
        phase="onerror", error={"step": "create", **boom},
        finished_at=T0 + timedelta(seconds=7))


def running_job(ctx: Any, machine_uuid: str | None) -> Job:
    return make_job(ctx, machine_uuid, execution="running", finished_at=None,
                    chain_results=[entry("reserve", 1, 1, 2), entry("create", 2, 2, None)])


@pytest.fixture
def owned(sdc: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    """Alice's machine and job, Bob's machine and job, and a server job of nobody's."""
    bob = make_account(sdc, login="bob", email="bob@example.com")
    mine = make_machine(sdc, fleet)
    theirs = make_machine(sdc, fleet, alias="other", owner_uuid=bob.uuid)
    return {"alice": fleet["owner"], "bob": bob,
            "mine": make_job(sdc, mine.uuid), "theirs": make_job(sdc, theirs.uuid),
            "server": make_job(sdc, None, name="server_setup",
                               server_uuid=fleet["server"].uuid)}


def job_links(page: str) -> list[str]:
    return re.findall(r'href="/console/jobs/([0-9a-f-]{36})"', page)


def test_no_jobs_yet_is_said(operator: FlaskClient) -> None:
    answer = operator.get("/console/jobs")
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "<h1>Jobs</h1>" in page and "No jobs." in page


def test_an_operator_sees_every_job_and_a_tenant_only_those_of_their_machines(
        client: FlaskClient, operator: FlaskClient, owned: dict[str, Any]) -> None:
    every = job_links(operator.get("/console/jobs").get_data(as_text=True))
    assert set(every) == {owned[k].uuid for k in ("mine", "theirs", "server")}
    sign_in_as_tenant(client, owned["alice"])
    assert job_links(client.get("/console/jobs").get_data(as_text=True)) == [owned["mine"].uuid]


def test_a_tenant_gets_404_for_another_tenants_job_and_a_server_job(
        client: FlaskClient, owned: dict[str, Any]) -> None:
    sign_in_as_tenant(client, owned["alice"])
    assert client.get(f"/console/jobs/{owned['mine'].uuid}").status_code == 200
    assert client.get(f"/console/jobs/{owned['mine'].uuid}.json").status_code == 200
    for other in (owned["theirs"], owned["server"]):
        assert client.get(f"/console/jobs/{other.uuid}").status_code == 404
        assert client.get(f"/console/jobs/{other.uuid}.json").status_code == 404
    assert client.get("/console/jobs/not-a-uuid").status_code == 404


def test_a_tenant_still_sees_the_jobs_of_a_destroyed_machine(
        sdc: Any, client: FlaskClient, fleet: dict[str, Any]) -> None:
    gone = make_machine(sdc, fleet, state="destroyed", destroyed_at=T0)
    job = make_job(sdc, gone.uuid, name="destroy")
    sign_in_as_tenant(client, fleet["owner"])
    assert client.get(f"/console/jobs/{job.uuid}").status_code == 200
    assert job_links(client.get("/console/jobs").get_data(as_text=True)) == [job.uuid]


def test_the_json_of_a_job_for_an_operator(operator: FlaskClient, owned: dict[str, Any]) -> None:
    answer = operator.get(f"/console/jobs/{owned['server'].uuid}.json")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    data = answer.get_json()
    assert data["uuid"] == owned["server"].uuid
    assert (data["execution"], data["finished"], data["duration"]) == ("succeeded", True, 4.0)
    assert [(s["name"], s["state"], s["attempts"], s["duration"]) for s in data["steps"]] == [
        ("reserve", "succeeded", 1, 0.25), ("create", "succeeded", 1, 3.5)]
    assert "This job finished" in data["html"]


def test_a_failed_step_shows_its_errors_and_attempts(
        sdc: Any, operator: FlaskClient, fleet: dict[str, Any]) -> None:
    job = failed_job(sdc, None)
    page = operator.get(f"/console/jobs/{job.uuid}").get_data(as_text=True)
    assert "in step create" in page and "NodeError: zfs: out of space" in page
    create_row = re.search(r'<tr class="step step-failed">(.*?)</tr>', page, re.S)
    assert create_row, page
    row = create_row.group(1)
    assert "<th scope=\"row\">create</th>" in row
    assert "attempt 1: NodeError" in row and "attempt 2: NodeError" in row
    assert '<td class="number">2</td>' in row  # two attempts
    assert '<td class="number">4.0 s</td>' in row  # from the first start to the last end
    data = operator.get(f"/console/jobs/{job.uuid}.json").get_json()
    assert [(s["phase"], s["name"], s["state"]) for s in data["steps"]] == [
        ("chain", "reserve", "succeeded"), ("chain", "create", "failed"),
        ("onerror", "release", "succeeded")]
    assert data["error"] == {"step": "create", "code": "NodeError",
                             "message": "zfs: out of space"}


def test_a_running_job_loads_job_js_and_a_finished_one_says_it_finished(
        sdc: Any, operator: FlaskClient, fleet: dict[str, Any]) -> None:
    running = running_job(sdc, None)
    page = operator.get(f"/console/jobs/{running.uuid}").get_data(as_text=True)
    assert "/console/static/job.js" in page
    assert 'data-finished="false"' in page and "this page updates while it runs" in page
    assert f'data-poll="/console/jobs/{running.uuid}.json"' in page
    assert '<tr class="step step-running">' in page
    data = operator.get(f"/console/jobs/{running.uuid}.json").get_json()
    assert data["finished"] is False and data["finished_at"] is None
    assert [s["state"] for s in data["steps"]] == ["succeeded", "running"]

    done = make_job(sdc, None)
    page = operator.get(f"/console/jobs/{done.uuid}").get_data(as_text=True)
    assert "job.js" not in page and "This job finished" in page
    assert operator.get("/console/static/job.js").status_code == 200


def test_pages_of_50_and_their_boundaries(sdc: Any, operator: FlaskClient) -> None:
    made = [make_job(sdc, None, created_at=T0 + timedelta(seconds=i)) for i in range(51)]
    newest_first = [j.uuid for j in reversed(made)]
    first = operator.get("/console/jobs").get_data(as_text=True)
    assert job_links(first) == newest_first[:50]
    assert 'href="/console/jobs?page=2"' in first and "Previous page" not in first
    second = operator.get("/console/jobs?page=2").get_data(as_text=True)
    assert job_links(second) == newest_first[50:]
    assert "Next page" not in second and 'href="/console/jobs?page=1"' in second
    past = operator.get("/console/jobs?page=3").get_data(as_text=True)
    assert job_links(past) == [] and "No jobs." in past
    for bad in ("0", "-1", "x", "100001"):
        answer = operator.get(f"/console/jobs?page={bad}")
        assert answer.status_code == 400 and "page" in answer.get_data(as_text=True), bad


def test_the_execution_filter(sdc: Any, operator: FlaskClient) -> None:
    failed = failed_job(sdc, None)
    make_job(sdc, None)
    page = operator.get("/console/jobs?execution=failed").get_data(as_text=True)
    assert job_links(page) == [failed.uuid]
    answer = operator.get("/console/jobs?execution=exploded")
    assert answer.status_code == 400 and "execution" in answer.get_data(as_text=True)


def test_the_dashboard_lists_recent_jobs_and_the_days_failures(
        sdc: Any, client: FlaskClient, operator: FlaskClient, owned: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    fresh = failed_job(sdc, None)
    with sdc.transaction() as session:
        session.get(Job, fresh.uuid).finished_at = now
    stale = failed_job(sdc, None)  # finished on T0: more than a day ago
    page = operator.get("/console/").get_data(as_text=True)
    recent = page.split('id="recent-jobs"')[1]
    assert fresh.uuid in recent and owned["server"].uuid in recent
    failures = page.split('id="failed-jobs"')[1]
    assert fresh.uuid in failures and stale.uuid not in failures
    sign_in_as_tenant(client, owned["alice"])
    tenant_page = client.get("/console/").get_data(as_text=True)
    assert owned["mine"].uuid in tenant_page
    assert owned["theirs"].uuid not in tenant_page and fresh.uuid not in tenant_page


def test_durations_read_as_people_read_them() -> None:
    assert [human_duration(s) for s in (None, 0.25, 12.34, 245, 7380)] == [
        "—", "250 ms", "12.3 s", "4 min 05 s", "2 h 03 min"]


def test_a_running_job_runs_until_now_and_unrun_cleanup_steps_are_left_out(
        sdc: Any, fleet: dict[str, Any]) -> None:
    job = jobs.get_job(sdc, running_job(sdc, None).uuid)
    shown = timeline(job, now=T0 + timedelta(seconds=31))
    assert shown.duration == 30.0 and not shown.finished
    assert [s.name for s in shown.steps] == ["reserve", "create"]


def test_one_machines_jobs(sdc: Any, client: FlaskClient, operator: FlaskClient,
                          owned: dict[str, Any]) -> None:
    mine = owned["mine"].machine_uuid
    page = operator.get(f"/console/jobs?machine={mine}").get_data(as_text=True)
    assert job_links(page) == [owned["mine"].uuid] and f"of machine <code>{mine}</code>" in page
    assert operator.get("/console/jobs?machine=nope").status_code == 400
    sign_in_as_tenant(client, owned["alice"])
    assert job_links(client.get(f"/console/jobs?machine={mine}").get_data(as_text=True)) == [
        owned["mine"].uuid]
    theirs = owned["theirs"].machine_uuid
    assert client.get(f"/console/jobs?machine={theirs}").status_code == 404


def test_a_job_links_its_machine_and_the_machines_jobs(client: FlaskClient,
                                                      owned: dict[str, Any]) -> None:
    sign_in_as_tenant(client, owned["alice"])
    machine = owned["mine"].machine_uuid
    page = client.get(f"/console/jobs/{owned['mine'].uuid}").get_data(as_text=True)
    assert f'href="/console/machines/{machine}"' in page
    assert f'href="/console/jobs?machine={machine}"' in page
    listed = client.get("/console/jobs").get_data(as_text=True)
    assert f'href="/console/machines/{machine}"' in listed
