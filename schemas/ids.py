"""Identifiers a compute node turns into file, dataset and container names or command
arguments (``<machines_dir>/<uuid>``, ``zones/<uuid>@<snapshot>``, ``runc delete <uuid>``):
the wire accepts exactly the form the head node writes and nothing a path could be made of.

Patterns end with ``\\Z``, not ``$``: ``$`` also matches before a trailing newline.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

#: a UUID as the head node writes it (str(uuid.UUID)): lower-case, 8-4-4-4-12 hex digits
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
UUID_ERROR = "must be a UUID in canonical form (lower-case, 8-4-4-4-12 hex digits)"


def uuid_string(**kwargs: Any) -> fields.String:
    """A string field that loads only a canonical UUID (kept a string, as the wire has it)."""
    return fields.String(validate=validate.Regexp(UUID_PATTERN, error=UUID_ERROR), **kwargs)
