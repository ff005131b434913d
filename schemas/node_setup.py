"""Wire formats of setting nodes up over SSH and moving their agents to another version
(``POST /ops/servers/setup``, ``POST /ops/servers/<uuid>/upgrade-agent``,
``/ops/agent-bundles``). Everything here ends up in a job's params or on the node's command
lines, so each field is checked to a plain shape; none is a secret."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from schemas.ops import RequestSchema
from schemas.ssh import MAX_PORT, USER_PATTERN, host_problem
from schemas.wire import BoundedInteger, JsonBoolean

BACKENDS = ("linux", "smartos", "sim")
#: what ``SDC_NIC_TAGS`` takes: TAG[:LINK],... (agents/config.py parses it on the node)
NIC_TAG = r"[A-Za-z0-9_]{1,31}(:[^/\s:,=]{1,15})?"
NIC_TAGS_PATTERN = rf"^({NIC_TAG}(,{NIC_TAG})*)?$"
#: a pool name or its mount point: nothing a line of agent.env or a shell reads specially
POOL_PATTERN = r"^[A-Za-z0-9_./-]{0,255}$"
#: a package version as pip writes it into a wheel's name (PEP 440, normalised)
VERSION_PATTERN = r"^[0-9][0-9A-Za-z.+!_-]{0,63}$"
MAX_PREFIX = 255


def _check_host(value: str) -> None:
    problem = host_problem(value)
    if problem:
        raise ValidationError(problem)


def _check_prefix(value: str) -> None:
    path = PurePosixPath(value)
    if (not path.is_absolute() or ".." in path.parts or len(value) > MAX_PREFIX
            or any(c.isspace() or not c.isprintable() for c in value)):
        raise ValidationError("an absolute path without '..' or blanks, at most "
                              f"{MAX_PREFIX} characters")


def _check_hostname(value: str) -> None:
    if value and host_problem(value):
        raise ValidationError(f"{value[:64]!r} is not a host name")


class ServerSetupRequest(RequestSchema):
    host = fields.String(required=True, validate=_check_host,
                         metadata={"description": "the node's host name or IP address"})
    port = BoundedInteger(minimum=1, maximum=MAX_PORT, load_default=22)
    user = fields.String(load_default="root", validate=validate.Regexp(
        USER_PATTERN, error="a plain user name: lower-case letters, digits, _ and -"))
    prefix = fields.String(load_default="/", validate=_check_prefix, metadata={
        "description": "where on the node the agent goes (/ on a real node; a directory of "
                       "its own for nodes sharing a host)"})
    backend = fields.String(load_default="linux", validate=validate.OneOf(BACKENDS))
    pool = fields.String(load_default="", validate=validate.Regexp(
        POOL_PATTERN, error="a pool name or mount point: letters, digits, _ . / -"))
    nic_tags = fields.String(load_default="", validate=validate.Regexp(
        NIC_TAGS_PATTERN, error="TAG[:LINK],... (a tag: 1 to 31 letters, digits, _)"))
    hostname = fields.String(load_default="", validate=_check_hostname, metadata={
        "description": "the name the node registers with (default: its own)"})
    accept_new_host_key = JsonBoolean(load_default=False, metadata={
        "description": "first contact: trust the key the node offers (a changed key is "
                       "refused all the same)"})
    version = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        VERSION_PATTERN, error="a version such as 1.2.0"), metadata={
        "description": "a stored agent bundle (PUT /ops/agent-bundles); null: built from "
                       "the head node's own checkout"})


class AgentUpgradeRequest(RequestSchema):
    version = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        VERSION_PATTERN, error="a version such as 1.2.0"), metadata={
        "description": "a stored agent bundle; null: built from the head node's checkout"})
    rollback = JsonBoolean(load_default=False, metadata={
        "description": "go back to the release the node ran before (its `previous`)"})

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("rollback") and data.get("version"):
            raise ValidationError("a rollback goes back to the node's previous release: "
                                  "give no version", "version")


class NodeJob(Schema):
    """A setup or upgrade job just started: follow it with GET /ops/jobs/<job_uuid>."""

    job_uuid = fields.String()
    host = fields.String()
    port = fields.Integer()
    prefix = fields.String()
    server_uuid = fields.String(allow_none=True)
    version = fields.String(allow_none=True)
    rollback = fields.Boolean()


class AgentBundle(Schema):
    version = fields.String()
    filename = fields.String(allow_none=True)
