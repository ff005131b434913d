"""The filters, affinity rules, node reports and server updates at their edges: one field
set without the other, the smallest values that change an answer, a rule exactly as long
as allowed. Each pins what mutation testing (bench/mutation.py) found unpinned."""

from __future__ import annotations

import dataclasses

import pytest

from headnode.placement import filters as f
from headnode.placement.affinity import MAX_RULE_LENGTH, AffinityError, parse_rule
from headnode.placement.runs import Runs, reported
from headnode.placement.state import (
    Context,
    MachineRef,
    PlacementRequest,
    merged_traits,
    with_machine,
)
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

CTX = context()

# -- affinity rules -------------------------------------------------------------------------


def test_a_value_is_a_regular_expression_only_between_two_slashes() -> None:
    assert parse_rule("instance==//").value_type == "re"  # the empty expression
    assert parse_rule("instance==web/").value_type == "exact"
    assert parse_rule("instance==/web").value_type == "exact"
    assert parse_rule("instance==/").value_type == "exact"


def test_a_question_mark_alone_makes_a_glob() -> None:
    rule = parse_rule("instance==web?")
    assert rule.value_type == "glob"
    assert rule.matches(MachineRef("s1", "web1")) and not rule.matches(MachineRef("s1", "web"))


def test_a_rule_keeps_its_text_without_the_spaces_around_it() -> None:
    assert parse_rule("  role!=db  ").text == "role!=db"


def test_a_rule_as_long_as_allowed_is_accepted_and_one_more_character_is_not() -> None:
    prefix = "instance=="
    longest = prefix + "x" * (MAX_RULE_LENGTH - len(prefix))
    assert parse_rule(longest).value == "x" * (MAX_RULE_LENGTH - len(prefix))
    with pytest.raises(AffinityError, match=f"longer than {MAX_RULE_LENGTH} characters"):
        parse_rule(longest + "x")


def test_an_empty_rule_is_refused_with_an_example_of_one() -> None:
    with pytest.raises(AffinityError) as refused:
        parse_rule("   ")
    assert str(refused.value) == "a rule must be a non-empty string such as instance!=web1"


def test_a_tags_text_is_compared_as_written_and_only_booleans_are_lowered() -> None:
    machine = MachineRef("s1", "m1", tags={"role": "DB", "primary": False})
    assert parse_rule("role==DB").matches(machine)
    assert not parse_rule("role==db").matches(machine)
    assert parse_rule("primary==false").matches(machine)


# -- filters --------------------------------------------------------------------------------


def test_an_image_os_without_a_type_or_a_type_without_an_os_is_still_checked() -> None:
    linux = server(backend="linux")  # an older node: its backend's table decides
    assert not f.backend(linux, dataclasses.replace(REQ, image_os="smartos"), POLICY, CTX)
    assert not f.backend(linux, dataclasses.replace(REQ, image_type="zvol"), POLICY, CTX)


def test_a_nodes_reported_formats_outrank_its_backends_table() -> None:
    # a Linux node that says it receives ZFS streams takes one; the table would refuse it
    zfs_linux = server(backend="linux", runs=reported({"format": {"zfs": ["zone-dataset"]}}))
    stream = dataclasses.replace(REQ, image_os="other", image_type="zone-dataset",
                                 image_format="zfs")
    assert f.image_format(zfs_linux, stream, POLICY, CTX)
    # a report without formats leaves them to the table
    silent = server(backend="linux", runs=reported({"os": ["linux", "other"]}))
    assert not f.image_format(silent, stream, POLICY, CTX)
    tarball = dataclasses.replace(stream, image_format="tar")
    assert f.image_format(silent, tarball, POLICY, CTX)


def test_an_older_smartos_node_takes_docker_layers_as_tarballs() -> None:
    old = server(backend="smartos")
    docker = dataclasses.replace(REQ, image_os="linux", image_type="docker",
                                 image_format="tar")
    assert f.image_format(old, docker, POLICY, CTX)
    zone = dataclasses.replace(docker, image_type="zone-dataset")
    assert not f.image_format(old, zone, POLICY, CTX)


def test_an_uncapped_machine_passes_min_cpu_even_on_an_overcommitted_server() -> None:
    assert f.min_cpu(server(cpus=1, cpu_used=1000), REQ, POLICY, CTX)


def test_a_one_percent_cap_is_capped_and_keeps_away_from_uncapped_machines() -> None:
    one = dataclasses.replace(REQ, cpu_cap=1)
    assert not f.capness(server(uncapped_count=1), one, POLICY, CTX)
    assert f.capness(server(capped_count=1), one, POLICY, CTX)


def test_a_one_percent_cap_needs_one_share() -> None:
    one = dataclasses.replace(REQ, cpu_cap=1)
    # 1 CPU x 100 % x 4: 400 shares
    assert f.min_cpu(server(cpus=1, cpu_used=399), one, POLICY, CTX)
    assert not f.min_cpu(server(cpus=1, cpu_used=400), one, POLICY, CTX)


# -- node reports ---------------------------------------------------------------------------


def test_a_report_names_its_oses_types_and_formats() -> None:
    assert reported({"os": ["linux"]}) == Runs(frozenset({"linux"}), None, None)
    assert reported({"os": ["linux"], "type": ["docker"],
                     "format": {"tar": ["docker"]}}) == Runs(
        frozenset({"linux"}), frozenset({"docker"}), frozenset({("tar", "docker")}))


# -- the server once it holds one more machine ----------------------------------------------


def test_a_machine_counts_as_capped_from_one_percent() -> None:
    one = with_machine(server(), dataclasses.replace(REQ, cpu_cap=1))
    assert (one.capped_count, one.uncapped_count, one.cpu_used) == (1, 0, 1)
    free = with_machine(server(), REQ)
    assert (free.capped_count, free.uncapped_count, free.cpu_used) == (0, 1, 0)
    again = with_machine(free, REQ)
    assert (again.capped_count, again.uncapped_count, again.machine_count) == (0, 2, 2)


def test_a_machine_with_a_new_image_adds_the_image_once() -> None:
    request = PlacementRequest(ram_mb=1, disk_mb=1, image_uuid="img", image_mb=500)
    first = with_machine(server(images=frozenset({"old"}), images_mb=100), request)
    assert first.images == frozenset({"old", "img"}) and first.images_mb == 600
    second = with_machine(first, request)
    assert second.images == first.images and second.images_mb == 600


def test_a_machine_without_an_image_adds_none_to_the_server() -> None:
    placed = with_machine(server(), PlacementRequest(ram_mb=1, disk_mb=1))
    assert placed.images == frozenset() and placed.images_mb == 0
    held = server(images=frozenset({"img"}), images_mb=500)
    again = with_machine(held, PlacementRequest(ram_mb=1, disk_mb=1, image_uuid="img",
                                                image_mb=500))
    assert again.images == frozenset({"img"}) and again.images_mb == 500


def test_traits_of_the_package_and_the_image_merge_and_the_images_win() -> None:
    assert merged_traits({"ssd": True}, None) == {"ssd": True}
    assert merged_traits(None, {"gpu": 1}) == {"gpu": 1}
    assert merged_traits({"ssd": True, "gpu": 0}, {"gpu": 1}) == {"ssd": True, "gpu": 1}
    assert merged_traits(None, None) == {}


def test_the_owners_machines_are_counted_once_each_on_top_of_given_counts() -> None:
    machines = (MachineRef("a", "m1"), MachineRef("a", "m2"), MachineRef("b", "m3"))
    assert Context.build(REQ, machines).owner_counts == {"a": 2, "b": 1}
    assert Context.build(REQ, machines[2:], {"b": 4, "c": 1}).owner_counts == {"b": 5, "c": 1}
