"""Wire formats of the operator API (``/ops/``), shared by the API, its OpenAPI document and
the ``sdc`` CLI.

Request schemas reject unknown fields (marshmallow's ``RAISE``) so that a misspelt field is
an error naming it rather than a silently ignored option. Response schemas dump whatever
the services return (plain dicts or model objects) and never validate on the way out.
"""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from schemas.agent import SYSINFO_VERSION, ImageInitSchema
from schemas.image_manifest import FILE_FORMATS, name_problem, version_problem
from schemas.ssh import host_field, port_field, user_field
from schemas.wire import (
    INT64_MAX,
    BoundedFloat,
    BoundedInteger,
    JsonBoolean,
    QueryBoolean,
)

#: API path segments a tenant login must not take, or ``/:login/...`` would shadow them.
RESERVED_LOGINS = frozenset({"ops", "console", "my", "admin-api", "--ping", "docs", "openapi",
                             "images"})

LOGIN_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_.@-]{2,63}$"
#: what the accounts table keeps of an email address
MAX_EMAIL = 256
ALIAS_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,188}$"

MACHINE_STATES = ("provisioning", "running", "stopped", "failed", "destroyed", "unknown")
MACHINE_ACTIONS = ("start", "stop", "reboot", "resize", "rename")
#: the query parameter each action needs besides ``action``
ACTION_PARAMS = {"resize": "package", "rename": "alias"}
SNAPSHOT_STATES = ("queued", "created", "failed", "deleted")
JOB_EXECUTIONS = ("queued", "running", "succeeded", "failed", "canceled")
#: a job in one of these has ended: nothing more runs, and it cannot be canceled
JOB_FINISHED = ("succeeded", "failed", "canceled")
SERVER_STATUSES = ("running", "unknown")
# IMGAPI's vocabularies for manifests
IMAGE_STATES = ("active", "unactivated", "disabled", "creating", "failed")
IMAGE_TYPES = ("zone-dataset", "lx-dataset", "zvol", "docker", "other")
IMAGE_OSES = ("smartos", "linux", "windows", "bsd", "illumos", "other")

MAX_PAGE = 1000
#: a job a year past its deadline is stuck whatever one asks
MAX_STUCK_AFTER = 365 * 86400.0


#: a tag or metadata key: no comma, as vmadm removes keys named in a comma-separated list
NO_COMMA = validate.Regexp(r"^[^,]*$", error="a key must not hold a comma")

class RequestSchema(Schema):
    class Meta:
        unknown = RAISE


class ChangeSchema(RequestSchema):
    """A change of some fields of an object: a body that names none is an error, not a
    change that silently does nothing."""

    @validates_schema
    def _names_something(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("give at least one of " + ", ".join(self.fields), "body")


class TagValue(fields.Field):
    """A tag value: string, number or boolean (CloudAPI tags), nothing nested."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str | int | float | bool):
            return value
        raise ValidationError("must be a string, number or boolean")


# ---------------------------------------------------------------------------- errors


class Error(Schema):
    """Every error answer: ``code`` and ``message``, plus details some errors carry."""

    code = fields.String(required=True, metadata={"description": "e.g. ResourceNotFound"})
    message = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "failing field -> messages (validation errors only)"},
    )
    reasons = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "servers rejected per reason (InsufficientCapacity only)"},
    )
    request_id = fields.String(metadata={"description": "for InternalError: find it in logs"})


# ---------------------------------------------------------------------------- servers


class Server(Schema):
    uuid = fields.String()
    hostname = fields.String()
    status = fields.String(metadata={"enum": list(SERVER_STATUSES)})
    setup = fields.Boolean()
    reserved = fields.Boolean()
    maintenance = fields.Boolean(metadata={"description": "takes no new machines"})
    headnode = fields.Boolean()
    backend = fields.String()
    traits = fields.Dict()
    ram_mb = fields.Integer()
    cpus = fields.Integer()
    disk_mb = fields.Integer()
    ram_inflight_mb = fields.Integer()
    ram_committed_mb = fields.Integer()
    disk_inflight_mb = fields.Integer()
    disk_committed_mb = fields.Integer()
    machine_count = fields.Integer()
    pool_used_mb = fields.Integer()
    last_heartbeat = fields.Float(allow_none=True, metadata={"description": "unix time"})
    ssh_host = fields.String(allow_none=True, metadata={"description": "null: no SSH"})
    ssh_port = fields.Integer()
    ssh_user = fields.String()
    agent_prefix = fields.String(allow_none=True, metadata={
        "description": "where `sdc server setup` installed the agent on the node (null: /)"})
    agent_version = fields.Method("_agent_version", allow_none=True, metadata={
        "description": "the agent version the node's last sysinfo gave"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    def _agent_version(self, server: Any) -> str | None:
        # the whole sysinfo stays out of the list (it is large); its version is wanted
        sysinfo = server.get("sysinfo") if isinstance(server, dict) \
            else getattr(server, "sysinfo", None)
        version = (sysinfo or {}).get(SYSINFO_VERSION)
        return str(version) if version else None


class ServerUpdate(ChangeSchema):
    setup = JsonBoolean()
    reserved = JsonBoolean()
    maintenance = JsonBoolean(metadata={"description": "in maintenance: no new machines, "
                                        "its own keep running"})
    traits = fields.Dict(keys=fields.String())
    ssh_host = host_field()
    ssh_port = port_field()
    ssh_user = user_field()


class ServerListQuery(Schema):
    status = fields.String(validate=validate.OneOf(SERVER_STATUSES))
    setup = QueryBoolean()


# ---------------------------------------------------------------------------- packages


class Package(RequestSchema):
    uuid = fields.String(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    version = fields.String(validate=validate.Length(min=1, max=32))
    memory = BoundedInteger(required=True, minimum=1, metadata={"description": "MiB"})
    disk = BoundedInteger(required=True, minimum=1, metadata={"description": "MiB"})
    swap = BoundedInteger(metadata={"description": "MiB"})
    vcpus = BoundedInteger(minimum=1)
    cpu_cap = BoundedInteger(metadata={"description": "percent of one CPU; 0 = uncapped"})
    max_lwps = BoundedInteger(minimum=1)
    active = JsonBoolean()
    default = JsonBoolean()
    group = fields.String(validate=validate.Length(max=64))
    description = fields.String(validate=validate.Length(max=512))
    traits = fields.Dict(keys=fields.String())
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


# ---------------------------------------------------------------------------- images


def _imgadm_rule(problem: Any) -> Any:
    """A field validator from an image_manifest rule (imgadm refuses what it refuses)."""

    def check(value: Any) -> None:
        said = problem(value)
        if said is not None:
            raise ValidationError(said)

    return check


class Image(RequestSchema):
    # A manifest imported from elsewhere keeps its uuid; a new one gets one.
    uuid = fields.UUID()
    name = fields.String(required=True, validate=_imgadm_rule(name_problem))
    version = fields.String(validate=_imgadm_rule(version_problem))
    os = fields.String(validate=validate.OneOf(IMAGE_OSES))
    type = fields.String(validate=validate.OneOf(IMAGE_TYPES))
    state = fields.String(validate=validate.OneOf(IMAGE_STATES))
    public = JsonBoolean()
    owner_uuid = fields.UUID(allow_none=True)
    description = fields.String(validate=validate.Length(max=512))
    size_mb = BoundedInteger()
    requirements = fields.Dict(keys=fields.String())
    traits = fields.Dict(keys=fields.String())
    tags = fields.Dict(keys=fields.String(), metadata={
        "description": "IMGAPI's free-form tags; default_user: who `triton ssh` logs in as"})
    init = fields.Nested(ImageInitSchema, allow_none=True, metadata={
        "description": "how its machines boot (none: the node's default init)"})
    files = fields.List(fields.Nested(lambda: ImageFile()),
                        metadata={"description": "the image's file; a manifest listing one "
                                                 "is unactivated until the file is PUT"})
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class ImageFile(RequestSchema):
    sha256 = fields.String(required=True, validate=validate.Regexp(
        r"^[0-9a-fA-F]{64}$", error="must be 64 hex digits"))
    size = BoundedInteger(required=True, maximum=INT64_MAX,
                          metadata={"description": "bytes, as stored (compressed)"})
    compression = fields.String(load_default="gzip",
                                validate=validate.OneOf(["gzip", "bzip2", "xz", "none"]))
    format = fields.String(validate=validate.OneOf(FILE_FORMATS), metadata={
        "description": "tar: a root filesystem tarball (Linux nodes); zfs: a zfs send stream "
                       "(SmartOS nodes). Left out: tar (zfs for a zvol)"})


class ImageFromMachine(RequestSchema):
    machine = fields.String(required=True, metadata={"description": "machine uuid"})
    name = fields.String(required=True, validate=_imgadm_rule(name_problem))
    version = fields.String(required=True, validate=_imgadm_rule(version_problem))
    description = fields.String(load_default="", validate=validate.Length(max=512))


class ImageJob(Schema):
    image = fields.Nested(Image)
    job_uuid = fields.String()


# ---------------------------------------------------------------------------- accounts


#: a console password's length in characters: NIST SP 800-63B asks for at least 8, we ask
#: for more; the most is enough for any passphrase and bounds the hashing work
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 1024
PASSWORD_LENGTH = validate.Length(min=PASSWORD_MIN_LENGTH, max=PASSWORD_MAX_LENGTH)


class Account(RequestSchema):
    uuid = fields.String(dump_only=True)
    login = fields.String(required=True, validate=validate.Regexp(
        LOGIN_PATTERN, error="must start with a letter, then 2-63 letters, digits or _.@-"))
    email = fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL))
    operator = JsonBoolean(load_default=False)
    #: write-only: kept as a hash (headnode.services.passwords), never answered
    password = fields.String(load_only=True, validate=PASSWORD_LENGTH, metadata={
        "description": "the console password (optional)"})
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    @validates("login")
    def _not_reserved(self, value: str, **_: Any) -> None:
        if value.lower() in RESERVED_LOGINS:
            raise ValidationError(f"{value!r} is reserved")


class AccountPassword(RequestSchema):
    """An account's new console password."""

    password = fields.String(required=True, load_only=True, validate=PASSWORD_LENGTH)


# ---------------------------------------------------------------------------- machines


class Machine(Schema):
    uuid = fields.String()
    alias = fields.String()
    owner_uuid = fields.String()
    package_uuid = fields.String()
    image_uuid = fields.String()
    server_uuid = fields.String(allow_none=True)
    state = fields.String(metadata={"enum": list(MACHINE_STATES)})
    ram_mb = fields.Integer()
    disk_mb = fields.Integer()
    cpu_cap = fields.Integer()
    vcpus = fields.Integer()
    brand = fields.String()
    tags = fields.Dict()
    # The model calls it customer_metadata (SmartOS's name); services may give either.
    metadata = fields.Method("_metadata")
    job_uuid = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    ips = fields.List(fields.String())
    primary_ip = fields.String(allow_none=True)
    networks = fields.List(fields.String(), metadata={"description": "network uuids"})
    nics = fields.List(fields.Dict())

    def _metadata(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            return obj.get("metadata", obj.get("customer_metadata", {}))
        return getattr(obj, "customer_metadata", None) or {}


class MachineCreate(RequestSchema):
    owner = fields.String(required=True, validate=validate.Length(min=1),
                          metadata={"description": "account uuid or login"})
    package = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"description": "package uuid or name"})
    image = fields.String(required=True, validate=validate.Length(min=1),
                          metadata={"description": "image uuid or name"})
    alias = fields.String(validate=validate.Regexp(
        ALIAS_PATTERN, error="must start with a letter or digit, then up to 188 of [a-zA-Z0-9_.-]"))
    tags = fields.Dict(keys=fields.String(validate=NO_COMMA), values=TagValue())
    metadata = fields.Dict(keys=fields.String(validate=NO_COMMA), values=fields.String())
    server_uuid = fields.UUID(metadata={"description": "place on this server (operators only)"})
    networks = fields.List(fields.String(validate=validate.Length(min=1)),
                           metadata={"description": "network uuids or names (default: the "
                                     "owner's default network)"})
    affinity = fields.List(fields.String(validate=validate.Length(min=1, max=512)),
                           validate=validate.Length(max=32), metadata={
                               "description": "CloudAPI affinity rules, e.g. instance!=web*"})


class MachineAction(Schema):
    action = fields.String(required=True, validate=validate.OneOf(MACHINE_ACTIONS))
    package = fields.String(validate=validate.Length(min=1),
                            metadata={"description": "resize: package uuid or name"})
    alias = fields.String(validate=validate.Regexp(
        ALIAS_PATTERN, error="must start with a letter or digit, then up to 188 of [a-zA-Z0-9_.-]"),
        metadata={"description": "rename: the new alias"})

    @validates_schema
    def _param_given(self, data: dict[str, Any], **_: Any) -> None:
        needed = ACTION_PARAMS.get(data.get("action", ""))
        if needed and not data.get(needed):
            raise ValidationError(f"required by action={data['action']}", needed)


class Snapshot(Schema):
    name = fields.String()
    state = fields.String(metadata={"enum": list(SNAPSHOT_STATES)})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class SnapshotCreate(RequestSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))


class SnapshotJob(Schema):
    machine_uuid = fields.String()
    job_uuid = fields.String()
    snapshot = fields.Nested(Snapshot)


class MachineJob(Schema):
    """The answer to a change that runs as a job."""

    machine_uuid = fields.String()
    job_uuid = fields.String()


class Page(Schema):
    limit = BoundedInteger(load_default=MAX_PAGE, minimum=1, maximum=MAX_PAGE, strict=False)
    offset = BoundedInteger(load_default=0, strict=False)


class MachineListQuery(Page):
    owner_uuid = fields.String()
    state = fields.String(validate=validate.OneOf(MACHINE_STATES))
    server_uuid = fields.String()
    package_uuid = fields.String()
    image_uuid = fields.String()
    alias = fields.String()


# ---------------------------------------------------------------------------- jobs


class Job(Schema):
    uuid = fields.String()
    name = fields.String()
    machine_uuid = fields.String(allow_none=True)
    server_uuid = fields.String(allow_none=True)
    execution = fields.String(metadata={"enum": list(JOB_EXECUTIONS)})
    phase = fields.String(metadata={"enum": ["chain", "onerror"]})
    chain = fields.List(fields.String(), metadata={"description": "step names"})
    onerror = fields.List(fields.String(), metadata={"description": "step names"})
    # As the job engine records them: {name, attempt, started_at, finished_at, result, error}
    chain_results = fields.List(fields.Dict())
    onerror_results = fields.List(fields.Dict())
    error = fields.Dict(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    cancel_requested_at = fields.DateTime(
        allow_none=True, metadata={"description": "when a cancel was asked for, if one was"})
    canceled_by = fields.Dict(allow_none=True, metadata={"description": "who asked for it"})
    params = fields.Dict()


class JobListQuery(Page):
    machine_uuid = fields.String()
    execution = fields.String(validate=validate.OneOf(JOB_EXECUTIONS))
    name = fields.String()


# ---------------------------------------------------------------------------- doctor

DOCTOR_KINDS = ("orphan", "missing", "drift", "leaked_reservation", "leaked_ip", "stuck_job",
                "node_leftover")


class DoctorQuery(RequestSchema):
    stuck_after = BoundedFloat(load_default=60.0, maximum=MAX_STUCK_AFTER, metadata={
        "description": "seconds past its deadline before a job counts as stuck"})


class DoctorFinding(Schema):
    kind = fields.String(metadata={"enum": list(DOCTOR_KINDS)})
    detail = fields.String()
    server_uuid = fields.String(allow_none=True)
    machine_uuid = fields.String(allow_none=True)
    job_uuid = fields.String(allow_none=True)
    repair = fields.String(allow_none=True,
                           metadata={"description": "what a repair does about it, if anything"})
    operator = fields.String(allow_none=True,
                             metadata={"description": "what an operator would run, if needed"})
    repaired = fields.Boolean()


class DoctorReport(Schema):
    checked_at = fields.String()
    servers = fields.Integer()
    skipped = fields.List(fields.Dict(), metadata={
        "description": "servers not compared: {server_uuid, reason}"})
    findings = fields.List(fields.Nested(DoctorFinding))


class OrphanPurge(RequestSchema):
    server_uuid = fields.UUID(required=True)
    machine_uuid = fields.UUID(required=True)


class OrphanPurgeJob(Schema):
    server_uuid = fields.String()
    machine_uuid = fields.String()
    job_uuid = fields.String()
