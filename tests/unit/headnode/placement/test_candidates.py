"""The candidate limit: a decision over a fleet larger than the limit visits servers in a
random order and scores only the first ``candidates`` that pass every filter; a refusal,
the hard filters and a fleet no larger than the limit stay exact."""

from __future__ import annotations

import dataclasses
import random

from headnode.placement.affinity import parse_rules
from headnode.placement.pipeline import Pipeline, _visit_order
from headnode.placement.state import MachineRef, ServerState, Snapshot
from tests.unit.headnode.placement.conftest import POLICY, REQ, server

EXACT = Pipeline()
FULL = {"ram_used_mb": 60000}  # of 65536: 1 GiB no longer fits (15 % kept for the system)


def name(i: int) -> str:
    return f"s{i:05d}"


def crowded_fleet(n: int, fitting: tuple[int, ...]) -> list[ServerState]:
    """``n`` servers of which only those numbered in ``fitting`` take REQ; the others are
    refused for a mix of reasons, so the funnel has several steps to compare."""
    refusals = [FULL, {"status": "unknown"}, {"setup": False}, {"maintenance": True},
                {"machine_count": 224}, {"disk_used_mb": 990_000}]
    return [server(name(i)) if i in fitting else server(name(i), **refusals[i % 6])
            for i in range(n)]


def test_of_5000_servers_where_3_fit_one_of_them_is_chosen() -> None:
    fits = (17, 2500, 4999)
    fleet = crowded_fleet(5000, fits)
    decision = Pipeline(candidates=100).decide(Snapshot(fleet), REQ, POLICY,
                                               random.Random(1))
    assert decision.server is not None and decision.server.uuid in {name(i) for i in fits}
    assert {s.uuid for s in decision.candidates} == {name(i) for i in fits}
    # fewer than the limit fit: every server was visited
    assert decision.considered == 5000 and not decision.sampled


def test_a_refusal_names_the_same_reasons_as_a_full_scan() -> None:
    fleet = crowded_fleet(5000, ())
    exact = EXACT.decide(Snapshot(fleet), REQ, POLICY, random.Random(2))
    for limit in (1, 100):
        sampled = Pipeline(candidates=limit).decide(Snapshot(fleet), REQ, POLICY,
                                                    random.Random(3))
        assert sampled.server is None and not sampled.sampled
        assert sampled.steps == exact.steps
        assert sampled.reasons == exact.reasons
        assert sampled.explain(REQ) == exact.explain(REQ)
    assert exact.reasons["lack RAM"] == len(range(0, 5000, 6)) and exact.considered == 5000


def varied_fleet(n: int, rng: random.Random) -> list[ServerState]:
    return [server(name(i), ram_used_mb=rng.randrange(0, 64000, 512),
                   disk_used_mb=rng.randrange(0, 1_000_000, 10_000),
                   machine_count=rng.randrange(0, 30), uncapped_count=0,
                   status=rng.choice(["running"] * 8 + ["unknown"]),
                   traits=rng.choice([{}] * 6 + [{"ssd": True}]))
            for i in range(n)]


def test_a_fleet_no_larger_than_the_limit_is_decided_as_without_one() -> None:
    rng = random.Random(4)
    for _ in range(20):
        fleet = varied_fleet(rng.randrange(1, 80), rng)
        mine = tuple(MachineRef(rng.choice(fleet).uuid, f"web{i}") for i in range(3))
        request = dataclasses.replace(REQ, ram_mb=rng.choice([512, 4096, 16384]),
                                      affinity=parse_rules(["instance!=~web*"]))
        seed = rng.random()
        today = EXACT.decide(Snapshot(fleet, mine), request, POLICY, random.Random(seed))
        for limit in (len(fleet), len(fleet) + 1, 1000):
            limited = Pipeline(candidates=limit).decide(Snapshot(fleet, mine), request,
                                                        POLICY, random.Random(seed))
            assert limited == today


def test_a_sampled_decision_scores_only_the_candidates_and_counts_what_it_visited() -> None:
    fleet = [server(name(i)) for i in range(5000)]
    decision = Pipeline(candidates=100).decide(Snapshot(fleet), REQ, POLICY,
                                               random.Random(5))
    assert decision.sampled and decision.considered == 100
    assert decision.steps[-1].remaining == 100 and len(decision.next_best) == 3
    assert "a random sample of the fleet" in decision.explain(REQ)
    # servers refused on the way are counted by the first filter that refuses them
    mixed = crowded_fleet(5000, tuple(range(0, 5000, 2)))
    decision = Pipeline(candidates=50).decide(Snapshot(mixed), REQ, POLICY,
                                              random.Random(6))
    removed = sum(st.removed for st in decision.steps)
    assert decision.considered == 50 + removed and decision.steps[-1].remaining == 50


def test_with_a_limit_of_one_hard_affinity_still_holds() -> None:
    fleet = [server(name(i)) for i in range(500)]
    # the owner's web machines on every other server, its one database on s00301
    mine = (*(MachineRef(name(i), f"web{i}") for i in range(0, 500, 2)),
            MachineRef(name(301), "db1"))
    apart = dataclasses.replace(REQ, affinity=parse_rules(["instance!=web*"]))
    near = dataclasses.replace(REQ, affinity=parse_rules(["instance==db1"]))
    one = Pipeline(candidates=1)
    for seed in range(100):
        chosen = one.decide(Snapshot(fleet, mine), apart, POLICY, random.Random(seed)).server
        assert chosen is not None and int(chosen.uuid[1:]) % 2 == 1
        beside = one.decide(Snapshot(fleet, mine), near, POLICY, random.Random(seed)).server
        assert beside is not None and beside.uuid == name(301)


def test_a_hard_near_rule_visits_only_the_servers_it_allows_unless_it_refuses() -> None:
    fleet = crowded_fleet(5000, tuple(range(0, 5000, 2)))  # half of them fit
    mine = (MachineRef(name(10), "db1"), MachineRef(name(12), "db2"),
            MachineRef(name(13), "db3"))  # s00013 is not running
    near = dataclasses.replace(REQ, affinity=parse_rules(["instance==/^db/"]))
    decision = Pipeline(candidates=100).decide(Snapshot(fleet, mine), near, POLICY,
                                               random.Random(8))
    assert {s.uuid for s in decision.candidates} == {name(10), name(12)}
    assert decision.considered == 3 and decision.sampled
    exact = EXACT.decide(Snapshot(fleet, mine), near, POLICY, random.Random(8))
    assert {s.uuid for s in exact.candidates} == {name(10), name(12)}
    # none of them fits: the whole fleet is visited, and the funnel is a full scan's
    alone = (MachineRef(name(13), "db3"),)
    refused = Pipeline(candidates=100).decide(Snapshot(fleet, alone), near, POLICY,
                                              random.Random(9))
    full = EXACT.decide(Snapshot(fleet, alone), near, POLICY, random.Random(9))
    assert refused.server is None and refused.steps == full.steps
    assert refused.considered == 5000 and refused.reasons["break an affinity rule"] > 0
    # with the affinity filter off, the rule restricts nothing
    off = Pipeline(tuple(f for f in EXACT.filters if f.name != "affinity"), candidates=100)
    loose = off.decide(Snapshot(fleet, mine), near, POLICY, random.Random(10))
    assert loose.considered >= 100 and len(loose.next_best) == 3


def test_a_soft_rule_finds_the_servers_it_prefers_in_a_sample() -> None:
    fleet = [server(name(i)) for i in range(5000)]
    mine = (MachineRef(name(4321), "db1"),)
    near = dataclasses.replace(REQ, affinity=parse_rules(["instance==~db1"]))
    for seed in range(20):
        decision = Pipeline(candidates=20).decide(Snapshot(fleet, mine), near, POLICY,
                                                  random.Random(seed))
        assert decision.server is not None and decision.server.uuid == name(4321)
        assert decision.considered == 20


def test_the_sample_differs_from_one_decision_to_the_next() -> None:
    fleet = [server(name(i)) for i in range(1000)]
    # no random scorer: on an equal fleet, only the sample decides which server wins
    plain = Pipeline(candidates=10).with_weights(uniform_random=0)
    winners = [plain.decide(Snapshot(fleet), REQ, POLICY, random.Random(seed)).server
               for seed in range(40)]
    assert len({w.uuid for w in winners if w is not None}) >= 30
    # the same decision without a limit always takes the smallest uuid
    exact = plain.visiting_all()
    assert [exact.decide(Snapshot(fleet), REQ, POLICY, random.Random(seed)).server
            for seed in range(5)] == [fleet[0]] * 5


def test_the_random_order_visits_every_server_once() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 4, 97, 100, 1024, 5000):
        fleet = [server(name(i)) for i in range(n)]
        for firsts in ([], fleet[::37]):
            order = [s.uuid for s in _visit_order(fleet, firsts, rng)]
            assert sorted(order) == [s.uuid for s in fleet]
            assert order[:len(firsts)] == [s.uuid for s in firsts]
