from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from headnode.store.models import Job, new_uuid
from tests.unit.headnode.api.conftest import add

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(sdc: Any, minutes: int, **overrides: Any) -> Job:
    attrs: dict[str, Any] = {"name": "provision", "machine_uuid": new_uuid(),
                             "created_at": T0 + timedelta(minutes=minutes)}
    attrs.update(overrides)
    return add(sdc, Job(**attrs))


def test_list_newest_first_and_filters(api: Any, sdc: Any) -> None:
    old = make_job(sdc, 0, execution="succeeded")
    new = make_job(sdc, 5, name="start", machine_uuid=old.machine_uuid)
    other = make_job(sdc, 3, execution="failed")

    rows = api("get", "/ops/jobs").get_json()
    assert [r["uuid"] for r in rows] == [new.uuid, other.uuid, old.uuid]
    assert [r["uuid"] for r in api("get", f"/ops/jobs?machine_uuid={old.machine_uuid}")
            .get_json()] == [new.uuid, old.uuid]
    assert [r["uuid"] for r in api("get", "/ops/jobs?execution=failed").get_json()] == [
        other.uuid]
    assert [r["uuid"] for r in api("get", "/ops/jobs?name=start").get_json()] == [new.uuid]
    assert [r["uuid"] for r in api("get", "/ops/jobs?limit=1&offset=1").get_json()] == [
        other.uuid]


def test_bad_query_is_named(api: Any) -> None:
    answer = api("get", "/ops/jobs?execution=maybe&limit=0")
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"execution", "limit"}
    assert api("get", "/ops/jobs?limit=1001").status_code == 422


def test_get_one_with_steps(api: Any, sdc: Any) -> None:
    result = {"name": "validate", "attempt": 1, "started_at": "2026-01-01T00:00:00+00:00",
              "finished_at": "2026-01-01T00:00:01+00:00", "result": {"ok": True},
              "error": None}
    job = make_job(sdc, 0, execution="failed", phase="onerror",
                   params={"chain": ["validate", "ensure_image"], "onerror": ["release"],
                           "alias": "web"},
                   chain_results=[result], error={"code": "Boom", "message": "it broke"},
                   started_at=T0, finished_at=T0 + timedelta(seconds=3))
    body = api("get", f"/ops/jobs/{job.uuid}").get_json()
    assert body["chain"] == ["validate", "ensure_image"]
    assert body["onerror"] == ["release"]
    assert body["chain_results"] == [result]
    assert body["onerror_results"] == []
    assert body["error"] == {"code": "Boom", "message": "it broke"}
    assert body["execution"] == "failed" and body["phase"] == "onerror"
    assert body["started_at"] == "2026-01-01T00:00:00+00:00"
    assert body["finished_at"] == "2026-01-01T00:00:03+00:00"
    assert body["params"]["alias"] == "web"


def test_job_without_step_names_shows_empty_lists(api: Any, sdc: Any) -> None:
    job = make_job(sdc, 0)
    body = api("get", f"/ops/jobs/{job.uuid}").get_json()
    assert (body["chain"], body["onerror"], body["started_at"]) == ([], [], None)


def test_unknown_job_is_404(api: Any) -> None:
    assert api("get", f"/ops/jobs/{new_uuid()}").status_code == 404
