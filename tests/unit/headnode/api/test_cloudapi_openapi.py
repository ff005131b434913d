"""CloudAPI's OpenAPI document (issue 14, item 7): served open at /--openapi.json, and it
describes every CloudAPI route the app has, no more and no less."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from headnode.api.cloudapi.openapi import OPENAPI_PATH

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _app_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("cloudapi") or rule.rule == OPENAPI_PATH:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - IGNORED_METHODS:
            routes.add((method.lower(), path))
    return routes


def test_document_is_open_and_is_openapi(client: Any) -> None:
    answer = client.get(OPENAPI_PATH)
    assert answer.status_code == 200
    doc = answer.get_json()
    assert doc["openapi"] == "3.0.3"
    assert doc["info"]["title"] == "SDC CloudAPI"
    assert doc["components"]["securitySchemes"]["signature"]["scheme"] == "signature"
    assert doc["paths"]["/--ping"]["get"]["security"] == []


def test_document_describes_exactly_the_app_routes(app: Flask, client: Any) -> None:
    doc = client.get(OPENAPI_PATH).get_json()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops
                  if method != "parameters"}
    assert documented == _app_routes(app)


def test_bodies_and_queries_come_from_the_request_schemas(client: Any) -> None:
    doc = client.get(OPENAPI_PATH).get_json()
    create = doc["paths"]["/{login}/machines"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MachineCreate"}
    schema = doc["components"]["schemas"]["MachineCreate"]
    assert set(schema["required"]) == {"image", "package"}
    assert schema["properties"]["firewall_enabled"] == {"type": "boolean"}
    assert schema["properties"]["tags"]["additionalProperties"]["oneOf"]
    listing = doc["paths"]["/{login}/machines"]["get"]
    query = {p["name"]: p["schema"] for p in listing["parameters"] if p.get("in") == "query"}
    assert query["memory"]["maximum"] == 2**31 - 1
    assert query["limit"] == {"type": "integer", "default": 1000, "minimum": 1, "maximum": 1000}
    assert listing["responses"]["200"]["headers"]["x-resource-count"]
    assert {"401", "403", "404", "409"} <= set(listing["responses"])
