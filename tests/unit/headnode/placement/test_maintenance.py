"""A server in maintenance takes no new machine, and a refusal says so with its own reason;
taken out of maintenance, it takes machines again."""

from __future__ import annotations

from headnode.placement import filters as f
from headnode.placement import fit
from headnode.placement.pipeline import DEFAULT_PIPELINE
from headnode.placement.state import Snapshot
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

CTX = context()


def test_the_filter_passes_only_a_server_in_service() -> None:
    assert f.not_in_maintenance(server(maintenance=False), REQ, POLICY, CTX)
    assert not f.not_in_maintenance(server(maintenance=True), REQ, POLICY, CTX)


def test_the_guards_rule_agrees_with_the_filter() -> None:
    for maintenance in (False, True):
        s = server(maintenance=maintenance)
        assert fit.fits(s, POLICY, fit.PYTHON, False, REQ.ram_mb, REQ.disk_mb, 0, 0) \
            is f.not_in_maintenance(s, REQ, POLICY, CTX)


def test_a_fleet_in_maintenance_is_refused_with_its_own_reason() -> None:
    fleet = Snapshot([server("s1", maintenance=True), server("s2", maintenance=True)])
    decision = DEFAULT_PIPELINE.decide(fleet, REQ, POLICY)
    assert decision.server is None
    assert decision.reasons == {f.MAINTENANCE: 2}
    assert decision.explain(REQ).endswith(": 2 are in maintenance")
    step = next(st for st in decision.steps if st.name == "maintenance")
    assert (step.removed, step.remaining) == (2, 0)


def test_the_server_in_service_is_chosen() -> None:
    fleet = Snapshot([server("s1", maintenance=True, ram_mb=262_144),
                      server("s2", maintenance=False)])
    decision = DEFAULT_PIPELINE.decide(fleet, REQ, POLICY)
    assert decision.server is not None and decision.server.uuid == "s2"
    assert decision.reasons == {f.MAINTENANCE: 1}


def test_reserved_and_in_maintenance_counts_once_under_the_earlier_filter() -> None:
    fleet = Snapshot([server("s1", maintenance=True, reserved=True),
                      server("s2", maintenance=True)])
    decision = DEFAULT_PIPELINE.decide(fleet, REQ, POLICY)
    assert decision.reasons == {f.RESERVED: 1, f.MAINTENANCE: 1}


def test_out_of_maintenance_again_it_takes_machines() -> None:
    s = server("s1", maintenance=True)
    assert DEFAULT_PIPELINE.decide(Snapshot([s]), REQ, POLICY).server is None
    s.maintenance = False
    chosen = DEFAULT_PIPELINE.decide(Snapshot([s]), REQ, POLICY).server
    assert chosen is not None and chosen.uuid == "s1"
