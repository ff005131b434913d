from __future__ import annotations

from typing import Any

from tests.unit.headnode.api.conftest import make_server

SERVER_FIELDS = {
    "uuid", "hostname", "status", "setup", "reserved", "maintenance", "headnode", "backend",
    "traits",
    "ram_mb", "cpus", "disk_mb", "ram_inflight_mb", "ram_committed_mb", "disk_inflight_mb",
    "disk_committed_mb", "machine_count", "pool_used_mb", "last_heartbeat", "created_at",
    "updated_at",
    "ssh_host", "ssh_port", "ssh_user", "agent_prefix", "agent_version",
}


def test_list_and_filter(api: Any, sdc: Any) -> None:
    make_server(sdc, hostname="cn2", setup=False)
    make_server(sdc, hostname="cn1", status="unknown")
    answer = api("get", "/ops/servers")
    assert answer.status_code == 200
    rows = answer.get_json()
    assert [r["hostname"] for r in rows] == ["cn1", "cn2"]
    assert set(rows[0]) == SERVER_FIELDS
    assert "sysinfo" not in rows[0]

    assert [r["hostname"] for r in api("get", "/ops/servers?setup=false").get_json()] == ["cn2"]
    assert [r["hostname"] for r in api("get", "/ops/servers?status=unknown").get_json()] == [
        "cn1"]


def test_bad_filter_is_named(api: Any) -> None:
    answer = api("get", "/ops/servers?status=exploded")
    assert answer.status_code == 422
    assert answer.get_json()["errors"].keys() == {"status"}


def test_get_one(api: Any, sdc: Any) -> None:
    server = make_server(sdc)
    body = api("get", f"/ops/servers/{server.uuid}").get_json()
    assert body["uuid"] == server.uuid
    assert body["created_at"].endswith("+00:00")


def test_unknown_server_is_404(api: Any) -> None:
    answer = api("get", "/ops/servers/00000000-0000-0000-0000-000000000000")
    assert answer.status_code == 404
    assert answer.get_json()["code"] == "ResourceNotFound"


def test_set_up_reserve_and_label(api: Any, sdc: Any) -> None:
    server = make_server(sdc, setup=False)
    answer = api("put", f"/ops/servers/{server.uuid}",
                 json={"setup": True, "reserved": True, "traits": {"ssd": True}})
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["setup"], body["reserved"], body["traits"]) == (True, True, {"ssd": True})
    stored = api("get", f"/ops/servers/{server.uuid}").get_json()
    assert (stored["setup"], stored["reserved"], stored["traits"]) == (True, True, {"ssd": True})


def test_update_leaves_other_flags_alone(api: Any, sdc: Any) -> None:
    server = make_server(sdc, setup=True, reserved=False, traits={"a": 1})
    body = api("put", f"/ops/servers/{server.uuid}", json={"reserved": True}).get_json()
    assert (body["setup"], body["reserved"], body["traits"]) == (True, True, {"a": 1})


def test_update_refuses_node_owned_and_ill_typed_fields(api: Any, sdc: Any) -> None:
    server = make_server(sdc)
    answer = api("put", f"/ops/servers/{server.uuid}", json={"ram_mb": 1, "setup": "maybe"})
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["code"] == "ValidationFailed"
    assert set(body["errors"]) == {"ram_mb", "setup"}
    assert "ram_mb" in body["message"] and "setup" in body["message"]
    assert api("get", f"/ops/servers/{server.uuid}").get_json()["ram_mb"] == 65536


def test_update_unknown_server_is_404(api: Any) -> None:
    answer = api("put", "/ops/servers/nope", json={"setup": True})
    assert answer.status_code == 404
