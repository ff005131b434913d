"""Placement by nic tag: the filter alone on hand-built servers, then the tags a create's
networks need, read from real rows on the real PostgreSQL (create, dry run, simulation)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from headnode.placement import filters as f
from headnode.placement.pipeline import Pipeline
from headnode.placement.state import Snapshot
from headnode.services import fleet, machines, placement, planning
from headnode.services import networks as network_svc
from headnode.services.errors import InsufficientCapacity
from headnode.store.models import Machine, Server
from tests.unit.headnode.cli.test_placement import cells, live_api
from tests.unit.headnode.cli.test_placement import sdc as run_sdc
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server
from tests.unit.headnode.services.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)

CTX = context()
__all__ = ["live_api"]  # a fixture of the CLI tests: the operator API served in a thread


def wanting(*tags: str) -> Any:
    return dataclasses.replace(REQ, nic_tags=frozenset(tags))


@pytest.mark.parametrize(("provided", "wanted", "passes"), [
    (frozenset({"admin"}), (), True),  # no networks: no tag needed
    (frozenset(), (), True),
    (frozenset({"external"}), ("external",), True),  # exactly the tags
    (frozenset({"external", "internal"}), ("external", "internal"), True),
    (frozenset({"admin", "external", "internal"}), ("external", "internal"), True),
    (frozenset({"external"}), ("external", "internal"), False),  # missing one of two
    (frozenset({"internal"}), ("external", "internal"), False),
    (frozenset(), ("external",), False),  # says it provides none
    (frozenset({"External"}), ("external",), False),  # tags are case-sensitive
    (frozenset({"external"}), ("EXTERNAL",), False),
    (None, ("external",), True),  # its sysinfo says nothing of tags (no agent registered it)
])
def test_a_server_must_provide_every_tag(provided: frozenset[str] | None,
                                         wanted: tuple[str, ...], passes: bool) -> None:
    assert f.nic_tags(server(nic_tags=provided), wanting(*wanted), POLICY, CTX) is passes


def test_the_funnel_names_the_servers_without_the_tags() -> None:
    fleet = [server("a", nic_tags=frozenset({"admin", "external"})),
             server("b", nic_tags=frozenset({"admin"})),
             server("c", nic_tags=frozenset({"admin"}), ram_mb=512)]  # lacks RAM too
    decision = Pipeline().decide(Snapshot(fleet), wanting("external"), POLICY)
    assert decision.server is not None and decision.server.uuid == "a"
    step = next(s for s in decision.steps if s.name == "nic-tags")
    assert (step.removed, step.reason) == (2, f.NIC_TAGS)
    refused = Pipeline().decide(Snapshot(fleet[1:]), wanting("external"), POLICY)
    assert refused.server is None
    assert refused.reasons == {f.NIC_TAGS: 2}  # taken out before the RAM filter sees c
    assert refused.explain(wanting("external")) == (
        "no server can fit 1 GiB of RAM and 10 GiB of disk on nic tags external: "
        "2 lack a nic tag of the networks")


def test_no_networks_skip_the_step() -> None:
    decision = Pipeline().decide(Snapshot([server("b", nic_tags=frozenset())]), REQ, POLICY)
    assert decision.server is not None
    assert next(s for s in decision.steps if s.name == "nic-tags").removed == 0


def test_the_filter_always_runs_whatever_the_settings_name() -> None:
    assert "nic-tags" in [h.name for h in f.enabled(())]


# -- the live fleet: tags from sysinfo, from the create's networks -----------------------------


def tagged_server(ctx: Any, hostname: str, tags: list[str] | None) -> Any:
    sysinfo = {} if tags is None else {"NIC Names": tags}
    return make_server(ctx, hostname=hostname, sysinfo=sysinfo)


@pytest.fixture
def tagged(ctx: Any) -> dict[str, Any]:
    """Two servers, one with tag ``internal`` as well; networks on each tag."""
    found = {
        "plain": tagged_server(ctx, "plain", ["admin", "external"]),
        "both": tagged_server(ctx, "both", ["admin", "external", "internal"]),
        "package": make_package(ctx, name="small", memory=1024, disk=10240),
        "image": make_image(ctx, name="base-64"),
        "owner": make_account(ctx, login="alice"),
    }
    for name, subnet, tag in (("ext", "10.88.0.0/24", "external"),
                              ("int", "10.99.0.0/24", "internal"),
                              ("stor", "10.77.0.0/24", "storage")):
        network_svc.create_network(ctx, {"name": name, "subnet": subnet, "nic_tag": tag})
    return found


def create(ctx: Any, **body: Any) -> dict[str, Any]:
    full = {"owner": "alice", "package": "small", "image": "base-64", **body}
    return machines.create_machine(ctx, full, {"type": "operator"})


def test_a_create_goes_where_its_networks_tags_are(ctx: Any, tagged: dict[str, Any]) -> None:
    for _ in range(3):  # spread alone would put some on "plain"
        answer = create(ctx, networks=["ext", "int"])
        assert answer["server_uuid"] == tagged["both"].uuid
    assert create(ctx, networks=["ext"])["server_uuid"] == tagged["plain"].uuid  # emptier


def test_a_create_no_server_can_carry_is_refused_and_writes_nothing(
        ctx: Any, tagged: dict[str, Any]) -> None:
    with pytest.raises(InsufficientCapacity) as refused:
        create(ctx, networks=["ext", "stor"])
    assert refused.value.reasons == {f.NIC_TAGS: 2}
    assert "on nic tags external, storage" in str(refused.value)
    with ctx.read() as session:
        assert session.query(Machine).count() == 0


def test_the_default_network_counts_too(ctx: Any, tagged: dict[str, Any]) -> None:
    internal = network_svc.get_network(ctx, "int")
    network_svc.set_default_network(ctx, tagged["owner"].uuid, internal.uuid)
    assert create(ctx)["server_uuid"] == tagged["both"].uuid


def test_explain_shows_the_step_and_the_tags(ctx: Any, tagged: dict[str, Any]) -> None:
    answer = placement.dry_run(ctx, {"package": "small", "image": "base-64",
                                     "networks": ["int"]})
    assert answer["server_uuid"] == tagged["both"].uuid
    assert answer["nic_tags"] == ["internal"]
    assert {s["name"]: s["removed"] for s in answer["steps"]}["nic-tags"] == 1
    unplaceable = placement.dry_run(ctx, {"package": "small", "image": "base-64",
                                          "networks": ["stor"]})
    assert unplaceable["server_uuid"] is None
    assert unplaceable["reasons"] == {f.NIC_TAGS: 2}


def test_a_server_no_agent_registered_is_not_filtered(ctx: Any,
                                                      tagged: dict[str, Any]) -> None:
    bare = tagged_server(ctx, "bare", None)
    answer = placement.dry_run(ctx, {"package": "small", "image": "base-64",
                                     "networks": ["stor"]})
    assert answer["server_uuid"] == bare.uuid


def test_the_simulation_places_by_tag_too(ctx: Any, tagged: dict[str, Any]) -> None:
    answer = planning.simulate(ctx, {
        "add_servers": [{"ram_mb": 65536, "cpus": 16, "disk_mb": 1_000_000, "count": 1,
                         "nic_tags": ["admin", "storage"]}],
        "place": [{"package": "small", "count": 2, "networks": ["stor"]},
                  {"package": "small", "count": 1, "networks": ["int"]}]})
    storage, internal = answer["placements"]
    assert (storage["placed"], storage["servers"]) == (2, {"new-1-1": 2})
    assert (internal["placed"], internal["servers"]) == (1, {"both": 1})
    refused = planning.simulate(ctx, {"place": [{"package": "small", "count": 1,
                                                 "networks": ["stor"]}]})
    assert refused["placements"][0]["refused"] == 1
    assert "lack a nic tag" in refused["placements"][0]["refusal"]


def test_a_rows_tags_read_alone_match_the_snapshots(ctx: Any, tagged: dict[str, Any]) -> None:
    bare = tagged_server(ctx, "bare", None)
    with ctx.read() as session:
        snapshot = {s.uuid: s.nic_tags for s in fleet.load_servers(session)}
        rows = {uuid: fleet.state_of(session.get(Server, uuid)).nic_tags for uuid in snapshot}
    assert snapshot == rows
    assert snapshot[tagged["both"].uuid] == frozenset({"admin", "external", "internal"})
    assert snapshot[bare.uuid] is None


def test_the_cli_asks_with_networks(live_api: tuple[str, Any]) -> None:
    _, app_ctx = live_api
    tagged_server(app_ctx, "plain", ["admin", "external"])
    make_package(app_ctx, name="small", memory=1024, disk=10240)
    make_image(app_ctx, name="base-64")
    network_svc.create_network(app_ctx, {"name": "stor", "subnet": "10.77.0.0/24",
                                         "nic_tag": "storage"})
    refused = run_sdc(live_api, "placement", "explain", "--package", "small", "--image",
                      "base-64", "--network", "stor")
    assert refused.exit_code == 0, refused.output
    assert "1 servers considered, nic tags storage" in refused.output
    assert cells(refused.output, "nic-tags")[1:] == ["1", "0", f.NIC_TAGS]
    unknown = run_sdc(live_api, "placement", "explain", "--package", "small", "--image",
                      "base-64", "--network", "nope")
    assert unknown.exit_code == 1 and "networks" in unknown.output
    simulated = run_sdc(live_api, "--json", "capacity", "simulate", "--add-servers", "1",
                        "--nic-tag", "storage", "--place", "small=2", "--network", "stor")
    assert simulated.exit_code == 0, simulated.output
    assert json.loads(simulated.output)["placements"][0]["servers"] == {"new-1-1": 2}
