"""The operator API's migration schemas (``/ops/machines/<uuid>/migrate``,
``/ops/migrations``): apart from :mod:`schemas.ops` by concern."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from schemas.ids import UUID_ERROR, UUID_PATTERN
from schemas.ops import RequestSchema

#: what ``POST /ops/machines/<uuid>/migrate`` may ask (docs/migration.md): the phases, and an
#: estimate of the move's size and time
MIGRATION_ACTIONS = ("begin", "sync", "switch", "automatic", "abort", "finalize", "rollback",
                     "estimate")
#: the actions that place the machine: only these may name the target server
PLACING_ACTIONS = ("begin", "automatic")
MIGRATION_STATES = ("running", "paused", "failed", "aborted", "successful", "rolled_back")
MIGRATION_PHASES = ("begin", "sync", "switch", "finalize", "abort", "rollback")


class MigrateRequest(RequestSchema):
    action = fields.String(required=True, validate=validate.OneOf(MIGRATION_ACTIONS))
    target_server = fields.String(
        validate=validate.Regexp(UUID_PATTERN, error=UUID_ERROR),
        metadata={"description": "begin, automatic: this server (placement still checks "
                                 "that the machine fits there)"})

    @validates_schema
    def _target_when_placing(self, data: dict[str, Any], **_: Any) -> None:
        if "target_server" in data and data.get("action") not in PLACING_ACTIONS:
            raise ValidationError(f"only with action {' or '.join(PLACING_ACTIONS)}",
                                  "target_server")


class MigrationListQuery(RequestSchema):
    machine = fields.String(validate=validate.Regexp(UUID_PATTERN, error=UUID_ERROR),
                            metadata={"description": "only this machine's migrations"})


class Migration(Schema):
    """A machine's migration as the operator sees it: CloudAPI's fields, the two servers,
    what was sent, the rate, the switch's downtime and the reason of a failure."""

    uuid = fields.String()
    machine = fields.String(metadata={"description": "the machine's uuid"})
    owner_uuid = fields.String()
    state = fields.String(metadata={"enum": list(MIGRATION_STATES)})
    phase = fields.String(metadata={"enum": list(MIGRATION_PHASES)})
    automatic = fields.Boolean()
    source_server_uuid = fields.String()
    target_server_uuid = fields.String(allow_none=True)
    job_uuid = fields.String(allow_none=True, metadata={"description": "the phase's job"})
    syncs = fields.Integer()
    total_bytes = fields.Integer(allow_none=True)
    sent_bytes = fields.Integer(allow_none=True)
    rate_bps = fields.Integer(allow_none=True, metadata={"description": "bytes a second"})
    downtime_ms = fields.Integer(allow_none=True)
    last_snapshot = fields.String(allow_none=True)
    error = fields.Dict(allow_none=True, metadata={"description": "{code, message}"})
    target_held = fields.Dict(allow_none=True, metadata={
        "description": "room held on the target: {ram_mb, disk_mb, cpu}"})
    source_held = fields.Dict(allow_none=True, metadata={
        "description": "room the source copy holds until finalize"})
    was_running = fields.Boolean(allow_none=True)
    progress_history = fields.List(fields.Dict(), metadata={
        "description": "the steps: {type, phase, state, message, current_progress, "
                       "total_progress, started_timestamp, finished_timestamp}"})
    created_timestamp = fields.String(allow_none=True)
    updated_timestamp = fields.String(allow_none=True)
    finished_timestamp = fields.String(allow_none=True)


class MigrationEstimate(Schema):
    size = fields.Integer(metadata={"description": "bytes to send"})
    eta_ms = fields.Integer()
    transfer_bytes_second = fields.Integer()
