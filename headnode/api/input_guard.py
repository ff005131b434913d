"""What every request must be before any view reads it (both APIs): a path and query string
without NUL, and a body, if any, that is a JSON document of bounded depth whose strings the
database can store.

Each of these once reached a view and became a 500: a body of 100,000 ``[`` overflowed the
parser's recursion (``RecursionError``), a NUL byte (``/alice/networks/%00``) or an unpaired
surrogate (``"\\ud800"``) is text PostgreSQL refuses. Refused here with a 400 naming where.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, jsonify, request

from headnode.api.files import is_file_upload

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: deeper than any body either API takes (an image manifest's requirements: 3 or 4)
MAX_JSON_DEPTH = 32
#: the web console's paths (headnode.console.PREFIX): their bodies are HTML forms
CONSOLE_PREFIX = "/console/"
#: what PostgreSQL's text cannot hold: NUL, and UTF-16 halves that are no character
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def bad_request(message: str) -> tuple[Response, int]:
    return jsonify({"code": "BadRequest", "message": message}), 400


def _text_problem(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"


def _url_problem() -> str | None:
    problem = _text_problem(request.path)
    if problem:
        return f"the path holds {problem}"
    for name, value in request.args.items(multi=True):
        problem = _text_problem(name) or _text_problem(value)
        if problem:
            return f"the query parameter {name!r} holds {problem}"
    return None


def _json_problem(document: Any) -> str | None:
    """Too deep, or a key or string the store cannot keep: said with where (``a.b.0``)."""
    stack: list[tuple[Any, str, int]] = [(document, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return f"{where or 'the body'} holds {problem}"
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            return f"the body is nested deeper than {MAX_JSON_DEPTH} levels (at {where})"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            inner = f"{where}.{key}" if where else str(key)
            problem = _text_problem(key) if isinstance(key, str) else None
            if problem:
                return f"the key {inner} holds {problem}"
            stack.append((item, inner, depth + 1))
    return None


def _body_problem() -> tuple[Response, int] | None:
    # An image file is streamed to disk by its view, never read here.
    if request.method not in BODY_METHODS or is_file_upload():
        return None
    if request.path.startswith(CONSOLE_PREFIX):
        return _form_problem()  # the console's pages post HTML forms, not JSON
    if not request.get_data(cache=True):
        return None
    if not request.is_json:
        return bad_request("the body must be JSON (Content-Type: application/json)")
    try:
        document = request.get_json(silent=True)
    except RecursionError:
        return bad_request(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
    if document is None:
        return bad_request("the body is not valid JSON")
    problem = _json_problem(document)
    return bad_request(problem) if problem else None


def _form_problem() -> tuple[Response, int] | None:
    for key, value in request.form.items(multi=True):
        problem = _text_problem(key) or _text_problem(value)
        if problem:
            return bad_request(f"the form field {key[:64]!r} holds {problem}")
    return None


def refuse_hostile_input() -> tuple[Response, int] | None:
    """A 400 for a request no view should see, else None."""
    problem = _url_problem()
    if problem:
        return bad_request(problem)
    return _body_problem()
