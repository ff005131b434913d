"""The CloudAPI blueprints, assembled (see the package's docstring)."""


from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from headnode.api.cloudapi import (
    account,
    catalog,
    machines,
    metadata,
    migrations,
    nics,
    openapi,
    snapshots,
)
from headnode.api.cloudapi.common import (
    CloudApiError,
    add_headers,
    authenticate_request,
    check_version,
    on_cloudapi_error,
    on_input_error,
    on_service_error,
    resolve_tenant,
)
from headnode.services.errors import ServiceError
from schemas.cloudapi import API_VERSIONS, CloudApiInputError

CHILDREN = (account.blp, catalog.blp, machines.blp, metadata.blp, nics.blp,
            snapshots.blp, migrations.blp)


def _with_errors(bp: Blueprint) -> Blueprint:
    bp.register_error_handler(CloudApiError, on_cloudapi_error)
    bp.register_error_handler(CloudApiInputError, on_input_error)
    bp.register_error_handler(ServiceError, on_service_error)
    bp.after_request(add_headers)
    return bp


def ping_blueprint() -> Blueprint:
    bp = _with_errors(Blueprint("cloudapi_ping", __name__))

    @bp.get("/--ping")
    def ping() -> Any:
        refused = check_version()
        if refused:
            return refused
        return jsonify({"ping": "pong", "cloudapi": {"versions": list(API_VERSIONS)}})

    @bp.get(openapi.OPENAPI_PATH)
    def openapi_document() -> Any:
        return jsonify(openapi.document())

    return bp


def tenant_blueprint() -> Blueprint:
    parent = _with_errors(Blueprint("cloudapi", __name__, url_prefix="/<login>"))

    @parent.url_value_preprocessor
    def _take_login(_endpoint: str | None, values: dict[str, Any] | None) -> None:
        from flask import g

        g.path_login = (values or {}).pop("login", None)

    @parent.before_request
    def _authenticate() -> tuple[Response, int] | None:
        from flask import g

        refused = authenticate_request()
        if refused:
            return refused
        resolve_tenant(g.path_login)
        return None

    for child in CHILDREN:
        parent.register_blueprint(child)
    return parent


def register(app: Any) -> None:
    app.register_blueprint(ping_blueprint())
    app.register_blueprint(tenant_blueprint())
