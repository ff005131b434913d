"""The wire contract of machine migration between nodes (head node <-> agents).

A migration moves a machine's dataset from its node (the *source*) to another (the
*target*) in phases. The head node drives it with these agent operations:

- ``migration_target_prepare`` (target): a hidden copy of the machine (same uuid, NICs, MACs,
  IPs), not started and without a root yet; it is left out of status reports and
  ``list_machines`` while hidden.
- ``migration_receive`` (target): offer one stream of one snapshot for this migration at a
  URL, for a one-time token; answers at once with ``{"receive": {"url", "expires_at"}}``.
- ``migration_send`` (source): take the read-only snapshot ``snapshot`` (unless it exists),
  stream it (an increment from ``parent`` when given) to ``url`` with ``token``, and answer
  ``{"sync": {"snapshot", "parent", "bytes", "seconds", "received_bytes"}}`` once the target
  answered that its receive succeeded.
- ``migration_activate`` (target, at switch): make the machine's root from the received
  ``snapshot``, show the machine (no longer hidden), stopped.
- ``migration_hide`` (either): hide (``hidden``) or show a machine; a hidden machine is not
  reported and not booted when its node or agent starts.
- ``migration_cleanup`` (either): remove this machine's migration snapshots (sent or
  received) except ``keep``.

Destroying a copy (an aborted target, a finalized source) is ``machine_destroy``, which also
works on hidden machines. While a stream runs, both ends send
``events.migration_progress`` (:class:`MigrationProgressSchema`) on the nodes queue at most
once a second and once at the end.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.ids import uuid_string

#: names of migration snapshots, chosen by the head node: ``migration-<sync number>``
MIGRATION_SNAPSHOT = r"^migration-[0-9]{1,6}\Z"
#: a ZFS receive_resume_token: ``1-<hex>-<hex>-<hex>``, never an option to ``zfs send -t``
RESUME_TOKEN = r"^[0-9][0-9a-f-]{0,4095}\Z"
#: header of a stream's one-time token (the target compares it in constant time)
TOKEN_HEADER = "X-Sdc-Migration-Token"
EVENT_MIGRATION_PROGRESS = "events.migration_progress"


def _snapshot_name(**kwargs: object) -> fields.String:
    return fields.String(validate=validate.Regexp(MIGRATION_SNAPSHOT), **kwargs)  # type: ignore[arg-type]


def _token(**kwargs: object) -> fields.String:
    return fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{32,128}\Z"), **kwargs)  # type: ignore[arg-type]


class MigrationPrepareSchema(Schema):
    migration_uuid = uuid_string(required=True)
    #: the machine as a create would make it (schemas.agent.MachineSpecSchema), NICs included
    spec = fields.Nested("MachineSpecSchema", required=True)


class MigrationReceiveSchema(Schema):
    uuid = uuid_string(required=True)  # the machine
    migration_uuid = uuid_string(required=True)
    token = _token(required=True)
    snapshot = _snapshot_name(required=True)
    #: the snapshot the increment is based on (received before); None: a full stream
    parent = _snapshot_name(load_default=None, allow_none=True)


class MigrationSendSchema(MigrationReceiveSchema):
    #: where the target listens for this stream (``migration_receive``'s answer)
    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    #: a SmartOS target's ``receive_resume_token`` (in ``migration_receive``'s answer when
    #: a cut receive left one): the source sends the rest of that stream (``zfs send -t``)
    resume_token = fields.String(load_default=None, allow_none=True,
                                 validate=validate.Regexp(RESUME_TOKEN))


class MigrationActivateSchema(Schema):
    uuid = uuid_string(required=True)
    migration_uuid = uuid_string(required=True)
    snapshot = _snapshot_name(required=True)


class MigrationHideSchema(Schema):
    uuid = uuid_string(required=True)
    hidden = fields.Boolean(required=True)


class MigrationCleanupSchema(Schema):
    uuid = uuid_string(required=True)
    migration_uuid = uuid_string(required=True)
    keep = _snapshot_name(load_default=None, allow_none=True)


class StreamErrorSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    message = fields.String(required=True, validate=validate.Length(max=2000))


class MigrationProgressSchema(Schema):
    """``events.migration_progress``: how far one end of one stream is."""

    migration_uuid = uuid_string(required=True)
    server_uuid = uuid_string(required=True)
    machine_uuid = uuid_string(required=True)
    side = fields.String(required=True, validate=validate.OneOf(["send", "receive"]))
    snapshot = _snapshot_name(required=True)
    bytes = fields.Integer(required=True, validate=validate.Range(min=0))
    #: the stream's size when the sender knows it ahead
    total = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))
    done = fields.Boolean(load_default=False)
    at = fields.Float(required=True)
    #: the last event of a stream that broke at this end (a receive whose sender died): the
    #: head node need not wait for word from the other end
    error = fields.Nested(StreamErrorSchema, load_default=None, allow_none=True)


MIGRATION_TASKS: dict[str, type[Schema]] = {
    "migration_target_prepare": MigrationPrepareSchema,
    "migration_receive": MigrationReceiveSchema,
    "migration_send": MigrationSendSchema,
    "migration_activate": MigrationActivateSchema,
    "migration_hide": MigrationHideSchema,
    "migration_cleanup": MigrationCleanupSchema,
}
