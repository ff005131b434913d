"""The affinity rule parser and matcher (CloudAPI's syntax)."""

from __future__ import annotations

import pytest

from headnode.placement.affinity import AffinityError, parse_rule, parse_rules
from headnode.placement.state import MachineRef


@pytest.mark.parametrize(("text", "key", "near", "soft", "value", "value_type"), [
    ("instance==web1", "instance", True, False, "web1", "exact"),
    ("instance!=web1", "instance", False, False, "web1", "exact"),
    ("container==web1", "container", True, False, "web1", "exact"),
    ("role==database", "role", True, False, "database", "exact"),
    ("instance==~web1", "instance", True, True, "web1", "exact"),
    ("instance!=~web1", "instance", False, True, "web1", "exact"),
    ("instance!=web*", "instance", False, False, "web*", "glob"),
    ("instance==/^db/", "instance", True, False, "/^db/", "re"),
    (" role != database ", "role", False, False, "database", "exact"),
    ("instance==a==b", "instance", True, False, "a==b", "exact"),
])
def test_parse(text: str, key: str, near: bool, soft: bool, value: str,
               value_type: str) -> None:
    rule = parse_rule(text)
    assert (rule.key, rule.near, rule.soft, rule.value, rule.value_type) == (
        key, near, soft, value, value_type)


@pytest.mark.parametrize(("text", "says"), [
    ("", "non-empty"),
    ("instance", "no operator"),
    ("instance=web1", "no operator"),
    ("==web1", "key"),
    ("bad key==x", "key"),
    ("instance==", "no value"),
    ("instance==/(/", "bad regular expression"),
    ("instance==" + "x" * 600, "longer than"),
])
def test_invalid_rules_say_why(text: str, says: str) -> None:
    with pytest.raises(AffinityError, match=says):
        parse_rule(text)


def test_matching_instances_by_alias_or_uuid_and_tags() -> None:
    db = MachineRef("s1", "db1", "0b0e-uuid", {"role": "database", "primary": True})
    assert parse_rule("instance==db1").matches(db)
    assert parse_rule("instance==0b0e-uuid").matches(db)
    assert parse_rule("instance==db*").matches(db) and not parse_rule("instance==web*").matches(db)
    assert parse_rule("instance==/^d.1$/").matches(db)
    assert parse_rule("role==database").matches(db) and not parse_rule("role==web").matches(db)
    assert parse_rule("primary==true").matches(db)  # tag booleans as CloudAPI writes them
    assert not parse_rule("zone==a").matches(db)  # no such tag


def test_servers_with_matches() -> None:
    machines = [MachineRef("s1", "web1"), MachineRef("s2", "web2"), MachineRef("s3", "db1")]
    assert parse_rule("instance==web*").servers_with_matches(machines) == {"s1", "s2"}
    assert parse_rules(None) == () and len(parse_rules(["a==b", "c!=d"])) == 2
