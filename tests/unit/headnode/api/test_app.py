"""Authentication, error bodies, request ids and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from headnode.services import servers
from tests.unit.headnode.api.conftest import AUTH


def test_ping_needs_no_token(client: Any) -> None:
    answer = client.get("/ops/ping")
    assert answer.status_code == 200
    assert answer.get_json() == {"ping": "pong"}


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Basic dGVzdC10b2tlbg=="},
    {"Authorization": "Bearer"},
    {"Authorization": "test-token"},
])
def test_operator_paths_refuse_missing_or_bad_tokens(client: Any, headers: dict[str, str]) -> None:
    answer = client.get("/ops/servers", headers=headers)
    assert answer.status_code == 401
    body = answer.get_json()
    assert body["code"] == "Unauthorized"
    assert body["message"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_ops_paths_are_refused_before_being_looked_up(client: Any) -> None:
    # Without a token nobody learns which paths exist.
    assert client.get("/ops/nothing-here").status_code == 401


def test_good_token_is_accepted(api: Any) -> None:
    answer = api("get", "/ops/servers")
    assert answer.status_code == 200
    assert answer.get_json() == []


def test_openapi_document_is_open_and_lists_the_ops_paths(client: Any) -> None:
    answer = client.get("/ops/openapi.json")
    assert answer.status_code == 200
    doc = answer.get_json()
    assert doc["openapi"] == "3.0.3"
    assert doc["info"]["title"] == "SDC operator API"
    for path in ("/ops/servers", "/ops/servers/{uuid}", "/ops/machines",
                 "/ops/machines/{uuid}", "/ops/jobs", "/ops/jobs/{uuid}", "/ops/packages",
                 "/ops/packages/{ident}", "/ops/images", "/ops/images/{uuid}",
                 "/ops/accounts", "/ops/ping"):
        assert path in doc["paths"], path
    assert {"get", "post"} <= set(doc["paths"]["/ops/machines"])
    assert "MachineCreate" in doc["components"]["schemas"]


def test_unknown_route_is_a_json_404(api: Any) -> None:
    answer = api("get", "/ops/nothing-here")
    assert answer.status_code == 404
    assert answer.get_json()["code"] == "ResourceNotFound"
    assert "/ops/nothing-here" in answer.get_json()["message"]


def test_route_outside_ops_is_a_json_404(client: Any) -> None:
    # (a single segment, "/nowhere", is a CloudAPI account path: /:login)
    answer = client.get("/nowhere/at/all")
    assert answer.status_code == 404
    assert answer.get_json()["code"] == "ResourceNotFound"


def test_wrong_method_is_bad_method(api: Any) -> None:
    answer = api("patch", "/ops/servers")
    assert answer.status_code == 405
    assert answer.get_json()["code"] == "BadMethod"


@pytest.mark.parametrize("data,content_type", [
    ("name=small&memory=1", "application/x-www-form-urlencoded"),
    ("{not json", "application/json"),
    ("just text", "text/plain"),
])
def test_body_that_is_not_json_is_a_bad_request(api: Any, data: str, content_type: str) -> None:
    answer = api("post", "/ops/packages", data=data, content_type=content_type)
    assert answer.status_code == 400
    assert answer.get_json()["code"] == "BadRequest"


def test_body_of_the_wrong_json_type_names_the_body(api: Any) -> None:
    answer = api("post", "/ops/packages", json=["small"])
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["code"] == "ValidationFailed"
    assert "body" in body["errors"]


def test_unexpected_error_is_500_without_traceback(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(servers, "list_servers", broken)
    answer = api("get", "/ops/servers", headers={"x-request-id": "req-42"})
    assert answer.status_code == 500
    body = answer.get_json()
    assert body["code"] == "InternalError"
    assert body["request_id"] == "req-42"
    assert "secret detail" not in answer.get_data(as_text=True)
    assert "Traceback" not in answer.get_data(as_text=True)
    assert any("req-42" in record.getMessage() for record in caplog.records)


def test_every_answer_has_a_request_id(api: Any, client: Any) -> None:
    made = api("get", "/ops/servers").headers["x-request-id"]
    assert len(made) == 36
    assert api("get", "/ops/servers", headers={"x-request-id": "abc-1"}).headers[
        "x-request-id"] == "abc-1"
    # one that is not plain is replaced, not echoed
    assert client.get("/ops/ping", headers={"x-request-id": "a b<c>"}).headers[
        "x-request-id"] != "a b<c>"
    assert client.get("/ops/servers").headers["x-request-id"]


def scraped(client: Any, sample: str, labels: dict[str, str]) -> float:
    """The value of one sample in ``GET /metrics`` (0 when it is not there yet)."""
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200
    return sum(s.value for family in text_string_to_metric_families(answer.get_data(as_text=True))
               for s in family.samples if s.name == sample and s.labels == labels)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}])
def test_metrics_need_the_operator_token(client: Any, headers: dict[str, str]) -> None:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "Unauthorized"
    assert b"sdc_api_requests_total" not in answer.get_data()


def test_metrics_count_each_request(client: Any, api: Any) -> None:
    # The counters live as long as the process (other tests count too): compare before/after.
    answered = {"method": "GET", "endpoint": "/ops/servers", "status": "200"}
    timed = {"method": "GET", "endpoint": "/ops/servers"}
    before = (scraped(client, "sdc_api_requests_total", answered),
              scraped(client, "sdc_api_request_seconds_count", timed))
    assert api("get", "/ops/servers").status_code == 200
    after = (scraped(client, "sdc_api_requests_total", answered),
             scraped(client, "sdc_api_request_seconds_count", timed))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_oversized_body_is_refused(api: Any) -> None:
    answer = api("post", "/ops/images", json={"name": "x", "description": "d" * (2 << 20)})
    assert answer.status_code == 413
    assert answer.get_json()["code"] == "RequestTooLarge"
