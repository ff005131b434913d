"""Semver ranges as a CloudAPI client sends them in ``Accept-Version`` (restify reads them
with npm's semver): ``~7.2``, ``^8``, ``7.x``, ``*``, ``>=7 <9``, ``7.0 - 8``, ``9.0.0``, and
alternatives joined by ``||``. ``newest_satisfying`` picks the newest version in range."""

from __future__ import annotations

import re
from collections.abc import Iterable

Version = tuple[int, int, int]


class InvalidRange(ValueError):
    """The text is not a semver range."""


# A partial version: each missing or wildcard part is None ("7", "7.x", "7.2.*", "*").
_PARTIAL = re.compile(
    r"^v?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_COMPARATOR = re.compile(r"^(?P<op><=|>=|<|>|=|~>|~|\^)?(?P<version>\S+)$")
# A bound: (operator, version); a set of bounds matches when every bound does.
Bound = tuple[str, Version]
#: matches nothing (npm's "<0.0.0-0")
_NOTHING: list[Bound] = [("<", (0, 0, 0))]


def _partial(text: str) -> list[int | None]:
    match = _PARTIAL.match(text)
    if match is None:
        raise InvalidRange(text)
    parts: list[int | None] = []
    for name in ("major", "minor", "patch"):
        value = match[name]
        parts.append(int(value) if value is not None and value.isdigit() else None)
    # once a part is a wildcard, every later one is too ("7.x.3" means "7.x")
    for i in range(1, 3):
        if parts[i - 1] is None:
            parts[i] = None
    return parts


def _floor(parts: list[int | None]) -> Version:
    major, minor, patch = ((p or 0) for p in parts)
    return major, minor, patch


def _next_up(parts: list[int | None]) -> Version:
    """The first version above every version the partial one names ("7.2" -> 7.3.0)."""
    major, minor, _ = parts
    assert major is not None
    if minor is None:
        return major + 1, 0, 0
    return major, minor + 1, 0


def _exact_or_range(parts: list[int | None]) -> list[Bound]:
    if parts[0] is None:
        return []
    if parts[2] is not None:
        return [("=", _floor(parts))]
    return [(">=", _floor(parts)), ("<", _next_up(parts))]


def _tilde(parts: list[int | None]) -> list[Bound]:
    if parts[0] is None:
        return []
    return [(">=", _floor(parts)), ("<", _next_up(parts))]


def _caret(parts: list[int | None]) -> list[Bound]:
    if parts[0] is None:
        return []
    major, minor, patch = parts
    assert major is not None
    if major > 0 or minor is None:
        upper = (major + 1, 0, 0)
    elif minor > 0 or patch is None:
        upper = (0, minor + 1, 0)
    else:
        upper = (0, 0, patch + 1)
    return [(">=", _floor(parts)), ("<", upper)]


def _relation(op: str, parts: list[int | None]) -> list[Bound]:
    if parts[0] is None:  # ">=*" is anything, ">*" and "<*" nothing
        return [] if op in (">=", "<=") else list(_NOTHING)
    if parts[2] is not None:
        return [(op, _floor(parts))]
    if op == ">":
        return [(">=", _next_up(parts))]
    if op == "<=":
        return [("<", _next_up(parts))]
    return [(op, _floor(parts))]


def _comparator(text: str) -> list[Bound]:
    match = _COMPARATOR.match(text)
    if match is None:
        raise InvalidRange(text)
    op, parts = match["op"] or "", _partial(match["version"])
    if op in ("", "="):
        return _exact_or_range(parts)
    if op in ("~", "~>"):
        return _tilde(parts)
    if op == "^":
        return _caret(parts)
    return _relation(op, parts)


def _hyphen(low: str, high: str) -> list[Bound]:
    lower, upper = _partial(low), _partial(high)
    bounds: list[Bound] = [] if lower[0] is None else [(">=", _floor(lower))]
    if upper[0] is None:
        return bounds
    if upper[2] is not None:
        return [*bounds, ("<=", _floor(upper))]
    return [*bounds, ("<", _next_up(upper))]


def _comparator_set(text: str) -> list[Bound]:
    # npm's semver lets an operator stand apart from its version (">= 7").
    text = re.sub(r"(<=|>=|<|>|=|~>|~|\^)\s+", r"\1", text.strip())
    tokens = text.split()
    if len(tokens) == 3 and tokens[1] == "-":
        return _hyphen(tokens[0], tokens[2])
    bounds: list[Bound] = []
    for token in tokens:
        bounds.extend(_comparator(token))
    return bounds


def parse(text: str) -> list[list[Bound]]:
    """The alternatives of a range, each a list of bounds; raises InvalidRange."""
    if len(text) > 256:
        raise InvalidRange(text[:32])
    return [_comparator_set(alternative) for alternative in text.split("||")]


_CHECKS = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "=": lambda a, b: a == b,
}


def satisfies(version: str, alternatives: list[list[Bound]]) -> bool:
    have = version_tuple(version)
    return any(all(_CHECKS[op](have, bound) for op, bound in bounds)
               for bounds in alternatives)


def version_tuple(version: str) -> Version:
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


def newest_satisfying(versions: Iterable[str], text: str) -> str | None:
    """The newest of ``versions`` in the range ``text`` (None if none is); raises
    InvalidRange when ``text`` is not a range."""
    alternatives = parse(text)
    matching = [v for v in versions if satisfies(v, alternatives)]
    return max(matching, key=version_tuple) if matching else None
