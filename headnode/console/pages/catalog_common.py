"""What the jobs and catalog pages share: pages of a list (``?page=``), and a form read into
the body the operator API's request schema takes, so a form is checked by the same rules
as ``/ops`` (no second copy), and its errors name their fields."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flask import abort, flash, redirect, request, url_for
from marshmallow import Schema, ValidationError, fields
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from headnode.services.errors import ServiceError

PER_PAGE = 50
#: a page number past this is a typo, not a page (and an OFFSET the database would scan)
MAX_PAGE_NUMBER = 100_000
#: what separates the items of a list field typed into one input (resolvers)
LIST_SEPARATOR = re.compile(r"[\s,]+")

Row = TypeVar("Row")


@dataclass(frozen=True)
class Pager(Generic[Row]):
    rows: list[Row]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def offset(self) -> int:
        return (self.number - 1) * PER_PAGE


def page_number() -> int:
    """``?page=`` (from 1); anything else is a 400 naming the parameter."""
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_NUMBER:
        abort(400, description=f"page: a whole number from 1 to {MAX_PAGE_NUMBER}")
    return int(raw)


def page_of(rows: Sequence[Row], number: int) -> Pager[Row]:
    """One page of a list the service gives whole (catalogs: tens to hundreds of rows)."""
    start = (number - 1) * PER_PAGE
    return Pager(list(rows[start:start + PER_PAGE]), number, len(rows) > start + PER_PAGE)


def page_probed(rows: Sequence[Row], number: int) -> Pager[Row]:
    """A page from ``PER_PAGE + 1`` rows asked of the database: the extra one says there
    is a next page."""
    return Pager(list(rows[:PER_PAGE]), number, len(rows) > PER_PAGE)


@dataclass
class FormErrors:
    """Why a form was refused: by field (shown beside its input) and the status to answer."""

    fields: dict[str, list[str]]
    status: int
    message: str

    def of(self, name: str) -> list[str]:
        return self.fields.get(name, [])


def form_body(schema: Schema, form: MultiDict[str, str], checkboxes: Sequence[str] = (),
              verbatim: Sequence[str] = ()) -> dict[str, Any]:
    """The form as the schema's JSON body, then loaded by it (ValidationError if refused).
    Empty inputs are left out (a required one is then missing, by name); integers are
    converted when they are integers, else passed on for the schema to refuse; the
    ``checkboxes`` the form shows are true when ticked and false when not. Inputs are
    trimmed of the spaces a paste brings, except the ``verbatim`` ones (a password)."""
    body: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        if spec.dump_only:
            continue
        if name in checkboxes:
            body[name] = form.get(name) is not None
            continue
        raw = form.get(name, "")
        if name not in verbatim:
            raw = raw.strip()
        if not raw:
            continue
        if isinstance(spec, fields.Integer):
            body[name] = int(raw) if re.fullmatch(r"-?\d{1,18}", raw) else raw
        elif isinstance(spec, fields.List):
            body[name] = [item for item in LIST_SEPARATOR.split(raw) if item]
        elif isinstance(spec, fields.String | fields.UUID | fields.Email):
            body[name] = raw
    loaded: dict[str, Any] = schema.load(body)
    return loaded


def refusal_of_schema(error: ValidationError) -> FormErrors:
    messages = error.messages if isinstance(error.messages, dict) else {"form": error.messages}
    by_field = {str(k): [str(m) for m in (v if isinstance(v, list) else [v])]
                for k, v in messages.items()}
    summary = "; ".join(f"{k}: {' '.join(v).rstrip('.')}" for k, v in by_field.items())
    return FormErrors(by_field, 400, f"Not saved. {summary}.")


def refusal_of_service(error: ServiceError) -> FormErrors:
    """A service's refusal: its field when it names one (InvalidArgument), and its status
    when that is a client error (a 5xx stays one: the caller did nothing wrong)."""
    raw = error.details.get("errors")
    by_field = ({str(k): [str(m) for m in v] for k, v in raw.items()}
                if isinstance(raw, dict) else {})
    return FormErrors(by_field, error.status, f"Not saved. {error.message}")


def submitted(render: Callable[[FormErrors], str], act: Callable[[], str],
              then: Callable[[], Response], refused: str = "") -> Any:
    """A form's action: ``act`` does it and says what it did (flashed, then ``then``
    redirects: PRG); a refusal renders the page again (``render``) with why, under its
    status. ``refused`` replaces the service refusal's "Not saved." (a deletion's)."""
    try:
        done = act()
    except ValidationError as exc:
        errors = refusal_of_schema(exc)
    except ServiceError as exc:
        errors = refusal_of_service(exc)
        if refused:
            errors.message = f"{refused} {exc.message}"
    else:
        flash(done, "success")
        return then()
    return render(errors), errors.status


def back_to(endpoint: str, **values: Any) -> Callable[[], Response]:
    return lambda: redirect(url_for(endpoint, **values))
