"""The capacity planner's forms: a query string read into the body the operator API takes,
checked by the API's own request schema (no second copy of its rules), and every error keyed
by the wire path its input is named after (``place.0.count``), so the page names the field.

The forms are GET forms: a what-if or an explain writes nothing, and its answer is a link
that can be shared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError

from headnode.services.errors import InvalidArgument, ServiceError
from schemas.placement import AllocateRequest, SimulateRequest

#: place rows on the what-if form (the API takes up to 100; the form offers a few)
PLACE_ROWS = 3
#: an added server's defaults on an empty form
TEMPLATE_DEFAULTS = {"count": "0", "ram_mb": "262144", "cpus": "48", "disk_mb": "4000000"}
#: the inputs of the explain form
EXPLAIN_FIELDS = ("package", "image", "owner", "networks", "affinity")
#: an error about the whole form rather than one input
WHOLE_FORM = "form"
WHOLE = re.compile(r"[+-]?\d{1,15}")


@dataclass
class FormOutcome:
    """What a submitted form gave: the body for the service, or the errors by field."""

    body: dict[str, Any] | None
    errors: dict[str, str] = field(default_factory=dict)


def field_label(path: str) -> str:
    """The words an operator reads for a wire path, e.g. "Machines, row 2"."""
    parts = path.split(".")
    row = f", row {int(parts[1]) + 1}" if len(parts) > 2 and parts[1].isdigit() else ""
    labels = {"add_servers": "Servers to add", "count": "How many",
              "ram_mb": "RAM of each (MiB)", "cpus": "CPUs of each",
              "disk_mb": "Disk of each (MiB)", "place": "Machines to place",
              "package": "Package", "image": "Image", "owner": "Owner",
              "networks": "Networks", "affinity": "Affinity rules",
              "days": "Days of history",
              WHOLE_FORM: "The form"}
    if parts[0] == "add_servers" and len(parts) > 2:
        return f"Added servers: {labels.get(parts[2], parts[2])}"
    if parts[0] == "place" and len(parts) > 2:
        name = "Machines" if parts[2] == "count" else labels.get(parts[2], parts[2])
        return f"{name}{row}"
    return labels.get(parts[0], path)


def flatten(messages: Any, prefix: str = "") -> dict[str, str]:
    """marshmallow's nested messages ({"place": {0: {"count": [...]}}}) by dotted path."""
    if isinstance(messages, Mapping):
        found: dict[str, str] = {}
        for key, inner in messages.items():
            name = WHOLE_FORM if key == "_schema" else str(key)
            found.update(flatten(inner, f"{prefix}.{name}" if prefix else name))
        return found
    if isinstance(messages, list | tuple):
        texts = [m for m in messages if isinstance(m, str)]
        if texts:
            return {prefix or WHOLE_FORM: " ".join(texts)}
        found = {}
        for inner in messages:
            found.update(flatten(inner, prefix))
        return found
    return {prefix or WHOLE_FORM: str(messages)}


def service_errors(exc: ServiceError) -> dict[str, str]:
    """A service's refusal by field: InvalidArgument names its field, the others the form."""
    if isinstance(exc, InvalidArgument):
        return {exc.field: exc.message.removeprefix(f"{exc.field}: ")}
    return {WHOLE_FORM: exc.message}


def _whole(value: str) -> int | str:
    """A whole number as a number; anything else as typed, for the schema to refuse."""
    value = value.strip()
    return int(value) if WHOLE.fullmatch(value) else value


def load(schema: Schema, body: dict[str, Any]) -> FormOutcome:
    try:
        return FormOutcome(schema.load(body))
    except ValidationError as exc:
        return FormOutcome(None, flatten(exc.messages))


# -- what if -----------------------------------------------------------------------------

def whatif_values(args: Mapping[str, str]) -> dict[str, str]:
    """The what-if form's inputs as typed (with the defaults where nothing was)."""
    values = {f"add_servers.0.{k}": args.get(f"add_servers.0.{k}", default)
              for k, default in TEMPLATE_DEFAULTS.items()}
    for i in range(PLACE_ROWS):
        values[f"place.{i}.package"] = args.get(f"place.{i}.package", "")
        values[f"place.{i}.count"] = args.get(f"place.{i}.count", "" if i else "1")
    return values


def whatif_submitted(args: Mapping[str, str]) -> bool:
    return "place.0.package" in args


def whatif_body(values: Mapping[str, str]) -> FormOutcome:
    """The ``POST /ops/capacity/simulate`` body of the form: servers added only when their
    count is not 0 (the form's "none"), and the place rows that name a package (or a
    count); the first row always, so an empty form is refused naming it."""
    body: dict[str, Any] = {}
    if values["add_servers.0.count"].strip() not in ("", "0"):
        body["add_servers"] = [{k: _whole(values[f"add_servers.0.{k}"])
                                for k in TEMPLATE_DEFAULTS}]
    rows = []
    for i in range(PLACE_ROWS):
        package, count = values[f"place.{i}.package"], values[f"place.{i}.count"]
        if i == 0 or package.strip() or count.strip():
            rows.append((i, {"package": package.strip(), "count": _whole(count)}))
    body["place"] = [row for _, row in rows]
    outcome = load(SimulateRequest(), body)
    # the schema numbers the rows it was given; the form's rows may have gaps
    renumber = {str(n): str(i) for n, (i, _) in enumerate(rows)}
    outcome.errors = {_renumbered(path, renumber): message
                      for path, message in outcome.errors.items()}
    return outcome


def _renumbered(path: str, renumber: Mapping[str, str]) -> str:
    parts = path.split(".")
    if parts[0] == "place" and len(parts) > 1 and parts[1] in renumber:
        parts[1] = renumber[parts[1]]
    return ".".join(parts)


def renumber_service_field(errors: dict[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """A service error's place row, as the form numbers it (rows left blank are not sent)."""
    sent = [i for i in range(PLACE_ROWS)
            if i == 0 or values[f"place.{i}.package"].strip() or values[f"place.{i}.count"].strip()]
    return {_renumbered(p, {str(n): str(i) for n, i in enumerate(sent)}): m
            for p, m in errors.items()}


# -- explain -----------------------------------------------------------------------------

def explain_values(args: Mapping[str, str]) -> dict[str, str]:
    return {name: args.get(name, "") for name in EXPLAIN_FIELDS}


def explain_submitted(args: Mapping[str, str]) -> bool:
    return "package" in args


def explain_body(values: Mapping[str, str]) -> FormOutcome:
    """The ``POST /ops/allocate`` body of the form: networks comma-separated, affinity
    rules one a line; empty optional inputs left out."""
    body: dict[str, Any] = {"package": values["package"].strip(),
                            "image": values["image"].strip()}
    if values["owner"].strip():
        body["owner"] = values["owner"].strip()
    networks = [n.strip() for n in values["networks"].split(",") if n.strip()]
    if networks:
        body["networks"] = networks
    rules = [r.strip() for r in values["affinity"].splitlines() if r.strip()]
    if rules:
        body["affinity"] = rules
    outcome = load(AllocateRequest(), body)
    # list items' errors belong to their input
    outcome.errors = {p.split(".")[0]: m for p, m in outcome.errors.items()}
    return outcome
