"""Each scorer alone: values in 0..1, in the order its rule says."""

from __future__ import annotations

import dataclasses
import random

from headnode.placement import scorers as sc
from headnode.placement.affinity import parse_rules
from headnode.placement.state import MachineRef
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

RNG = random.Random(7)


def test_unreserved_ram_prefers_the_emptiest() -> None:
    fleet = [server("a", ram_mb=10000, ram_used_mb=8500),  # 0 left
             server("b", ram_mb=10000, ram_used_mb=4250),  # 4250 left
             server("c", ram_mb=10000)]  # 8500 left
    assert sc.score_unreserved_ram(fleet, REQ, POLICY, context(), RNG) == [0.0, 0.5, 1.0]


def test_unreserved_disk_counts_images() -> None:
    fleet = [server("a", disk_mb=100_000, images_mb=47_000), server("b", disk_mb=100_000)]
    assert sc.score_unreserved_disk(fleet, REQ, POLICY, context(), RNG) == [0.5, 1.0]


def test_owner_spread_prefers_servers_without_the_owners_machines() -> None:
    machines = (MachineRef("a", "m1"), MachineRef("a", "m2"), MachineRef("b", "m3"))
    fleet = [server("a"), server("b"), server("c")]
    scores = sc.score_owner_spread(fleet, REQ, POLICY, context(REQ, machines), RNG)
    assert scores == [0.0, 0.5, 1.0]
    assert sc.score_owner_spread(fleet, REQ, POLICY, context(), RNG) == [1.0, 1.0, 1.0]


def test_soft_affinity_scores_the_share_of_rules_met() -> None:
    machines = (MachineRef("a", "db1"), MachineRef("b", "web1"))
    request = dataclasses.replace(REQ, affinity=parse_rules(["instance==~db1",
                                                             "instance!=~web*"]))
    fleet = [server("a"), server("b"), server("c")]
    scores = sc.score_soft_affinity(fleet, request, POLICY, context(request, machines), RNG)
    assert scores == [1.0, 0.0, 0.5]
    assert sc.score_soft_affinity(fleet, REQ, POLICY, context(), RNG) == [0.0, 0.0, 0.0]


def test_uniform_random_is_in_range_and_seeded() -> None:
    fleet = [server(str(i)) for i in range(50)]
    first = sc.score_uniform_random(fleet, REQ, POLICY, context(), random.Random(1))
    again = sc.score_uniform_random(fleet, REQ, POLICY, context(), random.Random(1))
    assert first == again and all(0 <= v < 1 for v in first) and len(set(first)) == 50


def test_default_weights_are_dapis() -> None:
    weights = {s.name: s.weight for s in sc.DEFAULT_SCORERS}
    assert weights["unreserved-ram"] == 2.0 and weights["unreserved-disk"] == 1.0
    assert weights["uniform-random"] == 0.5
    assert weights["soft-affinity"] > sum(w for n, w in weights.items() if n != "soft-affinity")
