"""fit.py's rules at their edges: an exact fit and one MiB past it, a zero-sized machine,
overprovision ratios other than 1, a capped machine's CPU in the guard's condition.

These pin what mutation testing (bench/mutation.py) found unpinned: each assertion fails
if one operator or constant of the rule it names is changed.
"""

from __future__ import annotations

import dataclasses

from headnode.placement import filters as f
from headnode.placement import fit
from headnode.placement.pipeline import DEFAULT_PIPELINE
from headnode.placement.state import PlacementRequest, Policy, ServerState, with_machine
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

FIXED = DEFAULT_PIPELINE.with_weights(uniform_random=0)


def fits(s: ServerState, *, capped: bool = False, cpu_cap: int = 0,
         ram_mb: int = 1024, disk_mb: int = 10240, image_mb: int = 0) -> bool:
    return bool(fit.fits(s, POLICY, fit.PYTHON, capped, ram_mb, disk_mb, cpu_cap, image_mb))


def count(s: ServerState, policy: Policy = POLICY, *, ram_mb: int = 1, disk_mb: int = 1,
          cpu_cap: int = 0, image_mb: int = 0) -> int:
    return fit.machines_that_fit(s, policy, cpu_cap > 0, ram_mb, disk_mb, cpu_cap, image_mb)


def placed_one_by_one(s: ServerState, request: PlacementRequest, policy: Policy) -> int:
    ctx = context(request)
    placed = 0
    while all(h.passes(s, request, policy, ctx) for h in f.DEFAULT_FILTERS):
        s = with_machine(s, request)
        placed += 1
    return placed


def test_the_guards_condition_asks_a_capped_machine_for_cpu_and_an_uncapped_one_not() -> None:
    one_cpu = server(cpus=1)  # 100 % x the policy's 4: 400 shares
    assert fits(one_cpu, capped=True, cpu_cap=400)
    assert not fits(one_cpu, capped=True, cpu_cap=401)
    assert fits(server(cpus=1, cpu_used=400, uncapped_count=0), capped=False)


def test_the_guards_condition_keeps_capped_and_uncapped_apart() -> None:
    assert not fits(server(uncapped_count=1), capped=True, cpu_cap=100)
    assert not fits(server(capped_count=1), capped=False)
    assert fits(server(capped_count=1), capped=True, cpu_cap=100)


def test_an_exact_fit_is_one_machine_and_one_mib_more_is_none() -> None:
    # 10000 MiB less the 15 % reservation: 8500 MiB of room
    exact = server(ram_mb=10000)
    assert count(exact, ram_mb=8500) == 1
    assert count(exact, ram_mb=8501) == 0
    assert count(server(machine_count=POLICY.max_machines + 6)) == 0  # past the limit


def test_a_zero_sized_machine_is_limited_by_the_machine_count_alone() -> None:
    assert count(server(machine_count=200), ram_mb=0, disk_mb=0) == POLICY.max_machines - 200


def test_one_mib_machines_are_counted_not_unbounded() -> None:
    many = Policy(max_machines=100_000)
    assert count(server(ram_mb=10000), many, ram_mb=1, disk_mb=1) == 8500


def test_overprovisioned_ram_and_disk_take_their_share_of_each_machine() -> None:
    # RAM at 2x: each 1000 MiB machine needs 1000 free and takes 500 of the 8500:
    # 1 + (8500 - 1000) // 500 = 16
    ram_twice = Policy(ram_overprovision=2.0)
    ram = server(ram_mb=10000)
    assert count(ram, ram_twice, ram_mb=1000) == 16
    assert placed_one_by_one(ram, PlacementRequest(ram_mb=1000, disk_mb=1), ram_twice) == 16
    # disk at 2x: 94 % of 100000 = 94000; 1 + (94000 - 10000) // 5000 = 17
    disk_twice = Policy(disk_overprovision=2.0)
    disk = server(disk_mb=100_000)
    assert count(disk, disk_twice, disk_mb=10000) == 17
    assert placed_one_by_one(disk, PlacementRequest(ram_mb=1, disk_mb=10000), disk_twice) == 17
    assert fit.unreserved_disk(server(disk_mb=100_000, disk_used_mb=10_000), disk_twice) == (
        94_000 - 5_000)


def test_the_first_machine_also_takes_the_image_from_the_disk() -> None:
    # 94000 of room; the first needs 10000 + 8000 of it, each next one 10000: 1 + 76000 // 10000
    disk = server(disk_mb=100_000)
    assert count(disk, disk_mb=10000, image_mb=8000) == 8
    request = PlacementRequest(ram_mb=1, disk_mb=10000, image_uuid="img", image_mb=8000)
    assert FIXED.room_for(disk, request, POLICY) == 8
    assert placed_one_by_one(disk, request, POLICY) == 8
    holding = dataclasses.replace(disk, images=frozenset({"img"}))
    assert FIXED.room_for(holding, request, POLICY) == 9


def test_room_for_a_machine_capped_at_one_percent_counts_its_cpu() -> None:
    # one CPU without overprovisioning: 100 shares, so 100 machines of 1 %; RAM, disk and
    # the machine count would allow more
    policy = Policy(cpu_overprovision=1.0)
    request = dataclasses.replace(REQ, ram_mb=64, disk_mb=1000, cpu_cap=1)
    assert FIXED.room_for(server(cpus=1), request, policy) == 100
    assert placed_one_by_one(server(cpus=1), request, policy) == 100
