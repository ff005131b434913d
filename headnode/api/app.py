"""The head node's HTTP app: ``create_app()`` is gunicorn's target.

Every error leaves as ``{"code", "message"}`` (plus ``errors`` for validation, ``reasons``
for capacity), whatever raised it: a service, webargs, werkzeug's routing or a bug.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
import uuid as uuidlib
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask_smorest import Api
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from headnode import console
from headnode.api import nodes
from headnode.api.cloudapi import blueprints as cloudapi
from headnode.api.errors import database_unavailable, retry_headers
from headnode.api.input_guard import refuse_hostile_input
from headnode.api.openapi_fields import describe_custom_fields
from headnode.api.ops import (
    accounts,
    agent_bundles,
    images,
    machines,
    packages,
    ping,
    servers,
)
from headnode.api.ops import doctor as doctor_views
from headnode.api.ops import jobs as job_views
from headnode.api.ops import keys as account_keys
from headnode.api.ops import migrations as migration_views
from headnode.api.ops import networks as network_views
from headnode.api.ops import nics as nic_views
from headnode.api.ops import placement as placement_views
from headnode.config import HeadnodeSettings, get_settings
from headnode.services.context import JobQueue, ServiceContext
from headnode.services.errors import ServiceError
from schemas.ops import Error
from workflows.registry import load_all

log = logging.getLogger(__name__)

OPS_PREFIX = "/ops/"
# Open so load balancers and clients can probe, and so the document can be fetched to learn
# how to authenticate.
OPEN_PATHS = frozenset({"/ops/ping", "/ops/openapi.json"})
METRICS_PATH = "/metrics"
MAX_BODY_BYTES = 1 << 20
# A client's request id is echoed only if it is short and plain, so it is safe in logs.
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

BLUEPRINT_MODULES = (ping, servers, machines, job_views, packages, images, accounts, nodes,
                     placement_views,
                     network_views, nic_views, account_keys, doctor_views, agent_bundles,
                     migration_views)

# CloudAPI's names for the HTTP errors werkzeug raises on its own.
HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "ResourceNotFound",
    405: "BadMethod",
    406: "NotAcceptable",
    409: "Conflict",
    413: "RequestTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationFailed",
    429: "RequestThrottled",
    500: "InternalError",
    503: "ServiceUnavailable",
}

# Module-level: prometheus_client's registry is per process, and tests build many apps.
REQUESTS = Counter("sdc_api_requests_total", "API requests answered",
                   ["method", "endpoint", "status"])
LATENCY = Histogram("sdc_api_request_seconds", "API request latency", ["method", "endpoint"])


def scrape() -> bytes:
    """The metrics text: every gunicorn worker's, added up, when `sdc headnode serve` runs
    them in prometheus_client's multiprocess mode (each worker alone otherwise: a scrape
    would see whichever worker took it)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs' nested ``{location: {field: [msg] | {sub: ...}}}`` -> ``{"a.b": [msg]}``."""
    if isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            return {prefix or "body": [str(m) for m in messages]}
        out: dict[str, list[str]] = {}
        for i, item in enumerate(messages):
            out.update(flatten_messages(item, f"{prefix}.{i}" if prefix else str(i)))
        return out
    if isinstance(messages, dict):
        out = {}
        for key, value in messages.items():
            # marshmallow's whole-object errors ("Invalid input type.") concern the body
            name = "body" if key == "_schema" and not prefix else str(key)
            if key == "_schema" and prefix:
                name = prefix
            elif prefix:
                name = f"{prefix}.{key}"
            for field, msgs in flatten_messages(value, name).items():
                out.setdefault(field, []).extend(msgs)
        return out
    return {prefix or "body": [str(messages)]}


class OpsApi(Api):
    ERROR_SCHEMA = Error

    def handle_http_exception(self, error: HTTPException) -> Any:  # type: ignore[override]
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        headers = data.get("headers") or {}
        if status == 422 and "messages" in data:
            # webargs nests by location (json, query); the field names are what matter.
            errors: dict[str, list[str]] = {}
            for location_errors in data["messages"].values():
                for field, msgs in flatten_messages(location_errors).items():
                    errors.setdefault(field, []).extend(msgs)
            body = {
                "code": "ValidationFailed",
                "message": "invalid fields: " + ", ".join(sorted(errors)),
                "errors": errors,
            }
            return body, 422, headers
        if status >= 500:
            original = getattr(error, "original_exception", None)
            if original is not None:
                return internal_error(original)
        code = HTTP_CODES.get(status, "".join(w.capitalize() for w in error.name.split()))
        message = data.get("message") or error.description or error.name
        if status == 404 and request.path.startswith(OPS_PREFIX) and not data.get("message"):
            message = f"{request.path} does not exist"
        if status == 405:
            message = f"{request.method} is not allowed on {request.path}"
            # RFC 9110: a 405 says what is allowed
            allowed = getattr(error, "valid_methods", None) or []
            headers = {**headers, "Allow": ", ".join(allowed)}
        return {"code": code, "message": message}, status, headers


def service_error(error: ServiceError) -> tuple[dict[str, Any], int, dict[str, str]]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    for key in ("errors", "reasons"):
        if key in error.details:
            body[key] = error.details[key]
    return body, error.status, retry_headers(error)


def internal_error(error: BaseException) -> tuple[dict[str, Any], int]:
    request_id = g.get("request_id", "-")
    log.error("request %s %s %s failed", request_id, request.method, request.path,
              exc_info=error)
    return {
        "code": "InternalError",
        "message": f"internal error (request id {request_id})",
        "request_id": request_id,
    }, 500


def database_error(
    error: Exception,
) -> tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]:
    """503 with Retry-After while the database cannot be used (a restart, an outage): the
    client may send the same request again. Any other database error is a bug (500)."""
    unavailable = database_unavailable(error)
    if unavailable is None:
        return internal_error(error)
    log.warning("request %s %s %s: database unavailable: %s", g.get("request_id", "-"),
                request.method, request.path, error.__class__.__name__)
    return service_error(unavailable)


def token_id(token: str) -> str:
    """A name for the token that is safe to store on jobs: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def unauthorized(message: str) -> tuple[Response, int]:
    response = jsonify({"code": "Unauthorized", "message": message})
    response.headers["WWW-Authenticate"] = 'Bearer realm="sdc-ops"'
    return response, 401


def create_app(
    settings: HeadnodeSettings | None = None, jobs: JobQueue | None = None
) -> Flask:
    settings = settings or get_settings()
    load_all()  # the services start jobs by workflow name
    if jobs is None:
        # Imported here: the Celery side is not needed to build an app around another queue.
        from workflows.dispatch import CeleryJobQueue

        jobs = CeleryJobQueue.for_settings(settings)

    app = Flask("headnode")
    app.config.update(
        API_TITLE="SDC operator API",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/ops",
        OPENAPI_JSON_PATH="openapi.json",
        # Bodies are small JSON documents (the largest is an image manifest).
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.extensions["sdc"] = ServiceContext(settings, jobs)
    # Resolved once: the stored token is read (or made) at start, not per request.
    operator_token = settings.resolved_operator_token()
    operator_caller = {"type": "operator", "token_id": token_id(operator_token)}

    api = OpsApi(app, spec_kwargs={"components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"}}}, "security": [{"bearer": []}]})
    describe_custom_fields(api.ma_plugin)
    for module in BLUEPRINT_MODULES:
        api.register_blueprint(module.blp)
    cloudapi.register(app)  # the tenant API: /--ping, /:login/...
    console.register(app, settings)  # the browser's: /console/...

    @app.before_request
    def _start() -> Any:
        g.started = time.monotonic()
        offered = request.headers.get("x-request-id", "")
        g.request_id = offered if CLIENT_REQUEST_ID.match(offered) else str(uuidlib.uuid4())

        path = request.path
        if (path.startswith(OPS_PREFIX) and path.rstrip("/") not in OPEN_PATHS
                or path == METRICS_PATH):
            scheme, _, offered_token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not offered_token:
                return unauthorized("an operator token is required (Authorization: Bearer)")
            if not hmac.compare_digest(offered_token.strip().encode(), operator_token.encode()):
                return unauthorized("the operator token is not valid")
            g.caller = dict(operator_caller)

        return refuse_hostile_input()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["x-request-id"] = g.get("request_id") or str(uuidlib.uuid4())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        if "started" in g:
            LATENCY.labels(request.method, endpoint).observe(time.monotonic() - g.started)
        return response

    app.register_error_handler(ServiceError, service_error)
    app.register_error_handler(Exception, internal_error)
    app.register_error_handler(DBAPIError, database_error)
    app.register_error_handler(PoolTimeout, database_error)

    @app.get(METRICS_PATH)
    def _metrics() -> Response:
        # The operator token only (checked with /ops/'s): the counts tell who uses what.
        return Response(scrape(), mimetype=CONTENT_TYPE_LATEST)

    return app
