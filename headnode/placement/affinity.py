"""Affinity rules in CloudAPI's syntax: ``<key><operator><value>``.

- key: ``instance`` (or its Docker synonym ``container``) matches a machine's alias or
  uuid; any other key is a tag name (``role==database``).
- operator: ``==`` (must be on a server with a match), ``!=`` (must not), and the soft
  ``==~`` / ``!=~``, which only prefer (a scorer) and never refuse.
- value: exact text, a glob with ``*`` / ``?`` (``web*``), or a regular expression between
  slashes (``/^db/``).

A hard ``==`` rule that matches none of the owner's machines cannot be met anywhere, so it
removes every server, as a strict locality hint does in DAPI.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

INSTANCE_KEYS = frozenset({"instance", "container"})
# Longest first, so "==~" is not read as "==" followed by a value starting with "~".
OPERATORS = ("==~", "!=~", "==", "!=")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]+$")
MAX_RULE_LENGTH = 512


class Placed(Protocol):
    """What a rule reads of a machine (state.MachineRef has it): declared here, so that
    rules need nothing of the snapshot's module, which imports them."""

    @property
    def server_uuid(self) -> str: ...

    @property
    def alias(self) -> str: ...

    @property
    def uuid(self) -> str: ...

    @property
    def tags(self) -> Mapping[str, Any]: ...


class AffinityError(ValueError):
    """A rule that cannot be parsed; the message says what is wrong with it."""


@dataclass(frozen=True)
class AffinityRule:
    text: str
    key: str
    near: bool  # == (near a match) or != (away from every match)
    soft: bool
    value: str
    value_type: str  # exact | glob | re
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def on_instance(self) -> bool:
        return self.key in INSTANCE_KEYS

    def matches_value(self, candidate: str) -> bool:
        if self.value_type == "exact":
            return candidate == self.value
        if self.value_type == "glob":
            return fnmatch.fnmatchcase(candidate, self.value)
        assert self._regex is not None
        return self._regex.search(candidate) is not None

    def matches(self, machine: Placed) -> bool:
        if self.on_instance:
            return any(self.matches_value(c) for c in (machine.alias, machine.uuid) if c)
        if self.key not in machine.tags:
            return False
        tag = machine.tags[self.key]
        text = str(tag).lower() if isinstance(tag, bool) else str(tag)
        return self.matches_value(text)

    def servers_with_matches(self, machines: Iterable[Placed]) -> frozenset[str]:
        return frozenset(m.server_uuid for m in machines if self.matches(m))


def parse_rule(text: str) -> AffinityRule:
    if not isinstance(text, str) or not text.strip():
        raise AffinityError("a rule must be a non-empty string such as instance!=web1")
    rule = text.strip()
    if len(rule) > MAX_RULE_LENGTH:
        raise AffinityError(f"rule longer than {MAX_RULE_LENGTH} characters")
    found = [(rule.find(op), op) for op in OPERATORS if op in rule]
    if not found:
        raise AffinityError(f"{rule!r} has no operator (==, !=, ==~ or !=~)")
    at, operator = min(found, key=lambda pair: (pair[0], -len(pair[1])))
    key, value = rule[:at].strip(), rule[at + len(operator):].strip()
    if not key or not KEY_PATTERN.match(key):
        raise AffinityError(f"{rule!r}: the key must be 'instance' or a tag name")
    if not value:
        raise AffinityError(f"{rule!r}: no value after {operator}")
    value_type, regex = "exact", None
    if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
        value_type = "re"
        try:
            regex = re.compile(value[1:-1])
        except re.error as exc:
            raise AffinityError(f"{rule!r}: bad regular expression ({exc})") from exc
    elif "*" in value or "?" in value:
        value_type = "glob"
    return AffinityRule(text=rule, key=key, near=operator.startswith("=="),
                        soft=operator.endswith("~"), value=value, value_type=value_type,
                        _regex=regex)


def parse_rules(texts: Iterable[str] | None) -> tuple[AffinityRule, ...]:
    return tuple(parse_rule(t) for t in texts or ())
