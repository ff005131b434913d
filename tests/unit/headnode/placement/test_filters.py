"""Each hard filter alone, against hand-built servers."""

from __future__ import annotations

import dataclasses

import pytest

from headnode.placement import filters as f
from headnode.placement.affinity import parse_rules
from headnode.placement.state import MachineRef, PlacementRequest, Policy
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

CTX = context()


def test_excluded() -> None:
    assert f.excluded(server("s1"), REQ, POLICY, CTX)
    assert not f.excluded(server("s1"), REQ.excluding("s1"), POLICY, CTX)


def test_setup() -> None:
    assert f.setup(server(setup=True), REQ, POLICY, CTX)
    assert not f.setup(server(setup=False), REQ, POLICY, CTX)


def test_running() -> None:
    assert f.running(server(status="running"), REQ, POLICY, CTX)
    assert not f.running(server(status="unknown"), REQ, POLICY, CTX)


def test_reserved() -> None:
    assert f.not_reserved(server(reserved=False), REQ, POLICY, CTX)
    assert not f.not_reserved(server(reserved=True), REQ, POLICY, CTX)


def test_headnode_unless_allowed() -> None:
    assert f.not_headnode(server(headnode=False), REQ, POLICY, CTX)
    assert not f.not_headnode(server(headnode=True), REQ, POLICY, CTX)
    assert f.not_headnode(server(headnode=True), REQ, Policy(allow_headnode=True), CTX)


@pytest.mark.parametrize(("server_traits", "wanted", "passes"), [
    ({}, {}, True),
    ({"ssd": True}, {}, False),  # a server with traits waits for machines that ask
    ({}, {"ssd": True}, False),
    ({"ssd": True}, {"ssd": True}, True),
    ({"ssd": False}, {"ssd": True}, False),
    ({"ssd": True, "users": "john"}, {"ssd": True}, True),
    ({"users": ["john", "jane"]}, {"users": "jane"}, True),
    ({"users": "john"}, {"users": ["jane", "john"]}, True),
    ({"users": ["jack"]}, {"users": "john"}, False),
])
def test_traits_both_ways(server_traits: dict[str, object], wanted: dict[str, object],
                          passes: bool) -> None:
    request = dataclasses.replace(REQ, traits=wanted)
    assert f.traits(server(traits=server_traits), request, POLICY, CTX) is passes


@pytest.mark.parametrize(("backend", "os", "type_", "passes"), [
    ("sim", "smartos", "zone-dataset", True),
    ("sim", "windows", "zvol", True),
    ("smartos", "smartos", "zone-dataset", True),
    ("smartos", "linux", "lx-dataset", True),
    ("smartos", "windows", "zvol", True),
    ("linux", "linux", "lx-dataset", True),
    ("linux", "linux", "docker", True),
    ("linux", "smartos", "zone-dataset", False),
    ("linux", "linux", "zvol", False),
    ("linux", "illumos", "zone-dataset", False),
    ("bsd-jails", "linux", "lx-dataset", False),  # an unknown backend runs nothing
    ("linux", "", "", True),  # no image in the question
])
def test_backend_runs_the_image(backend: str, os: str, type_: str, passes: bool) -> None:
    request = dataclasses.replace(REQ, image_os=os, image_type=type_)
    assert f.backend(server(backend=backend), request, POLICY, CTX) is passes


def test_machine_count() -> None:
    p = Policy(max_machines=3)
    assert f.machine_count(server(machine_count=2), REQ, p, CTX)
    assert not f.machine_count(server(machine_count=3), REQ, p, CTX)
    assert not f.machine_count(server(machine_count=224), REQ, POLICY, CTX)


def test_capness_keeps_capped_and_uncapped_apart() -> None:
    capped = dataclasses.replace(REQ, cpu_cap=100)
    uncapped = dataclasses.replace(REQ, cpu_cap=0)
    empty = server()
    assert f.capness(empty, capped, POLICY, CTX) and f.capness(empty, uncapped, POLICY, CTX)
    with_capped = server(capped_count=1)
    assert f.capness(with_capped, capped, POLICY, CTX)
    assert not f.capness(with_capped, uncapped, POLICY, CTX)
    with_uncapped = server(uncapped_count=1)
    assert not f.capness(with_uncapped, capped, POLICY, CTX)
    assert f.capness(with_uncapped, uncapped, POLICY, CTX)


def test_min_ram_keeps_the_reservation_and_overprovisions() -> None:
    # 10000 MiB * 0.85 = 8500 usable
    assert f.min_ram(server(ram_mb=10000, ram_used_mb=7476), REQ, POLICY, CTX)
    assert not f.min_ram(server(ram_mb=10000, ram_used_mb=7477), REQ, POLICY, CTX)
    assert not f.min_ram(server(ram_mb=1200), REQ, POLICY, CTX)
    # with RAM overprovisioned 2x, 14952 MiB of machines count as 7476
    doubled = Policy(ram_overprovision=2.0)
    assert f.min_ram(server(ram_mb=10000, ram_used_mb=14952), REQ, doubled, CTX)


def test_min_cpu_overprovisions_four_times() -> None:
    capped = dataclasses.replace(REQ, cpu_cap=100)
    # 2 CPUs * 100 % * 4.0 = 800 % of shares
    assert f.min_cpu(server(cpus=2, cpu_used=700), capped, POLICY, CTX)
    assert not f.min_cpu(server(cpus=2, cpu_used=701), capped, POLICY, CTX)
    # an uncapped machine claims no share
    assert f.min_cpu(server(cpus=2, cpu_used=800), REQ, POLICY, CTX)


def test_min_disk_keeps_the_margin_images_and_quotas() -> None:
    # 100000 MiB * 0.94 = 94000 usable, minus images, minus quotas
    ok = server(disk_mb=100_000, images_mb=1000, disk_used_mb=94_000 - 1000 - 10240)
    assert f.min_disk(ok, REQ, POLICY, CTX)
    full = server(disk_mb=100_000, images_mb=1001, disk_used_mb=94_000 - 1000 - 10240)
    assert not f.min_disk(full, REQ, POLICY, CTX)


def test_min_disk_counts_an_image_the_server_must_still_import() -> None:
    # 10000 MiB * 0.94 = 9400 usable: a 9000 MiB quota fits, not with a new 500 MiB image
    with_image = dataclasses.replace(REQ, disk_mb=9000, image_uuid="img", image_mb=500)
    assert f.min_disk(server(disk_mb=10_000), dataclasses.replace(with_image, image_mb=400),
                      POLICY, CTX)
    assert not f.min_disk(server(disk_mb=10_000), with_image, POLICY, CTX)
    # a server that holds the image already needs room for the quota only
    assert f.min_disk(server(disk_mb=10_000, images=frozenset({"img"})), with_image, POLICY,
                      CTX)


def test_affinity_hard_rules() -> None:
    machines = (MachineRef("a", "db1", tags={"role": "database"}),
                MachineRef("b", "web1"), MachineRef("b", "web2"))

    def passes(rules: list[str], uuid: str) -> bool:
        request = dataclasses.replace(REQ, affinity=parse_rules(rules))
        return f.affinity(server(uuid), request, POLICY, context(request, machines))

    assert passes(["instance==db1"], "a") and not passes(["instance==db1"], "b")
    assert not passes(["instance!=web*"], "b") and passes(["instance!=web*"], "c")
    assert passes(["role==database"], "a") and not passes(["role==database"], "c")
    assert not passes(["instance==/^db/", "instance!=db1"], "a")  # contradictory
    assert not passes(["instance==nothing"], "a")  # a near rule with no match fits nowhere
    assert passes(["instance==~db1"], "c")  # soft rules never filter


def test_every_filter_has_its_own_reason() -> None:
    reasons = [hard.reason for hard in f.DEFAULT_FILTERS]
    names = [hard.name for hard in f.DEFAULT_FILTERS]
    assert len(set(reasons)) == len(reasons) and len(set(names)) == len(names)


def test_request_defaults_fit_an_empty_server() -> None:
    request = PlacementRequest(ram_mb=512, disk_mb=512)
    assert all(h.passes(server(), request, POLICY, context(request))
               for h in f.DEFAULT_FILTERS)
