"""CloudAPI's objects as the tenant API shows them (headnode.api.cloudapi.shapes builds them),
described for its OpenAPI document (headnode.api.cloudapi.openapi). Fields a service may
leave empty are nullable; fields an older ``Accept-Version`` leaves out are not required."""

from __future__ import annotations

from marshmallow import Schema, fields

from schemas.cloudapi import CLOUDAPI_STATES, MACHINE_TYPES


class CloudError(Schema):
    code = fields.String(required=True, metadata={
        "description": "CloudAPI's error code: InvalidArgument, MissingParameter, "
                       "ResourceNotFound, InvalidCredentials, NotAuthorized, ..."})
    message = fields.String(required=True)
    reasons = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "servers rejected per reason (InsufficientCapacity only)"})


class Ping(Schema):
    ping = fields.String(required=True)
    cloudapi = fields.Dict(required=True, metadata={"description": "{versions: [...]}"})


class Account(Schema):
    id = fields.String(required=True)
    login = fields.String(required=True)
    email = fields.String(allow_none=True)
    created = fields.String(allow_none=True, metadata={"format": "date-time"})
    updated = fields.String(allow_none=True, metadata={"format": "date-time"})
    triton_cns_enabled = fields.Boolean()


class Key(Schema):
    name = fields.String(required=True)
    fingerprint = fields.String(required=True, metadata={"description": "MD5, aa:bb:..."})
    key = fields.String(required=True, metadata={"description": "OpenSSH public key line"})


class Image(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    version = fields.String(allow_none=True)
    os = fields.String(allow_none=True)
    type = fields.String(allow_none=True, metadata={
        "description": "the image's type (API 7: smartmachine or virtualmachine)"})
    description = fields.String(allow_none=True)
    requirements = fields.Dict()
    files = fields.List(fields.Dict(), metadata={"description": "since 7.1.0"})
    tags = fields.Dict(metadata={"description": "since 7.1.0"})
    owner = fields.String(metadata={"description": "since 7.1.0"})
    public = fields.Boolean(metadata={"description": "since 7.1.0"})
    state = fields.String(allow_none=True, metadata={"description": "since 7.1.0"})
    published_at = fields.String(allow_none=True, metadata={"format": "date-time"})


class Package(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    memory = fields.Integer(required=True, metadata={"description": "MiB"})
    disk = fields.Integer(required=True, metadata={"description": "MiB"})
    swap = fields.Integer(allow_none=True, metadata={"description": "MiB"})
    vcpus = fields.Integer(allow_none=True)
    lwps = fields.Integer(allow_none=True)
    version = fields.String(allow_none=True)
    group = fields.String()
    description = fields.String()
    default = fields.Boolean()


class Network(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    public = fields.Boolean(required=True)
    fabric = fields.Boolean()
    subnet = fields.String()
    provision_start_ip = fields.String()
    provision_end_ip = fields.String()
    resolvers = fields.List(fields.String())
    gateway = fields.String()
    description = fields.String()


class Machine(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    type = fields.String(metadata={"enum": list(MACHINE_TYPES)})
    brand = fields.String(metadata={"description": "since 8.0.0"})
    state = fields.String(required=True, metadata={"enum": list(CLOUDAPI_STATES)})
    image = fields.String()
    ips = fields.List(fields.String())
    memory = fields.Integer(metadata={"description": "MiB"})
    disk = fields.Integer(metadata={"description": "MiB"})
    metadata = fields.Dict()
    tags = fields.Dict()
    created = fields.String(allow_none=True, metadata={"format": "date-time"})
    updated = fields.String(allow_none=True, metadata={"format": "date-time"})
    docker = fields.Boolean(metadata={"description": "since 8.0.0"})
    networks = fields.List(fields.String(), metadata={"description": "since 7.1.0"})
    primaryIp = fields.String(allow_none=True)  # noqa: N815 - CloudAPI's name
    firewall_enabled = fields.Boolean()
    deletion_protection = fields.Boolean()
    compute_node = fields.String(allow_none=True)
    package = fields.String(metadata={"description": "the package's name"})
    dns_names = fields.List(fields.String())


class AuditEntry(Schema):
    id = fields.String()
    action = fields.String(required=True)
    parameters = fields.Dict()
    success = fields.String(metadata={"enum": ["yes", "no"]})
    time = fields.String(allow_none=True, metadata={"format": "date-time"})
    caller = fields.Dict()


class Snapshot(Schema):
    name = fields.String(required=True)
    state = fields.String(required=True)
    created = fields.String(allow_none=True, metadata={"format": "date-time"})
    updated = fields.String(allow_none=True, metadata={"format": "date-time"})


class Nic(Schema):
    ip = fields.String(required=True)
    mac = fields.String(required=True)
    primary = fields.Boolean(required=True)
    netmask = fields.String()
    gateway = fields.String()
    state = fields.String(metadata={"description": "provisioning, running, stopped, removing"})
    network = fields.String(metadata={"description": "network uuid"})


class MigrationEvent(Schema):
    """A step of a migration (progress_history, and watch's ``progress`` lines)."""

    type = fields.String(metadata={"enum": ["progress", "end"]})
    phase = fields.String(allow_none=True)
    state = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    current_progress = fields.Integer()
    total_progress = fields.Integer()
    transfer_bytes_second = fields.Integer()
    eta_ms = fields.Integer()
    started_timestamp = fields.Raw(allow_none=True)
    finished_timestamp = fields.Raw(allow_none=True)
    duration_ms = fields.Integer()


class Migration(Schema):
    machine = fields.String(required=True, metadata={"description": "the machine's id"})
    state = fields.String(required=True, metadata={
        "enum": ["running", "paused", "failed", "aborted", "successful", "rolled_back"]})
    phase = fields.String(required=True, metadata={
        "enum": ["begin", "sync", "switch", "finalize", "abort", "rollback"]})
    automatic = fields.Boolean()
    progress_history = fields.List(fields.Nested(MigrationEvent))
    created_timestamp = fields.String(allow_none=True, metadata={"format": "date-time"})
    finished_timestamp = fields.String(allow_none=True, metadata={"format": "date-time"})
    error = fields.String(metadata={"description": "why it failed"})
    duration_ms = fields.Integer(metadata={"description": "created to finished, once finished"})


class MigrationEstimate(Schema):
    size = fields.Integer(required=True, metadata={"description": "bytes to send"})
    eta_ms = fields.Integer(required=True)
    transfer_bytes_second = fields.Integer(required=True)
