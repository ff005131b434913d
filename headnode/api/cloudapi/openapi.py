"""CloudAPI's OpenAPI document, served without authentication at ``/--openapi.json`` (beside
``/--ping``): every route of the tenant API with its parameters, bodies and answers, built
with apispec from the request schemas (schemas.cloudapi) and the objects' schemas
(schemas.cloudapi_objects). ``OPERATIONS`` is the table of routes; a test checks it against
the app's URL map, so a route cannot be added without being described."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from headnode.api.openapi_fields import TAG_VALUE, describe_custom_fields
from schemas import cloudapi as requests
from schemas import cloudapi_objects as objects

OPENAPI_PATH = "/--openapi.json"
#: what any signed request may be answered besides its success: a bad request (bad JSON, a
#: NUL, an Accept-Version that matches nothing), no or a bad signature, another account's
#: path, nothing there, a bad argument (CloudAPI's 409), a body too large, too many
#: requests at once, the database or replay cache not reachable
SIGNED_ERRORS = (400, 401, 403, 404, 409, 413, 429, 503)
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 302: "Found",
               400: "Bad request", 401: "No or a bad signature", 403: "Not authorized",
               404: "Not found", 409: "Invalid or missing argument", 410: "Gone",
               413: "Body too large", 429: "Too many requests", 503: "Try again later"}

ARRAY_OF_STRINGS = {"type": "array", "items": {"type": "string"}}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
TAG_MAP = {"type": "object", "additionalProperties": TAG_VALUE}
COUNT_HEADER = {"x-resource-count": {"description": "how many match",
                                     "schema": {"type": "integer"}}}
LOCATION_HEADER = {"Location": {"description": "where the new object is",
                                "schema": {"type": "string"}}}


@dataclass(frozen=True)
class Op:
    """One route below ``/{login}`` (or at the root when ``open``)."""

    method: str
    path: str
    name: str
    status: int
    answer: Any = None
    body: Any = None
    body_required: bool = True
    query: Any = None
    extra: tuple[int, ...] = ()
    headers: Any = None
    open: bool = False
    text_too: bool = False
    #: other successes: (status, {content type: schema})
    also: tuple[tuple[int, dict[str, Any]], ...] = ()


def _meta_ops(kind: str, title: str, values: dict[str, Any]) -> tuple[Op, ...]:
    base = f"/machines/{{uuid}}/{kind}"
    return (
        Op("get", base, f"List{title}", 200, values),
        Op("post", base, f"Add{title}", 200, values, body=values),
        Op("put", base, f"Replace{title}", 200, values, body=values),
        Op("delete", base, f"DeleteAll{title}", 204),
        Op("get", f"{base}/{{key}}", f"Get{title[:-1] if kind == 'tags' else title}", 200,
           values["additionalProperties"], text_too=True),
        Op("delete", f"{base}/{{key}}", f"Delete{title[:-1] if kind == 'tags' else title}",
           204),
    )


OPERATIONS: tuple[Op, ...] = (
    Op("get", "/--ping", "Ping", 200, objects.Ping, open=True, extra=(400,)),
    Op("get", "", "GetAccount", 200, objects.Account),
    Op("post", "", "UpdateAccount", 200, objects.Account, body=requests.AccountUpdate),
    Op("get", "/keys", "ListKeys", 200, objects.Key(many=True)),
    Op("post", "/keys", "CreateKey", 201, objects.Key, body=requests.KeyCreate,
       headers=LOCATION_HEADER),
    Op("get", "/keys/{name}", "GetKey", 200, objects.Key),
    Op("delete", "/keys/{name}", "DeleteKey", 204),
    Op("get", "/datacenters", "ListDatacenters", 200, STRING_MAP),
    Op("get", "/services", "ListServices", 200, STRING_MAP),
    Op("get", "/images", "ListImages", 200, objects.Image(many=True),
       query=requests.ImageListQuery),
    Op("get", "/images/{uuid}", "GetImage", 200, objects.Image),
    Op("get", "/packages", "ListPackages", 200, objects.Package(many=True)),
    Op("get", "/packages/{ident}", "GetPackage", 200, objects.Package),
    Op("get", "/networks", "ListNetworks", 200, objects.Network(many=True)),
    Op("get", "/networks/{uuid}", "GetNetwork", 200, objects.Network),
    Op("get", "/machines", "ListMachines", 200, objects.Machine(many=True),
       query=requests.MachineListQuery, headers=COUNT_HEADER),
    Op("post", "/machines", "CreateMachine", 201, objects.Machine,
       body=requests.MachineCreate, headers=LOCATION_HEADER),
    Op("get", "/machines/{uuid}", "GetMachine", 200, objects.Machine, extra=(410,)),
    Op("post", "/machines/{uuid}", "MachineAction", 202, query=requests.MachineAction),
    Op("delete", "/machines/{uuid}", "DeleteMachine", 204),
    Op("get", "/machines/{uuid}/audit", "MachineAudit", 200, objects.AuditEntry(many=True)),
    *_meta_ops("tags", "Tags", TAG_MAP),
    *_meta_ops("metadata", "Metadata", STRING_MAP),
    Op("get", "/machines/{uuid}/nics", "ListNics", 200, objects.Nic(many=True),
       headers=COUNT_HEADER),
    Op("post", "/machines/{uuid}/nics", "AddNic", 201, objects.Nic, body=requests.NicCreate,
       extra=(302,), headers=LOCATION_HEADER),
    Op("get", "/machines/{uuid}/nics/{mac}", "GetNic", 200, objects.Nic),
    Op("delete", "/machines/{uuid}/nics/{mac}", "RemoveNic", 204),
    Op("get", "/machines/{uuid}/snapshots", "ListMachineSnapshots", 200,
       objects.Snapshot(many=True)),
    Op("post", "/machines/{uuid}/snapshots", "CreateMachineSnapshot", 201, objects.Snapshot,
       body=requests.SnapshotCreate, body_required=False, headers=LOCATION_HEADER),
    Op("get", "/machines/{uuid}/snapshots/{name}", "GetMachineSnapshot", 200,
       objects.Snapshot),
    Op("delete", "/machines/{uuid}/snapshots/{name}", "DeleteMachineSnapshot", 204),
    Op("post", "/machines/{uuid}/snapshots/{name}", "StartMachineFromSnapshot", 202),
    Op("post", "/machines/{uuid}/migrate", "Migrate", 201, objects.Migration,
       query=requests.MigrateRequest, body=requests.MigrateRequest, body_required=False,
       also=((200, {"application/json": {"schema": objects.MigrationEstimate},
                    "application/x-json-stream": {"schema": {"type": "string"}}}),)),
    Op("get", "/machines/{uuid}/migrate", "MigrateMachineEstimate", 200,
       objects.MigrationEstimate),
    Op("get", "/migrations", "ListMigrations", 200, objects.Migration(many=True)),
    Op("get", "/migrations/{uuid}", "GetMigration", 200, objects.Migration),
)

PATH_PARAMETERS = {
    "login": "an account's login, or my (the signer's own account); an operator may name "
             "another account",
    "uuid": "the object's id",
    "name": "the object's name",
    "ident": "the package's id or name",
    "mac": "the NIC's MAC address, with or without colons",
    "key": "the tag or metadata key",
}


def full_path(op: Op) -> str:
    return op.path if op.open else f"/{{login}}{op.path}"


def _content(schema: Any, text_too: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if text_too:
        content["text/plain"] = {"schema": {"type": "string"}}
    return content


def _responses(op: Op) -> dict[str, Any]:
    success: dict[str, Any] = {"description": STATUS_TEXT[op.status]}
    if op.answer is not None:
        success["content"] = _content(op.answer, op.text_too)
    if op.headers:
        success["headers"] = op.headers
    responses: dict[str, Any] = {str(op.status): success}
    for status, content in op.also:
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": content}
    for status in (*op.extra, *(() if op.open else SIGNED_ERRORS)):
        answer: dict[str, Any] = {"description": STATUS_TEXT[status]}
        if status == 302:
            answer["headers"] = LOCATION_HEADER
        elif status == 410:
            answer["content"] = _content(objects.Machine)
        else:
            answer["content"] = _content("CloudError")
        responses[str(status)] = answer
    return responses


def _operation(op: Op) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": op.name, "summary": op.name,
                                 "responses": _responses(op)}
    parameters: list[Any] = [name for name in PATH_PARAMETERS  # apispec: a name is a $ref
                             if f"{{{name}}}" in full_path(op)]
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"required": op.body_required, "content": _content(op.body)}
    if op.open:
        operation["security"] = []
    return operation


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The document (built once; it depends on nothing but the code)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="SDC CloudAPI", version=requests.API_VERSIONS[-1], openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "The tenant API, CloudAPI-compatible. Requests are signed "
                             "(HTTP Signature with one of the account's SSH keys, as the "
                             "triton CLI signs them); Accept-Version picks the API version "
                             f"({', '.join(requests.API_VERSIONS)})."},
        security=[{"signature": []}],
    )
    describe_custom_fields(plugin)
    spec.components.security_scheme("signature", {
        "type": "http", "scheme": "signature",
        "description": 'Authorization: Signature keyId="/LOGIN/keys/FINGERPRINT",'
                       'algorithm="rsa-sha256",headers="date",signature="..." with a '
                       "Date within 5 minutes"})
    spec.components.schema("CloudError", schema=objects.CloudError)
    for name, description in PATH_PARAMETERS.items():
        spec.components.parameter(name, "path", {
            "description": description, "required": True,
            "schema": {"type": "string", "minLength": 1}})
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(full_path(op), {})[op.method] = _operation(op)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
