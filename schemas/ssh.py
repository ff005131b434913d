"""Where the head node reaches a node over SSH: the fields of a server's SSH address and what
makes each valid (a host name or an IP address, a port, a plain user name)."""

from __future__ import annotations

import ipaddress
import re

from marshmallow import ValidationError, fields, validate

from schemas.wire import BoundedInteger

#: DNS host names (RFC 1123 labels); what cannot be read as an option: no leading '-'
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAX_HOST = 253
#: a login name as useradd takes it (and nothing a shell or ssh would read specially)
USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
MAX_PORT = 65535


def host_problem(value: str) -> str | None:
    """None when ``value`` is an IP address or a DNS host name, else why not."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > MAX_HOST or not all(HOST_LABEL.match(p) for p in name.split(".")):
        return f"{value[:64]!r} is neither an IP address nor a host name"
    return None


def _check_host(value: str) -> None:
    problem = host_problem(value)
    if problem:
        raise ValidationError(problem)


def host_field() -> fields.String:
    """A server's SSH host in a request (null: the server has none)."""
    return fields.String(allow_none=True, validate=_check_host,
                         metadata={"description": "host name or IP address"})


def port_field() -> BoundedInteger:
    return BoundedInteger(minimum=1, maximum=MAX_PORT)


def user_field() -> fields.String:
    return fields.String(validate=validate.Regexp(
        USER_PATTERN, error="a plain user name: lower-case letters, digits, _ and -"))
