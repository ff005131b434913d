"""Wire formats of the tenant API (CloudAPI-compatible): request bodies and query strings.

CloudAPI names a bad request by its first failing field: ``MissingParameter`` when a required
one is absent, ``InvalidArgument`` otherwise. ``first_error`` turns marshmallow's messages into
that pair. Prefixed inputs (``tag.NAME``, ``metadata.NAME``) are gathered into plain dicts
before validation, so the schemas see ``tags`` and ``metadata``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
)

from schemas.nics import SPOOF_FLAGS, ipv4_address
from schemas.ops import ALIAS_PATTERN, MAX_EMAIL, NO_COMMA, TagValue
from schemas.wire import BoundedInteger, JsonBoolean, QueryBoolean

#: CloudAPI's API versions this server speaks, newest last (CloudAPI 7 bumped the API
#: version at each minor release, 8 and 9 only at the major one).
API_VERSIONS = ("7.0.0", "7.1.0", "7.2.0", "7.3.0", "8.0.0", "9.0.0")
MACHINE_ACTIONS = ("start", "stop", "reboot", "resize", "rename")
#: CloudAPI's (deprecated) machine types
MACHINE_TYPES = ("smartmachine", "virtualmachine")
#: CloudAPI's machine states, as shown to tenants
CLOUDAPI_STATES = ("provisioning", "running", "stopped", "failed", "deleted", "offline")
MAX_LIMIT = 1000
MISSING = "Missing data for required field."
#: an affinity rule: ``instance==web``, ``role!=~db*``, ``container!=/^foo/``
AFFINITY_PATTERN = r"^[^=!~\s]+(==|!=)~?.+$"


def gather_prefixed(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"tag.role": "db", "name": "x"}`` -> ``{"role": "db"}`` (the prefixed keys, popped)."""
    out = {}
    for key in [k for k in data if k.startswith(prefix)]:
        name = key[len(prefix):]
        value = data.pop(key)
        if name:
            out[name] = value
    return out


def first_error(messages: Any, prefix: str = "") -> tuple[str, str, str]:
    """(code, field, message) of the first failing field in marshmallow's messages."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = str(key) if key != "_schema" else (prefix or "body")
            field = f"{prefix}.{name}" if prefix and key != "_schema" else name
            return first_error(value, field)
    if isinstance(messages, list | tuple) and messages:
        if all(isinstance(m, str) for m in messages):
            text = str(messages[0])
            code = "MissingParameter" if text == MISSING else "InvalidArgument"
            verb = "is missing" if code == "MissingParameter" else f"is invalid: {text}"
            return code, prefix or "body", f"{prefix or 'body'} {verb}"
        return first_error(messages[0], prefix)
    return "InvalidArgument", prefix or "body", f"{prefix or 'body'} is invalid"


class Strict(Schema):
    class Meta:
        unknown = RAISE


class MachineCreate(Strict):
    name = fields.String(validate=validate.Regexp(ALIAS_PATTERN))
    package = fields.String(required=True, validate=validate.Length(min=1, max=128))
    image = fields.String(required=True, validate=validate.Length(min=1, max=128))
    networks = fields.List(fields.Raw(), validate=validate.Length(max=32))
    affinity = fields.List(fields.String(validate=validate.Regexp(AFFINITY_PATTERN)),
                           validate=validate.Length(max=32))
    locality = fields.Dict()
    firewall_enabled = JsonBoolean()
    deletion_protection = JsonBoolean()
    tags = fields.Dict(keys=fields.String(validate=[validate.Length(min=1, max=128),
                                                    NO_COMMA]),
                       values=TagValue())
    metadata = fields.Dict(keys=fields.String(validate=[validate.Length(min=1, max=128),
                                                        NO_COMMA]),
                           values=fields.String(validate=validate.Length(max=65536)))

    @pre_load
    def _gather(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, prefix in (("tags", "tag."), ("metadata", "metadata.")):
            gathered = gather_prefixed(data, prefix)
            if not gathered:
                continue
            given = data.get(name, {})
            if not isinstance(given, dict):
                raise ValidationError("must be an object", name)
            data[name] = {**given, **gathered}
        return data

    @validates("networks")
    def _networks(self, value: list[Any], **_: Any) -> None:
        for item in value:
            ident = item.get("ipv4_uuid") if isinstance(item, dict) else item
            if not isinstance(ident, str) or not ident:
                raise ValidationError("each network is a network id or {ipv4_uuid: id}")


class MachineAction(Schema):
    """``POST /:login/machines/:id``: query string and body merged, as restify does."""

    class Meta:
        unknown = EXCLUDE

    action = fields.String(required=True, validate=validate.OneOf(MACHINE_ACTIONS))
    package = fields.String(validate=validate.Length(min=1, max=128))
    name = fields.String(validate=validate.Regexp(ALIAS_PATTERN))


#: Migrate's actions: the phases, an estimate, and ``watch`` (the progress as a stream)
MIGRATION_ACTIONS = ("begin", "sync", "switch", "automatic", "abort", "finalize", "rollback",
                     "estimate", "watch")


class MigrateRequest(Schema):
    """``POST /:login/machines/:id/migrate``: query string and body merged. ``affinity``
    (begin and automatic only) is one rule or a list of them, as for CreateMachine."""

    class Meta:
        unknown = EXCLUDE

    action = fields.String(required=True, validate=validate.OneOf(MIGRATION_ACTIONS))
    affinity = fields.List(fields.String(validate=validate.Regexp(AFFINITY_PATTERN)),
                           validate=validate.Length(max=32))

    @pre_load
    def _one_rule(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("affinity"), str):
            data = {**data, "affinity": [data["affinity"]]}
        return data

    @post_load
    def _placing_only(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("affinity") and data["action"] not in ("begin", "automatic"):
            raise ValidationError("only with action begin or automatic", "affinity")
        return data


class MachineListQuery(Schema):
    """ListMachines' filters (``tag.NAME`` are taken out before); ``credentials`` is
    accepted and has nothing to add (no machine here has generated credentials)."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String()
    state = fields.String(validate=validate.OneOf(CLOUDAPI_STATES))
    image = fields.String()
    package = fields.String()
    memory = BoundedInteger(strict=False)
    type = fields.String(validate=validate.OneOf(MACHINE_TYPES))
    brand = fields.String(validate=validate.Length(min=1, max=16))
    #: include destroyed machines: true, or those destroyed in the last N minutes
    tombstone = fields.String(validate=validate.Regexp(r"^(true|false|[0-9]{1,7})$",
                                                       error="true, false or minutes"))
    docker = QueryBoolean()
    #: ``tags=*``: every machine with a tag (CloudAPI then ignores every other filter)
    tags = fields.String(validate=validate.Equal("*"))
    credentials = QueryBoolean()
    limit = BoundedInteger(load_default=MAX_LIMIT, minimum=1, maximum=MAX_LIMIT, strict=False)
    offset = BoundedInteger(load_default=0, strict=False)


class ImageListQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String()
    os = fields.String()
    version = fields.String()
    public = QueryBoolean()
    state = fields.String()
    owner = fields.String()
    type = fields.String()


class KeyCreate(Strict):
    name = fields.String(validate=validate.Length(min=1, max=128))
    key = fields.String(required=True, validate=validate.Length(min=1, max=16384))


class AccountUpdate(Strict):
    email = fields.Email(validate=validate.Length(max=MAX_EMAIL))


class SnapshotCreate(Strict):
    name = fields.String(validate=validate.Regexp(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$"))


#: NIC fields only an operator may set (vmadm's anti-spoofing settings): the ops API has them
OPERATOR_NIC_FIELDS = (*SPOOF_FLAGS, "allowed_ips")


class NicCreate(Strict):
    """AddNic: ``network`` is a network id (or name), or since CloudAPI 8.5 a network
    object ``{ipv4_uuid, ipv4_ips: [one address]}`` (what ``triton inst nic create INST
    ipv4_uuid=... ipv4_ips=...`` sends); ``ip`` asks for an address with a plain id. The
    anti-spoofing settings are refused here, naming the field: operators set them."""

    network = fields.Raw(required=True)
    ip = fields.String(validate=ipv4_address)
    primary = QueryBoolean()

    @pre_load
    def _no_operator_fields(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            for name in OPERATOR_NIC_FIELDS:
                if name in data:
                    raise ValidationError("only an operator can set this (sdc vm nic "
                                          "update)", name)
        return data

    @validates("network")
    def _network(self, value: Any, **_: Any) -> None:
        if isinstance(value, str):
            if not 1 <= len(value) <= 128:
                raise ValidationError("a network id or name")
            return
        if not isinstance(value, dict) or not isinstance(value.get("ipv4_uuid"), str) \
                or not value["ipv4_uuid"]:
            raise ValidationError("a network id, or {ipv4_uuid: id, ipv4_ips: [address]}")
        if set(value) - {"ipv4_uuid", "ipv4_ips"}:
            raise ValidationError(f"unknown keys {sorted(set(value) - {'ipv4_uuid', 'ipv4_ips'})}")
        ips = value.get("ipv4_ips", [])
        if not isinstance(ips, list) or len(ips) > 1 or not all(isinstance(i, str) for i in ips):
            raise ValidationError("ipv4_ips holds one address")
        for ip in ips:
            ipv4_address(ip)

    @validates("primary")
    def _primary(self, value: bool, **_: Any) -> None:
        if value:
            raise ValidationError("an added NIC cannot be the primary one")

    @post_load
    def _flatten(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """-> ``{"network": ident, "ip": address or None}``."""
        network, ip = data["network"], data.get("ip")
        if isinstance(network, dict):
            ips = network.get("ipv4_ips") or []
            if ip is not None and ips and ips[0] != ip:
                raise ValidationError("differs from network.ipv4_ips", "ip")
            network, ip = network["ipv4_uuid"], ip or (ips[0] if ips else None)
        return {"network": network, "ip": ip}


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate; a failure is raised as ``CloudApiInputError`` with CloudAPI's code."""
    try:
        result: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        code, field, message = first_error(exc.messages)
        raise CloudApiInputError(code, field, message) from exc
    return result


class CloudApiInputError(Exception):
    """A bad request: CloudAPI answers 409 with ``InvalidArgument`` or ``MissingParameter``."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


MAX_PAIRS = 256
MAX_KEY = 128
MAX_VALUE = 65536
#: metadata CloudAPI keeps for itself
RESERVED_METADATA = frozenset({"credentials"})


def load_pairs(data: Any, kind: str) -> dict[str, Any]:
    """A tags body (string, number or boolean values) or a metadata body (string values)."""
    if not isinstance(data, dict):
        raise CloudApiInputError("InvalidArgument", "body", "the body must be a JSON object")
    if len(data) > MAX_PAIRS:
        raise CloudApiInputError("InvalidArgument", "body", f"at most {MAX_PAIRS} {kind}")
    allowed: tuple[type, ...] = (str, int, float, bool) if kind == "tags" else (str,)
    for key, value in data.items():
        if not key or len(key) > MAX_KEY:
            raise CloudApiInputError("InvalidArgument", key or "key",
                                     f"{kind} names are 1 to {MAX_KEY} characters")
        if "," in key:  # vmadm removes keys named in a comma-separated list
            raise CloudApiInputError("InvalidArgument", key, f"{kind} names cannot hold a comma")
        if kind == "metadata" and key in RESERVED_METADATA:
            raise CloudApiInputError("InvalidArgument", key, f"{key} cannot be set")
        if not isinstance(value, allowed) or (isinstance(value, str) and len(value) > MAX_VALUE):
            what = "a string, number or boolean" if kind == "tags" else "a string"
            raise CloudApiInputError("InvalidArgument", key, f"{key} must be {what}")
    return dict(data)
