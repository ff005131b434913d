"""POST /ops/jobs/<uuid>/cancel: 202 with the job and its cancel record, 404, 409."""

from __future__ import annotations

from typing import Any

from headnode.store.models import Job
from tests.support.jobqueue import RecordingJobQueue
from tests.unit.headnode.api.conftest import add


def test_cancel_a_running_job(api: Any, sdc: Any, jobqueue: RecordingJobQueue) -> None:
    job = add(sdc, Job(name="provision", execution="running", params={"chain": ["validate"]}))
    answer = api("post", f"/ops/jobs/{job.uuid}/cancel")
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["uuid"] == job.uuid and body["execution"] == "running"
    assert body["cancel_requested_at"] is not None
    assert body["canceled_by"]["type"] == "operator"
    assert jobqueue.canceled == [job.uuid]
    # shown by GET too; asking again is harmless and keeps the first request
    assert api("get", f"/ops/jobs/{job.uuid}").get_json()["cancel_requested_at"] == \
        body["cancel_requested_at"]
    again = api("post", f"/ops/jobs/{job.uuid}/cancel")
    assert again.status_code == 202
    assert again.get_json()["cancel_requested_at"] == body["cancel_requested_at"]


def test_cancel_an_unknown_job(api: Any, jobqueue: RecordingJobQueue) -> None:
    answer = api("post", "/ops/jobs/00000000-0000-4000-8000-000000000000/cancel")
    assert answer.status_code == 404
    assert answer.get_json()["code"] == "ResourceNotFound"
    assert jobqueue.canceled == []


def test_cancel_an_ended_job(api: Any, sdc: Any, jobqueue: RecordingJobQueue) -> None:
    for execution in ("succeeded", "failed", "canceled"):
        job = add(sdc, Job(name="start", execution=execution))
        answer = api("post", f"/ops/jobs/{job.uuid}/cancel")
        assert answer.status_code == 409
        body = answer.get_json()
        assert body["code"] == "JobFinished" and f"({execution})" in body["message"]
        assert api("get", f"/ops/jobs/{job.uuid}").get_json()["cancel_requested_at"] is None
    assert jobqueue.canceled == []


def test_cancel_needs_the_operator_token(client: Any, sdc: Any) -> None:
    job = add(sdc, Job(name="start", execution="queued"))
    assert client.post(f"/ops/jobs/{job.uuid}/cancel").status_code == 401


def test_list_by_canceled(api: Any, sdc: Any) -> None:
    job = add(sdc, Job(name="start", execution="canceled"))
    add(sdc, Job(name="start", execution="failed"))
    rows = api("get", "/ops/jobs?execution=canceled").get_json()
    assert [r["uuid"] for r in rows] == [job.uuid]


def test_cancel_a_started_job_without_onerror_chain(api: Any, sdc: Any,
                                                    jobqueue: RecordingJobQueue) -> None:
    started = {"name": "destroy_machine", "attempt": 1, "started_at": "2026-01-01T00:00:00",
               "finished_at": None, "result": None, "error": None}
    job = add(sdc, Job(name="destroy", execution="running", chain_results=[started]))
    answer = api("post", f"/ops/jobs/{job.uuid}/cancel")
    assert answer.status_code == 409
    body = answer.get_json()
    assert body["code"] == "JobNotCancelable" and "no onerror chain" in body["message"]
    assert jobqueue.canceled == []
    # queued, it has done nothing yet: it can be
    queued = add(sdc, Job(name="destroy", execution="queued"))
    assert api("post", f"/ops/jobs/{queued.uuid}/cancel").status_code == 202


def test_cancel_is_in_the_openapi_document(api: Any) -> None:
    doc = api("get", "/ops/openapi.json").get_json()
    operation = doc["paths"]["/ops/jobs/{uuid}/cancel"]["post"]
    assert {"202", "404", "409"} <= set(operation["responses"])
    job = doc["components"]["schemas"]["Job"]["properties"]
    assert "canceled" in job["execution"]["enum"] and "cancel_requested_at" in job
