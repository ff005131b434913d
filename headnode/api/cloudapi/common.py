"""What every CloudAPI request shares: who is calling (HTTP Signature, checked before any
view), whose objects the path names (``/:login/...``, ``my`` = the caller), the version
headers, and CloudAPI's error bodies ``{"code", "message"}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, g, has_request_context, jsonify, request

from headnode.api.cloudapi import versions
from headnode.api.errors import retry_headers
from headnode.auth.httpsig import AuthError, authenticate, request_target
from headnode.services import accounts
from headnode.services.context import ServiceContext
from headnode.services.errors import ServiceError
from schemas.cloudapi import API_VERSIONS, CloudApiInputError
from schemas.ops import RESERVED_LOGINS

SERVER_NAME = "sdc-cloudapi/0.1.0"
MY = "my"
INPUT_ERROR_STATUS = 409  # CloudAPI answers InvalidArgument / MissingParameter with 409

#: service error codes -> CloudAPI's (same status unless given)
SERVICE_CODES = {"MachineBusy": "InvalidState", "ValidationFailed": "InvalidArgument"}
STATUS_OVERRIDES = {"InvalidArgument": INPUT_ERROR_STATUS}


class CloudApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Tenant:
    """The account whose objects a request may touch (the signer's, or the one an operator
    acts as)."""

    uuid: str
    login: str


def ctx() -> ServiceContext:
    service_context: ServiceContext = current_app.extensions["sdc"]
    return service_context


def tenant() -> Tenant:
    t: Tenant = g.tenant
    return t


def job_caller() -> dict[str, Any]:
    caller: dict[str, Any] = g.job_caller
    return caller


def error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"code": code, "message": message}), status


# --------------------------------------------------------------------------- versions


def negotiate_version(offered: str | None) -> str | None:
    """The newest of our API versions in the client's semver range (``~9||~8``, ``~7.2``,
    ``*``); no header means the newest. None when the range holds none of ours; raises
    ``versions.InvalidRange`` when the header is not a range."""
    if not offered or not offered.strip():
        return API_VERSIONS[-1]
    return versions.newest_satisfying(API_VERSIONS, offered)


def requested_version() -> str:
    """The API version the current request was answered with (the newest outside one)."""
    if has_request_context():
        return str(g.get("api_version") or API_VERSIONS[-1])
    return API_VERSIONS[-1]


# --------------------------------------------------------------------------- hooks


def check_version() -> tuple[Response, int] | None:
    offered = request.headers.get("Accept-Version") or request.headers.get("Api-Version")
    supported = ", ".join(API_VERSIONS)
    try:
        g.api_version = negotiate_version(offered)
    except versions.InvalidRange:
        g.api_version = API_VERSIONS[-1]
        return error(400, "InvalidVersion",
                     f"Accept-Version {offered!r} is not a semver range (such as ~9, 8.x, "
                     f">=7 or 7.2.0); supported versions: {supported}")
    if g.api_version is None:
        g.api_version = API_VERSIONS[-1]
        return error(400, "InvalidVersion",
                     f"Accept-Version {offered!r} matches none of the supported versions "
                     f"{supported}")
    return None


def authenticate_request() -> tuple[Response, int] | None:
    """Before every CloudAPI view: the version, the signature, and whose path this is
    (one's own, or another account's for an operator acting as it; else 403)."""
    refused = check_version()
    if refused:
        return refused
    try:
        caller = authenticate(ctx(), request.method, request_target(request.environ),
                              request.headers, body=request.get_data(cache=True))
    except AuthError as exc:
        response, status = error(401, exc.code, exc.message)
        response.headers["WWW-Authenticate"] = 'Signature realm="cloudapi"'
        return response, status
    g.caller = caller
    return None


def resolve_tenant(path_login: str) -> None:
    """``g.tenant``: the account whose objects the request may touch; ``g.job_caller``: who
    acted, as jobs record it (the key, and the operator when acting as the account)."""
    caller = g.caller
    if path_login.lower() in RESERVED_LOGINS - {MY}:
        raise CloudApiError(404, "ResourceNotFound", f"{path_login} does not exist")
    account = accounts.get_account(ctx(), caller.target_uuid)
    g.tenant = Tenant(account.uuid, account.login)
    g.job_caller = {
        **caller.as_job_caller(),
        "type": "signature",
        "keyId": f"/{caller.login}/keys/{caller.key_fingerprint}",
        "ip": request.remote_addr or "",
    }


def add_headers(response: Response) -> Response:
    response.headers["Api-Version"] = g.get("api_version") or API_VERSIONS[-1]
    response.headers["Server"] = SERVER_NAME
    request_id = g.get("request_id")
    if request_id:
        response.headers["x-request-id"] = request_id
        response.headers["Request-Id"] = request_id
    return response


# --------------------------------------------------------------------------- errors


def on_cloudapi_error(exc: CloudApiError) -> tuple[Response, int]:
    return error(exc.status, exc.code, exc.message)


def on_input_error(exc: CloudApiInputError) -> tuple[Response, int]:
    message = exc.message if exc.field in exc.message else f"{exc.field}: {exc.message}"
    return error(INPUT_ERROR_STATUS, exc.code, message)


def on_service_error(exc: ServiceError) -> tuple[Response, int, dict[str, str]]:
    code = SERVICE_CODES.get(exc.code, exc.code)
    status = STATUS_OVERRIDES.get(code, exc.status)
    body: dict[str, Any] = {"code": code, "message": exc.message}
    if "reasons" in exc.details:
        body["reasons"] = exc.details["reasons"]
    return jsonify(body), status, retry_headers(exc)


def body_or_query() -> dict[str, Any]:
    """CloudAPI takes parameters from the query string, a form or a JSON body, merged."""
    data: dict[str, Any] = dict(request.args.items())
    if request.form:
        data.update(request.form.items())
    payload = request.get_json(silent=True) if request.data else None
    if payload is not None:
        if not isinstance(payload, dict):
            raise CloudApiError(400, "BadRequest", "the body must be a JSON object")
        data.update(payload)
    return data


def json_body() -> dict[str, Any]:
    payload = request.get_json(silent=True) if request.data else {}
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise CloudApiError(400, "BadRequest", "the body must be a JSON object")
    merged: dict[str, Any] = dict(request.form.items())
    merged.update(payload)
    return merged
