"""Hostile input (issue 14, item 6): each request here answered 500 (or was taken) before;
now it gets a 4xx naming what is wrong, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from headnode.store.models import Account, Job, Machine, Package, Server
from tests.unit.headnode.api.conftest import count, make_package, make_server
from tests.unit.headnode.cloudapi import conftest as cloudapi
from tests.unit.headnode.cloudapi.conftest import World

# CloudAPI's signed-request fixtures (tests/unit/headnode/cloudapi/conftest.py), used here too
world, call = cloudapi.world, cloudapi.call

INT32_OVER = 2**31
INT64_OVER = 2**63


def _refused(answer: Any, status: int, *named: str) -> dict[str, Any]:
    assert answer.status_code == status, (answer.status_code, answer.get_data(as_text=True))
    body = answer.get_json()
    assert body["code"] and body["message"]
    text = answer.get_data(as_text=True)
    for name in named:
        assert name in text, (name, text)
    return dict(body)


# ---------------------------------------------------------------- bodies nested too deep


@pytest.mark.parametrize("path", ["/ops/ping", "/--ping", "/alice/machines", "/my/keys"])
def test_deeply_nested_body_to_an_unauthenticated_route_is_400(client: Any, path: str) -> None:
    answer = client.post(path, data="[" * 100_000, content_type="application/json")
    _refused(answer, 400, "nested")


def test_nesting_deeper_than_the_limit_is_400_even_when_it_parses(api: Any, sdc: Any) -> None:
    body = {"name": "x", "memory": 1, "disk": 1, "traits": {}}
    inner: dict[str, Any] = body["traits"]
    for _ in range(100):
        inner["a"] = {}
        inner = inner["a"]
    _refused(api("post", "/ops/packages", json=body), 400, "nested")
    assert count(sdc, Package) == 0


# ---------------------------------------------------------------- NUL bytes


def test_nul_in_a_cloudapi_path_is_400(call: Any, world: World) -> None:
    _refused(call(world.alice, "get", "/alice/networks/%00"), 400, "NUL")


@pytest.mark.parametrize("path", ["/ops/packages/%00", "/ops/servers/a%00b",
                                  "/ops/jobs?name=%00"])
def test_nul_in_an_ops_path_or_query_is_400(api: Any, path: str) -> None:
    _refused(api("get", path), 400, "NUL")


def test_nul_in_a_json_string_is_400_naming_it(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/packages", json={"name": "a\u0000b", "memory": 1, "disk": 1})
    _refused(answer, 400, "NUL", "name")
    assert count(sdc, Package) == 0


def test_nul_in_a_signed_cloudapi_body_is_400(call: Any, sdc: Any, world: World) -> None:
    answer = call(world.alice, "post", "/my/machines",
                  json={"name": "web", "package": "small", "image": "base-64",
                        "metadata": {"k": "v\u0000"}})
    _refused(answer, 400, "NUL", "metadata.k")
    assert count(sdc, Machine) == 0


# ---------------------------------------------------------------- ill-typed fields


def test_cloudapi_create_with_tags_not_an_object_is_refused(call: Any, sdc: Any,
                                                            world: World) -> None:
    for body in ({"tags": "x"}, {"tags": "x", "tag.role": "db"},
                 {"metadata": "x", "metadata.a": "b"}):
        answer = call(world.alice, "post", "/my/machines",
                      json={"package": "small", "image": "base-64", **body})
        _refused(answer, 409, next(iter(body)))
    assert count(sdc, Machine) == 0


def test_ops_create_with_tags_not_an_object_is_422(api: Any, sdc: Any, world: World) -> None:
    answer = api("post", "/ops/machines", json={"owner": "alice", "package": "small",
                                                 "image": "base-64", "tags": "x"})
    assert _refused(answer, 422, "tags")["errors"]["tags"]
    assert count(sdc, Machine) == 0


# ---------------------------------------------------------------- integers past the columns


def test_package_memory_past_int32_is_422(api: Any, sdc: Any) -> None:
    for field in ("memory", "disk", "swap", "vcpus", "cpu_cap", "max_lwps"):
        body = {"name": "big", "memory": 1, "disk": 1, field: INT32_OVER}
        assert field in _refused(api("post", "/ops/packages", json=body), 422)["errors"]
    assert count(sdc, Package) == 0


def test_image_size_past_int32_is_422(api: Any) -> None:
    answer = api("post", "/ops/images", json={"name": "big", "size_mb": INT32_OVER})
    assert "size_mb" in _refused(answer, 422)["errors"]


@pytest.mark.parametrize("query", [f"offset={INT64_OVER}", f"offset={INT32_OVER}",
                                   f"limit={INT64_OVER}"])
def test_job_and_machine_pages_past_the_range_are_422(api: Any, query: str) -> None:
    for path in ("/ops/jobs", "/ops/machines"):
        answer = api("get", f"{path}?{query}")
        assert query.split("=")[0] in _refused(answer, 422)["errors"]


def test_cloudapi_memory_filter_past_int32_is_409(call: Any, world: World) -> None:
    for query in (f"memory={INT32_OVER}", f"offset={INT64_OVER}"):
        _refused(call(world.alice, "get", f"/my/machines?{query}"), 409,
                 query.split("=")[0])


def test_cloudapi_machine_create_memory_is_not_a_create_field(call: Any, sdc: Any,
                                                              world: World) -> None:
    answer = call(world.alice, "post", "/my/machines",
                  json={"package": "small", "image": "base-64", "memory": INT32_OVER})
    _refused(answer, 409, "memory")
    assert count(sdc, Machine) == 0


def test_network_vlan_and_mtu_past_their_range_are_refused(api: Any) -> None:
    for field in ("vlan_id", "mtu"):
        body = {"name": "n", "subnet": "10.9.0.0/24", field: INT64_OVER}
        answer = api("post", "/ops/networks", json=body)
        assert answer.status_code == 422, answer.get_json()
        assert field in answer.get_data(as_text=True)


def test_history_limit_and_doctor_stuck_after_past_their_range(api: Any) -> None:
    _refused(api("get", f"/ops/capacity/history?limit={INT64_OVER}"), 422, "limit")
    _refused(api("get", "/ops/doctor?stuck_after=1e300"), 422, "stuck_after")


# ---------------------------------------------------------------- booleans


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_booleans_must_be_json_booleans(api: Any, sdc: Any, value: Any) -> None:
    answer = api("post", "/ops/images", json={"name": "img", "public": value})
    assert "public" in _refused(answer, 422)["errors"]
    answer = api("post", "/ops/packages",
                 json={"name": "p", "memory": 1, "disk": 1, "active": value})
    assert "active" in _refused(answer, 422)["errors"]
    answer = api("post", "/ops/networks",
                 json={"name": "n", "subnet": "10.9.0.0/24", "public": value})
    assert "public" in _refused(answer, 422)["errors"]
    assert count(sdc, Package) == 0


def test_server_update_boolean_must_be_a_json_boolean(api: Any, sdc: Any) -> None:
    server = make_server(sdc, setup=False)
    _refused(api("put", f"/ops/servers/{server.uuid}", json={"setup": 1}), 422, "setup")
    with sdc.read() as session:
        assert session.get(Server, server.uuid).setup is False


def test_query_booleans_take_true_or_false_only(api: Any) -> None:
    assert api("get", "/ops/servers?setup=true").status_code == 200
    _refused(api("get", "/ops/servers?setup=yes"), 422, "setup")


def test_cloudapi_create_boolean_must_be_a_json_boolean(call: Any, sdc: Any,
                                                        world: World) -> None:
    answer = call(world.alice, "post", "/my/machines",
                  json={"package": "small", "image": "base-64", "firewall_enabled": 0})
    _refused(answer, 409, "firewall_enabled")
    assert count(sdc, Machine) == 0


# ---------------------------------------------------------------- bodies that say nothing


def test_server_update_without_a_body_is_422_naming_the_body(api: Any, sdc: Any) -> None:
    server = make_server(sdc, setup=False)
    for kwargs in ({}, {"json": {}}):
        answer = api("put", f"/ops/servers/{server.uuid}", **kwargs)
        assert "body" in _refused(answer, 422)["errors"]
    with sdc.read() as session:
        assert session.get(Server, server.uuid).setup is False


def test_package_create_without_a_body_names_the_missing_fields(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/packages")
    errors = _refused(answer, 422)["errors"]
    assert {"name", "memory", "disk"} <= set(errors)
    assert count(sdc, Package) == 0


# ---------------------------------------------------------------- 405


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("patch", "/ops/servers", {"GET"}),
    ("delete", "/ops/packages", {"GET", "POST"}),
    ("put", "/ops/jobs", {"GET"}),
])
def test_405_says_which_methods_are_allowed(api: Any, method: str, path: str,
                                            allowed: set[str]) -> None:
    answer = api(method, path)
    _refused(answer, 405, method.upper())
    said = {m.strip() for m in answer.headers["Allow"].split(",")}
    assert allowed <= said
    assert method.upper() not in said


def test_cloudapi_405_has_allow_too(call: Any, world: World) -> None:
    answer = call(world.alice, "put", "/my/packages")
    assert answer.status_code == 405
    assert "GET" in answer.headers["Allow"]


def test_nothing_was_queued_by_refused_requests(api: Any, sdc: Any, jobqueue: Any) -> None:
    make_package(sdc)
    api("post", "/ops/machines", json={"owner": "x", "package": "small", "image": "i",
                                       "tags": "x"})
    api("get", f"/ops/jobs?offset={INT64_OVER}")
    with sdc.read() as session:
        assert session.scalars(select(Job)).all() == []
    assert jobqueue.enqueued == []


# ---------------------------------------------------------------- every integer a request takes


def _request_schemas(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, JSON schema) of every query parameter and request body, refs followed."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if not isinstance(op, dict) or method == "parameters":
                continue
            for param in op.get("parameters", []):
                if param.get("in") == "query":
                    found.append((f"{method} {path} ?{param['name']}", param["schema"]))
            for media in op.get("requestBody", {}).get("content", {}).values():
                found.append((f"{method} {path} body", media["schema"]))
    return found


def _integers(doc: dict[str, Any], where: str, schema: Any,
              seen: set[str]) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return []
        return _integers(doc, where, doc["components"]["schemas"][name], seen | {name})
    out = [(where, schema)] if schema.get("type") == "integer" else []
    for key, inner in schema.get("properties", {}).items():
        out += _integers(doc, f"{where}.{key}", inner, seen)
    for key in ("items", "additionalProperties"):
        out += _integers(doc, f"{where}[]", schema.get(key), seen)
    return out


@pytest.mark.parametrize("document", ["/ops/openapi.json", "/--openapi.json"])
def test_every_integer_a_request_takes_is_bounded(client: Any, document: str) -> None:
    doc = client.get(document).get_json()
    integers = [found for where, schema in _request_schemas(doc)
                for found in _integers(doc, where, schema, set())]
    assert len(integers) >= 3
    unbounded = [where for where, schema in integers
                 if "maximum" not in schema or schema["maximum"] > 2**63 - 1]
    assert unbounded == []


# ---------------------------------------------------------------- strings past their columns

LONG_EMAIL = "a" * 300 + "@example.com"


def test_account_email_longer_than_its_column_is_refused(api: Any, call: Any, sdc: Any,
                                                         world: World) -> None:
    answer = api("post", "/ops/accounts", json={"login": "carol", "email": LONG_EMAIL})
    assert "email" in _refused(answer, 422)["errors"]
    _refused(call(world.alice, "post", "/my", json={"email": LONG_EMAIL}), 409, "email")
    with sdc.read() as session:
        emails = set(session.scalars(select(Account.email)))
    assert emails == {"alice@example.com", "bob@example.com", "admin@example.com"}
