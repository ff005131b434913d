"""Policy as data: the pipeline an operator's settings build (filters, weights, spread or
pack), what a server runs as its node reports it, and a decision's next best."""

from __future__ import annotations

import dataclasses
import random

import pytest

from headnode.config import OPTIONAL_FILTERS, HeadnodeSettings
from headnode.placement import filters as f
from headnode.placement import scorers as sc
from headnode.placement.pipeline import DEFAULT_PIPELINE, NEXT_BEST, Pipeline, configured
from headnode.placement.runs import BACKEND_RUNS, Runs, reported
from headnode.placement.state import PlacementRequest, Snapshot, with_machine
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

DEFAULT_FILTER_NAMES = OPTIONAL_FILTERS
#: the default weights without the random scorer, so that each decision is reproducible
NO_RANDOM = {"unreserved_ram": 2.0, "unreserved_disk": 1.0, "owner_spread": 1.0,
             "soft_affinity": 5.0, "uniform_random": 0.0}


def pipeline(strategy: str,
             filter_names: tuple[str, ...] = DEFAULT_FILTER_NAMES) -> Pipeline:
    return configured(filter_names, NO_RANDOM, strategy)


def fleet_with_free_ram(*free_mb: int) -> list:
    """Servers of 64 GiB with the given unreserved RAM (and a disk to match), named s0.."""
    usable = int(65536 * (1 - POLICY.reservation_ratio))
    return [server(f"s{i}", ram_used_mb=usable - free, disk_used_mb=(usable - free) * 10)
            for i, free in enumerate(free_mb)]


# -- spread or pack ----------------------------------------------------------------------------


def test_the_default_settings_build_the_default_pipeline() -> None:
    defaults = HeadnodeSettings()
    built = configured(defaults.placement_filter_names, defaults.placement_weights,
                       defaults.placement_strategy)
    assert built == DEFAULT_PIPELINE


def test_every_optional_filter_setting_names_a_filter() -> None:
    assert set(OPTIONAL_FILTERS) <= {x.name for x in DEFAULT_PIPELINE.filters}


def test_spread_takes_the_emptiest_server_and_pack_the_fullest_that_fits() -> None:
    # s0 cannot take 1 GiB; s1 is the fullest that can; s3 the emptiest
    servers = fleet_with_free_ram(512, 2048, 20000, 50000)
    snapshot = Snapshot(servers)
    spread = pipeline(sc.SPREAD).decide(snapshot, REQ, POLICY)
    pack = pipeline(sc.PACK).decide(snapshot, REQ, POLICY)
    assert spread.server is not None and spread.server.uuid == "s3"
    assert pack.server is not None and pack.server.uuid == "s1"
    # the same funnel: a strategy only ranks what the filters kept
    assert spread.steps == pack.steps and spread.reasons == {f.NOT_ENOUGH_RAM: 1}


def test_pack_scores_mirror_spread_scores() -> None:
    servers = fleet_with_free_ram(2048, 20000, 50000)
    ctx = context()
    rng = random.Random(1)
    spread = sc.score_unreserved_ram(servers, REQ, POLICY, ctx, rng)
    pack = sc.score_least_unreserved_ram(servers, REQ, POLICY, ctx, rng)
    assert [round(a + b, 9) for a, b in zip(spread, pack, strict=True)] == [1.0] * 3
    assert pack.index(max(pack)) == 0 and spread.index(max(spread)) == 2


def test_owner_spread_and_soft_affinity_hold_under_pack() -> None:
    """Packing turns only the room scorers: soft affinity still outweighs them."""
    from headnode.placement.affinity import parse_rules
    from headnode.placement.state import MachineRef

    servers = fleet_with_free_ram(2048, 50000)
    request = dataclasses.replace(REQ, affinity=parse_rules(["instance==~db1"]))
    snapshot = Snapshot(servers, owner_machines=(MachineRef("s1", "db1"),))
    decision = pipeline(sc.PACK).decide(snapshot, request, POLICY)
    assert decision.server is not None and decision.server.uuid == "s1"


def place_one_by_one(strategy: str, servers: list, sizes: list[int]) -> list:
    chosen = pipeline(strategy)
    for ram in sizes:
        request = PlacementRequest(ram_mb=ram, disk_mb=ram * 4)
        decision = chosen.decide(Snapshot(servers), request, POLICY)
        assert decision.server is not None
        servers = [with_machine(s, request) if s is decision.server else s for s in servers]
    return servers


def test_pack_keeps_whole_servers_free_for_large_machines_and_spread_does_not() -> None:
    """Why an operator would pack: 40 small machines on 10 servers, then how many 48 GiB
    machines still fit."""
    sizes = [random.Random(i).choice([1024, 2048, 4096]) for i in range(40)]
    large = PlacementRequest(ram_mb=48 * 1024, disk_mb=10240)
    room = {}
    for strategy in sc.STRATEGIES:
        servers = place_one_by_one(strategy, fleet_with_free_ram(*[55705] * 10), sizes)
        room[strategy] = sum(DEFAULT_PIPELINE.room_for(s, large, POLICY) for s in servers)
    assert room[sc.PACK] >= 7 and room[sc.SPREAD] == 0


def races_lost_in_a_burst(strategy: str, creates: int) -> tuple[int, int]:
    """Creates decided on one snapshot (a burst), reserved one after another, each on its
    winner, else its next best: (reservations refused, creates placed)."""
    request = PlacementRequest(ram_mb=4096, disk_mb=10240)
    servers = fleet_with_free_ram(4096, 4096, 6000, 30000, 40000, 50000)
    snapshot = Snapshot(servers)
    room = {s.uuid: s for s in servers}
    chosen = configured(DEFAULT_FILTER_NAMES, {}, strategy)  # with the random scorer
    lost = placed = 0
    for seed in range(creates):
        decision = chosen.decide(snapshot, request, POLICY, random.Random(seed))
        for candidate in decision.candidates:
            now = room[candidate.uuid]
            if not f.min_ram(now, request, POLICY, context(request)):
                lost += 1
                continue
            room[candidate.uuid] = with_machine(now, request)
            placed += 1
            break
    return lost, placed


def test_spread_loses_fewer_races_in_a_burst_and_next_best_saves_packs() -> None:
    """Why spread is the default: a burst of creates decided on one snapshot picks the
    servers with the most room under spread, where several fit; under pack the servers
    closest to full, where the first takes the last room and the others lose their race.
    The decision's next best is what places them without reading the fleet again."""
    assert races_lost_in_a_burst(sc.SPREAD, 8) == (0, 8)
    lost, placed = races_lost_in_a_burst(sc.PACK, 8)
    assert placed == 8 and lost >= 8


def test_a_strategy_is_spread_or_pack() -> None:
    with pytest.raises(ValueError, match="no strategy 'stack'"):
        configured(DEFAULT_FILTER_NAMES, {}, "stack")


# -- weights -------------------------------------------------------------------------------------


def test_weights_are_set_by_name() -> None:
    built = configured(DEFAULT_FILTER_NAMES, {"unreserved_ram": 0.0, "owner_spread": 3.0},
                       sc.SPREAD)
    weights = {s.name: s.weight for s in built.scorers}
    assert weights["unreserved-ram"] == 0.0 and weights["owner-spread"] == 3.0
    assert weights["unreserved-disk"] == 1.0  # the others keep DAPI's
    with pytest.raises(ValueError, match="no scorer named ram"):
        configured(DEFAULT_FILTER_NAMES, {"ram": 1.0}, sc.SPREAD)


# -- filters -------------------------------------------------------------------------------------


def test_optional_filters_can_be_left_out() -> None:
    headnode = server("hn", headnode=True)
    with_traits = server("gpu", traits={"gpu": True})
    for filter_names in ((), ("backend",)):
        built = pipeline(sc.SPREAD, filter_names)
        assert {x.name for x in built.filters} >= {"min-ram", "setup", "excluded"}
        kept, _ = built.passing([headnode, with_traits], REQ, POLICY, context())
        assert [s.uuid for s in kept] == ["hn", "gpu"]
    kept, _ = DEFAULT_PIPELINE.passing([headnode, with_traits], REQ, POLICY, context())
    assert kept == []


def test_filters_run_in_the_pipelines_order_whatever_the_order_of_the_names() -> None:
    built = pipeline(sc.SPREAD, ("affinity", "traits", "headnode", "backend", "traits"))
    assert built.filters == DEFAULT_PIPELINE.filters


def test_a_filter_that_is_not_optional_always_runs() -> None:
    """(The settings refuse its name: tests/unit/headnode/test_placement_settings.py.)"""
    built = pipeline(sc.SPREAD, ("min-ram", "gpu"))
    assert [x.name for x in built.filters] == [
        x.name for x in DEFAULT_PIPELINE.filters if x.name not in OPTIONAL_FILTERS]


# -- what a server runs ----------------------------------------------------------------------


def backend_passes(s: object, image_os: str, image_type: str) -> bool:
    request = dataclasses.replace(REQ, image_os=image_os, image_type=image_type)
    return f.backend(s, request, POLICY, context())  # type: ignore[arg-type]


def test_a_nodes_report_decides_what_it_runs() -> None:
    # a Linux node that says it runs zvols (hardware VMs) takes them; the table would not
    linux_hvm = server(backend="linux", runs=reported({"os": ["linux", "windows"],
                                                      "type": ["lx-dataset", "zvol"]}))
    assert backend_passes(linux_hvm, "windows", "zvol")
    assert not backend_passes(linux_hvm, "smartos", "zone-dataset")
    # a SmartOS node without hardware virtualization says so: no zvol there
    smartos = server(backend="smartos", runs=reported({"os": ["smartos", "linux"],
                                                       "type": ["zone-dataset"]}))
    assert backend_passes(smartos, "smartos", "zone-dataset")
    assert not backend_passes(smartos, "windows", "zvol")
    # no image in the question: every server passes
    assert backend_passes(smartos, "", "")


def test_a_node_that_does_not_say_falls_back_to_its_backends_table() -> None:
    assert reported(None) is None and reported({}) is None
    for backend, runs in BACKEND_RUNS.items():
        old = server(backend=backend)
        assert old.runs is None
        for image_os, image_type in (("linux", "lx-dataset"), ("smartos", "zone-dataset"),
                                     ("windows", "zvol")):
            assert backend_passes(old, image_os, image_type) is runs.image(image_os,
                                                                           image_type)


def test_a_list_left_out_of_a_report_means_any() -> None:
    assert reported({"type": ["docker"]}) == Runs(None, frozenset({"docker"}))
    assert backend_passes(server(backend="linux", runs=reported({"type": ["docker"]})),
                          "illumos", "docker")


# -- next best -----------------------------------------------------------------------------------


def test_a_decision_keeps_its_next_best_in_order() -> None:
    servers = fleet_with_free_ram(512, 2048, 20000, 30000, 40000, 50000)
    decision = pipeline(sc.SPREAD).decide(Snapshot(list(reversed(servers))), REQ, POLICY)
    assert [s.uuid for s in decision.candidates] == ["s5", "s4", "s3", "s2"]
    assert len(decision.next_best) == NEXT_BEST
    assert decision.to_dict(REQ)["next_best"] == ["s4", "s3", "s2"]
    packed = pipeline(sc.PACK).decide(Snapshot(servers), REQ, POLICY)
    assert [s.uuid for s in packed.candidates] == ["s1", "s2", "s3", "s4"]


def test_a_decision_with_few_servers_keeps_what_there_is() -> None:
    one = pipeline(sc.SPREAD).decide(Snapshot(fleet_with_free_ram(512, 9000)), REQ, POLICY)
    assert [s.uuid for s in one.candidates] == ["s1"] and one.next_best == []
    none = pipeline(sc.SPREAD).decide(Snapshot(fleet_with_free_ram(512)), REQ, POLICY)
    assert none.candidates == [] and none.to_dict(REQ)["next_best"] == []
