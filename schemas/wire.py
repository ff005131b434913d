"""Field types every API's request schemas share, so that what a request may carry is what the
store can keep and nothing is guessed.

- ``JsonBoolean``: JSON ``true`` or ``false`` only (marshmallow's Boolean would also take 0,
  1, "yes" or "on": a client sending ``public: 0`` meant something we cannot know).
- ``QueryBoolean``: ``true`` or ``false`` in a query string (or a JSON boolean).
- ``BoundedInteger``: an integer within a range whose top defaults to what a PostgreSQL
  ``integer`` column holds (a larger one was a database error, answered 500). In a JSON body
  it must be a JSON integer (``strict``); in a query string, digits.
- ``BoundedFloat``: a finite number within a range.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate

#: the largest value of PostgreSQL's ``integer`` (int4)
INT32_MAX = 2**31 - 1
#: the largest value of PostgreSQL's ``bigint`` (int8)
INT64_MAX = 2**63 - 1


class JsonBoolean(fields.Boolean):
    """JSON ``true`` or ``false`` only."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false (a JSON boolean)")
        return value


class QueryBoolean(fields.Boolean):
    """``true`` or ``false`` in a query string (any case), or a JSON boolean where a body
    and the query string are merged (CloudAPI's way)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text not in ("true", "false"):
            raise ValidationError("must be true or false")
        return text == "true"


def _with_range(kwargs: dict[str, Any], minimum: float | None, maximum: float) -> dict[str, Any]:
    given = kwargs.pop("validate", None)
    validators = [] if given is None else list(given) if isinstance(given, list | tuple) \
        else [given]
    return {**kwargs, "validate": [validate.Range(min=minimum, max=maximum), *validators]}


class BoundedInteger(fields.Integer):
    """An integer in ``[minimum, maximum]`` (default ``[0, INT32_MAX]``); strict (a JSON
    integer, not "5" nor 5.0) unless ``strict=False``, as a query string needs."""

    def __init__(self, *, minimum: int | None = 0, maximum: int = INT32_MAX,
                 strict: bool = True, **kwargs: Any) -> None:
        super().__init__(strict=strict, **_with_range(kwargs, minimum, maximum))
        self.minimum, self.maximum = minimum, maximum


class BoundedFloat(fields.Float):
    """A finite number in ``[minimum, maximum]``."""

    def __init__(self, *, minimum: float | None = 0, maximum: float, **kwargs: Any) -> None:
        super().__init__(allow_nan=False, **_with_range(kwargs, minimum, maximum))
        self.minimum, self.maximum = minimum, maximum
