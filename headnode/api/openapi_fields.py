"""How both APIs' OpenAPI documents describe the request fields apispec cannot guess (a field
type of our own): without this a tag value would be documented as anything at all."""

from __future__ import annotations

from typing import Any

from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from schemas.ops import TagValue

TAG_VALUE = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}


def _custom_field(_converter: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    if isinstance(field, TagValue):
        return dict(TAG_VALUE)
    return {}


def describe_custom_fields(plugin: MarshmallowPlugin) -> None:
    """Call once the plugin belongs to a spec (its converter exists then)."""
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_custom_field)
