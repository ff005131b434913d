"""The placement and capacity endpoints: dry-run allocate, capacity, simulate, history."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import planning
from headnode.store.models import Job, Machine, Reservation
from tests.unit.headnode.api.conftest import (
    count,
    make_account,
    make_image,
    make_package,
    make_server,
)


@pytest.fixture
def fleet(sdc: Any) -> dict[str, Any]:
    return {
        "server": make_server(sdc, hostname="cn1"),
        "package": make_package(sdc, name="small", memory=1024, disk=10240),
        "image": make_image(sdc, name="base-64"),
        "owner": make_account(sdc, login="alice"),
    }


def written(sdc: Any) -> tuple[int, int, int]:
    return count(sdc, Machine), count(sdc, Job), count(sdc, Reservation)


def test_allocate_dry_run_returns_the_funnel(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    make_server(sdc, hostname="new", setup=False)
    answer = api("post", "/ops/allocate", json={"package": "small", "image": "base-64",
                                                "owner": "alice", "dry_run": True})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["server_uuid"] == fleet["server"].uuid and body["hostname"] == "cn1"
    assert body["considered"] == 2 and body["dry_run"] is True
    setup_step = next(st for st in body["steps"] if st["name"] == "setup")
    assert setup_step == {"name": "setup", "reason": "are not set up", "removed": 1,
                          "remaining": 1}
    assert body["message"].startswith("placed on cn1")
    assert written(sdc) == (0, 0, 0)


def test_allocate_explains_a_refusal(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    make_package(sdc, name="huge", memory=64 * 1024, disk=10240)
    body = api("post", "/ops/allocate", json={"package": "huge", "image": "base-64"}).get_json()
    assert body["server_uuid"] is None and body["reasons"] == {"lack RAM": 1}
    assert body["message"] == "no server can fit 64 GiB of RAM and 10 GiB of disk: 1 lack RAM"


@pytest.mark.parametrize(("body", "field"), [
    ({"package": "small", "image": "base-64", "dry_run": False}, "dry_run"),
    ({"package": "small", "image": "base-64", "affinity": "instance==a"}, "affinity"),
    ({"package": "small", "image": "base-64", "affinity": ["instance"]}, "affinity"),
    ({"package": "nope", "image": "base-64"}, "package"),
    ({"image": "base-64"}, "package"),
    ({"package": "small", "image": "base-64", "extra": 1}, "extra"),
])
def test_allocate_bad_input_names_the_field(api: Any, sdc: Any, fleet: dict[str, Any],
                                            body: dict[str, Any], field: str) -> None:
    answer = api("post", "/ops/allocate", json=body)
    assert answer.status_code == 422, answer.get_json()
    assert field in answer.get_json()["errors"]


def test_create_with_affinity_and_its_refusal(api: Any, sdc: Any,
                                              fleet: dict[str, Any]) -> None:
    first = api("post", "/ops/machines", json={"owner": "alice", "package": "small",
                                               "image": "base-64", "alias": "web1"})
    assert first.status_code == 202
    second = api("post", "/ops/machines", json={
        "owner": "alice", "package": "small", "image": "base-64", "alias": "web2",
        "affinity": ["instance!=web1"]})
    assert second.status_code == 409
    error = second.get_json()
    assert error["code"] == "InsufficientCapacity"
    assert error["reasons"] == {"break an affinity rule": 1}
    assert "1 break an affinity rule" in error["message"]
    bad = api("post", "/ops/machines", json={"owner": "alice", "package": "small",
                                             "image": "base-64", "affinity": ["web1"]})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"affinity"}
    assert written(sdc) == (1, 1, 1)


def test_capacity_report(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    body = api("get", "/ops/capacity").get_json()
    [server] = body["servers"]
    assert server["hostname"] == "cn1" and server["placeable"]
    assert server["ram_mb"] == {"total": 65536, "provisioned": 0, "reserved": 0,
                                "free": 55705}
    assert body["fleet"]["ram_mb"]["free"] == 55705
    # 55705 // 1024 = 54 by RAM; disk 940000 // 10240 = 91
    assert body["packages"] == [{"uuid": fleet["package"].uuid, "name": "small",
                                 "memory": 1024, "disk": 10240, "cpu_cap": 0, "fits": 54}]


def test_simulate(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    answer = api("post", "/ops/capacity/simulate", json={
        "add_servers": [{"ram_mb": 65536, "cpus": 16, "disk_mb": 1_000_000, "count": 1}],
        "place": [{"package": "small", "count": 100}]})
    assert answer.status_code == 200, answer.get_json()
    [placed] = answer.get_json()["placements"]
    assert placed["placed"] == 100 and placed["servers"] == {"cn1": 50, "new-1-1": 50}
    assert written(sdc) == (0, 0, 0)


@pytest.mark.parametrize(("body", "field"), [
    ({}, "place"),
    ({"place": []}, "place"),
    ({"place": [{"package": "small", "count": 0}]}, "place.0.count"),
    ({"place": [{"package": "small", "count": 1}], "add_servers": [{"ram_mb": 1}]},
     "add_servers.0.cpus"),
    ({"place": [{"package": "small", "count": 1}], "remove_servers": ["x"]},
     "remove_servers.0"),
    ({"place": [{"package": "nope", "count": 1}]}, "place.0.package"),
])
def test_simulate_bad_input_names_the_field(api: Any, sdc: Any, fleet: dict[str, Any],
                                            body: dict[str, Any], field: str) -> None:
    answer = api("post", "/ops/capacity/simulate", json=body)
    assert answer.status_code == 422, answer.get_json()
    assert field in answer.get_json()["errors"]


def test_history(api: Any, sdc: Any, fleet: dict[str, Any]) -> None:
    planning.record_history(sdc)
    points = api("get", "/ops/capacity/history").get_json()
    assert len(points) == 1 and points[0]["servers"] == 1
    assert points[0]["ram_mb"]["total"] == 65536
    later = api("get", "/ops/capacity/history", query_string={"since": "2999-01-01T00:00:00"})
    assert later.status_code == 200 and later.get_json() == []
    bad = api("get", "/ops/capacity/history", query_string={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.get_json()["errors"]
