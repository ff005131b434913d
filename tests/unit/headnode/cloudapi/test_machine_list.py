"""ListMachines through CloudAPI: every filter is applied before paging and counting, so a
page is full and ``x-resource-count`` counts every machine that matches."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from headnode.store.models import Machine
from tests.unit.headnode.cloudapi.conftest import World, finish


@pytest.fixture
def fleet(machine_of: Any, call: Any, sdc: Any, world: World) -> list[str]:
    """alice: a, c, e of 1024 MiB with role=web, b and d of 4096 MiB; bob: one."""
    made = []
    for name in ("a", "b", "c", "d", "e"):
        tags = {"tag.role": "web"} if name in "ace" else {"tag.role": "db", "tag.n": 3}
        made.append(machine_of(world.alice, name, **tags)["id"])
    machine_of(world.bob, "bobs")
    with sdc.transaction() as session:
        session.execute(update(Machine).where(Machine.uuid.in_([made[1], made[3]]))
                        .values(ram_mb=4096))
    return made


def listed(call: Any, world: World, query: str) -> tuple[list[str], str]:
    answer = call(world.alice, "get", f"/my/machines{query}")
    assert answer.status_code == 200, answer.get_json()
    return [m["name"] for m in answer.get_json()], answer.headers["x-resource-count"]


def test_memory_filter_pages_are_full_and_counted(call: Any, world: World,
                                                  fleet: list[str]) -> None:
    assert listed(call, world, "?memory=1024") == (["a", "c", "e"], "3")
    assert listed(call, world, "?memory=1024&limit=2") == (["a", "c"], "3")
    assert listed(call, world, "?memory=1024&limit=2&offset=2") == (["e"], "3")
    assert listed(call, world, "?memory=4096&limit=1&offset=1") == (["d"], "2")
    assert listed(call, world, "?memory=1024&offset=3") == ([], "3")
    head = call(world.alice, "head", "/my/machines?memory=4096")
    assert (head.status_code, head.headers["x-resource-count"], head.data) == (200, "2", b"")


def test_tag_filters_page_and_count(call: Any, world: World, fleet: list[str]) -> None:
    assert listed(call, world, "?tag.role=web&limit=2") == (["a", "c"], "3")
    assert listed(call, world, "?tag.role=web&limit=2&offset=2") == (["e"], "3")
    assert listed(call, world, "?tag.role=db&tag.n=3") == (["b", "d"], "2")
    assert listed(call, world, "?tag.role=db&memory=1024") == ([], "0")
    assert listed(call, world, "?tags=*&memory=1") == (["a", "b", "c", "d", "e"], "5")


def test_filters_matching_nothing(call: Any, world: World, fleet: list[str]) -> None:
    for query in ("?memory=1", "?name=zz", "?tag.role=cache", "?package=nope",
                  "?docker=true", "?type=virtualmachine", "?brand=lx", "?state=stopped",
                  "?image=00000000-0000-0000-0000-000000000000"):
        assert listed(call, world, query + "&limit=1&offset=1") == ([], "0"), query


def test_type_brand_state_and_tombstone(call: Any, sdc: Any, world: World,
                                        fleet: list[str]) -> None:
    assert listed(call, world, "?type=smartmachine&limit=1")[1] == "5"
    assert listed(call, world, "?brand=joyent&docker=false")[1] == "5"
    finish(sdc, fleet[0], state="stopped")
    assert listed(call, world, "?state=stopped") == (["a"], "1")
    assert listed(call, world, "?state=running&limit=1") == (["b"], "4")
    assert call(world.alice, "delete", f"/my/machines/{fleet[1]}").status_code == 204
    finish(sdc, fleet[1], state="destroyed")
    assert listed(call, world, "") == (["a", "c", "d", "e"], "4")
    assert listed(call, world, "?state=deleted") == (["b"], "1")
    assert listed(call, world, "?tombstone=true") == (["a", "b", "c", "d", "e"], "5")
    assert listed(call, world, "?tombstone=0")[1] == "4"


@pytest.mark.parametrize("query", ["?memory=x", "?memory=-1", "?type=container",
                                   "?tombstone=maybe", "?tags=web", "?docker=perhaps"])
def test_bad_filters_are_409_naming_the_field(call: Any, world: World, query: str) -> None:
    answer = call(world.alice, "get", f"/my/machines{query}")
    assert answer.status_code == 409
    body = answer.get_json()
    assert body["code"] == "InvalidArgument"
    assert query[1:].split("=")[0] in body["message"]
